"""Blocks register for the UI, keep secrets masked, and build engines without connecting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from pydantic import SecretStr

from blocks import BackupRepository, PostgresServer, SqliteDatabase
from tests.conftest import ROOT
from vaultflow.errors import InputError


def test_register_module(prefect_api: str) -> None:
    env = dict(os.environ, PREFECT_API_URL=prefect_api, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "vaultflow PostgreSQL Server" in proc.stdout or "Successfully registered" in proc.stdout


def test_secrets_stay_masked(prefect_api: str) -> None:
    from prefect.client.orchestration import get_client

    PostgresServer(host="db1", password=SecretStr("s3cr3t-pg"), database="app").save("pg-masked", overwrite=True)
    BackupRepository(location="/srv/r", passphrase=SecretStr("s3cr3t-repo")).save("repo-masked", overwrite=True)

    async def read(slug: str, name: str) -> dict[str, object]:
        async with get_client() as client:
            doc = await client.read_block_document_by_name(name=name, block_type_slug=slug, include_secrets=False)
            return dict(doc.data)

    pg = asyncio.run(read("vaultflow-postgres-server", "pg-masked"))
    repo = asyncio.run(read("vaultflow-backup-repository", "repo-masked"))
    assert "s3cr3t" not in repr(pg) + repr(repo)
    loaded = PostgresServer.load("pg-masked")
    assert loaded.password is not None and loaded.password.get_secret_value() == "s3cr3t-pg"
    assert "s3cr3t" not in repr(loaded)


def test_engine_from_block_does_not_connect() -> None:
    engine = PostgresServer(host="203.0.113.1", port=1, database="app").engine()
    assert engine.describe() == "postgresql database 'app' on 203.0.113.1:1"
    assert engine.with_database("other").database == "other"
    with pytest.raises(InputError):
        PostgresServer(host="h").engine()
    assert SqliteDatabase(path="/tmp/x.db").engine().database == "x.db"


def test_scratch_server_from_url_or_block(prefect_api: str, tmp_path: object) -> None:
    from pathlib import Path

    from blocks.resolve import resolve_scratch
    from vaultflow.engines.postgres.engine import PostgresEngine
    from vaultflow.engines.sqlite.engine import SqliteEngine

    pg = resolve_scratch("postgresql://postgres@db9:6543", "postgresql").engine
    assert isinstance(pg, PostgresEngine) and pg.server_label() == "db9:6543"
    assert pg.with_database("vaultflow_drill_x").database == "vaultflow_drill_x"
    directory = Path(str(tmp_path))
    lite = resolve_scratch(f"sqlite:///{directory}/", "sqlite").engine
    assert isinstance(lite, SqliteEngine) and lite.with_database("d").path == directory / "d"
    with pytest.raises(InputError, match="contains a password") as err:
        resolve_scratch("postgresql://postgres:hunter2@db9:6543", "postgresql")
    assert "hunter2" not in str(err.value)
    with pytest.raises(InputError, match="no scratch server given"):
        resolve_scratch(None, "postgresql")

    PostgresServer(host="scratch1", password=SecretStr("pw"), drill_suites="/srv/suites").save(
        "pg-scratch", overwrite=True)
    server = resolve_scratch("pg-scratch", "postgresql")
    assert server.suites_dir == "/srv/suites" and server.engine.server_label() == "scratch1:5432"


def test_sqlserver_block_keeps_password_and_sas_masked(prefect_api: str) -> None:
    """Saved and loaded through the real Prefect API; builds the engine without connecting
    (no SQL Server is involved: none runs here)."""
    from prefect.client.orchestration import get_client

    from blocks import SqlServer
    from vaultflow.engines.sqlserver.engine import SqlServerEngine
    from vaultflow.engines.sqlserver.staging import BlobStaging

    SqlServer(host="sql1", password=SecretStr("s3cr3t-mssql"), database="sales",
              staging_container_url="https://acct.blob.core.windows.net/stage",
              staging_sas=SecretStr("sv=2024&sig=s3cr3t-sas")).save("mssql-masked", overwrite=True)

    async def read() -> dict[str, object]:
        async with get_client() as client:
            doc = await client.read_block_document_by_name(name="mssql-masked", block_type_slug="vaultflow-sqlserver",
                                                           include_secrets=False)
            return dict(doc.data)

    assert "s3cr3t" not in repr(asyncio.run(read()))
    engine = SqlServer.load("mssql-masked").engine()
    assert isinstance(engine, SqlServerEngine) and isinstance(engine.staging, BlobStaging)
    assert engine.staging.sas.get_secret_value() == "sv=2024&sig=s3cr3t-sas"
    assert "s3cr3t" not in repr(engine.staging) + engine.describe()
