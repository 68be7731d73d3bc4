# The two commands of README.md: `make demo` and `make test`. Both create .venv/ and
# install what they need when it is missing, so they work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check vaultflow blocks tasks flows deployments tests bench
	$(VENV)/bin/mypy vaultflow blocks tasks flows deployments

bench: $(STAMP)
	$(PY) bench/backup_vs_pg_dump.py

clean:
	rm -rf .demo
