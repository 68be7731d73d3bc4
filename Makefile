# The two commands of README.md: `make demo` and `make test`. Both create .venv/ and
# install what they need when it is missing, so they work on a fresh clone.
# `make check`: the quick tier, no services (no PostgreSQL, MariaDB, S3, Azurite or Prefect API):
# ruff, the import-layer contracts and the tests not marked `services` or `slow` (tests/conftest.py
# marks them).
# mypy is left to `make lint` (two minutes cold on two cores).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Azurite, the Azure Blob emulator the storage tests start (moto's S3 server is a dev dependency).
AZURITE := .tools/azurite/node_modules/.bin/azurite-blob

# The WAL commands' environment (`make wal-venv`): PostgreSQL runs archive_command as its own OS user,
# which cannot reach .venv's interpreter under /root, so this venv is built from the system's python3
# (any user can run it) with only what `vaultflow-wal` imports: the repository's crypto, zstd and
# BLAKE3 path, plus boto3 and azure-storage-blob for s3:// and az:// repositories.
WAL_PYTHON ?= /usr/bin/python3
WAL_VENV := .wal-venv
WAL_STAMP := $(WAL_VENV)/.installed
WAL_PACKAGES := blake3 zstandard cryptography pydantic pyfastcdc boto3 azure-storage-blob

.PHONY: demo test check lint bench clean wal-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(WAL_STAMP): pyproject.toml constraints.txt
	test -x $(WAL_VENV)/bin/python || $(WAL_PYTHON) -m venv $(WAL_VENV)
	$(WAL_VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt $(WAL_PACKAGES)
	$(WAL_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
	rm -f $(WAL_VENV)/bin/vaultflow  # the CLI needs Prefect and typer: only vaultflow-wal runs here
	chmod -R a+rX $(WAL_VENV)
	touch $(WAL_STAMP)

wal-venv: $(WAL_STAMP)

$(AZURITE):
	mkdir -p .tools/azurite
	npm install --prefix .tools/azurite --no-audit --no-fund --silent azurite@3.37.0

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP) $(AZURITE) $(WAL_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

check: $(STAMP)
	$(VENV)/bin/ruff check vaultflow blocks tasks flows deployments tests bench
	$(VENV)/bin/lint-imports
	VAULTFLOW_TESTS_NO_SERVICES=1 $(PY) -m pytest -q -n 2 -m "not services and not slow" -p no:cacheprovider tests

lint: $(STAMP)
	$(VENV)/bin/ruff check vaultflow blocks tasks flows deployments tests bench
	$(VENV)/bin/mypy vaultflow blocks tasks flows deployments
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/backup_vs_pg_dump.py

clean:
	rm -rf .demo
