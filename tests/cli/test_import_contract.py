"""Import-time contracts of the CLI (issue 17): what a command's process loads, checked in a
fresh interpreter through sys.modules (not timed, so not flaky on a loaded machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
                         env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_cli_app_imports_no_prefect() -> None:
    """`vaultflow snapshots`, `show`, `stats`, `export --to` need no server: building the app loads no Prefect."""
    loaded = _modules_after("import vaultflow.cli.main")
    assert not {m for m in loaded if m.split(".")[0] in ("prefect", "prefect_aws", "prefect_azure", "boto3")}


def test_engine_blocks_import_no_database_driver() -> None:
    """Flow parameter types import blocks.engines; the drivers load only when a block builds an engine."""
    loaded = _modules_after("import blocks.engines")
    assert not {m for m in loaded if m.split(".")[0] in ("psycopg", "pymysql", "numpy", "pyodbc")}
    assert "vaultflow.engines.postgres.engine" not in loaded


def test_the_backup_report_imports_no_pandas() -> None:
    """Every backup run publishes the report (`publish-stats`); pandas would add about 0.4 s to each."""
    loaded = _modules_after("import tasks.reporting, vaultflow.catalog.report")
    assert not {m for m in loaded if m.split(".")[0] in ("pandas", "numpy")}
