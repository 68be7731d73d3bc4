"""SqlServerEngine: native .bak backups through staging into a repository, and back.

NOT RUN AGAINST A REAL SQL SERVER: none can run on these machines. Everything up to the
SQL Server boundary is real here: the repository (a local directory), the staging places
(a real Azurite container reached with a real SAS, and a real temp directory), the
streaming, the cleanup. The one stand-in is `FakeSqlServer` (in stand_in.py, beside this
file), which takes the place of `SqlServerClient._run` (the call that hands one T-SQL
batch to pyodbc): it answers the catalog queries, and when given BACKUP ... TO URL/DISK it
writes a deterministic "bak" of a few MiB to the staging place (TO URL with the SAS it was
given in CREATE CREDENTIAL), and when given RESTORE it reads the staged bytes back. Whether a real SQL Server accepts
these statements and writes/reads these places is NOT tested.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from pydantic import SecretStr

from tests.conftest import PASSPHRASE
from tests.engines.sqlserver.stand_in import (
    CONN,
    SERVER_DIR,
    FakeSqlServer,
    client_factory,
    fake_bak,
    stand_in_engine,
)
from tests.object_servers import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer
from vaultflow.engines import engine_from_url, server_from_url
from vaultflow.engines.sqlserver.client import redact
from vaultflow.engines.sqlserver.engine import NATIVE_FORMAT, SqlServerEngine
from vaultflow.engines.sqlserver.sql import SERVER_INFO, database_exists_sql
from vaultflow.engines.sqlserver.staging import BlobStaging, DiskStaging, Staging, _server_join, staging_name
from vaultflow.errors import InputError, TargetNotEmpty, ToolFailed
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import export_snapshot, restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.requests import BackupRequest, RestoreRequest
from vaultflow.storage import LocalStore, MemoryStore


def container_sas(container: str) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    now = datetime.now(UTC)
    return generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
                                  permission=ContainerSasPermissions(read=True, write=True, create=True, list=True,
                                                                     delete=True),
                                  start=now - timedelta(hours=1), expiry=now + timedelta(hours=2))


def staged_blobs(azurite: AzuriteServer, container: str) -> list[str]:
    from azure.storage.blob import ContainerClient

    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    return [b.name for b in client.list_blobs(include=["uncommittedblobs"])]


@dataclass
class Setup:
    engine: SqlServerEngine
    server: FakeSqlServer
    leftovers: Any  # () -> list of staged objects
    sas: str | None = None


@pytest.fixture(params=["url", "disk"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    server = FakeSqlServer()
    staging: Staging
    sas = None
    if request.param == "url":
        from blocks.engines import blob_staging  # the staging store the block builds (AzureBlobStore, retried)

        azurite: AzuriteServer = request.getfixturevalue("azurite")
        container = azurite.new_container()
        sas = container_sas(container)
        server.azurite = azurite
        staging = blob_staging(f"https://{AZURITE_ACCOUNT}.blob.core.windows.net/{container}", SecretStr("?" + sas),
                               client_url=f"{azurite.account_url}/{container}")

        def leftovers() -> list[str]:
            return staged_blobs(azurite, container)
    else:
        shared = tmp_path / "shared"
        shared.mkdir()
        server.disk_root = shared
        staging = DiskStaging(server_path=SERVER_DIR, local_path=str(shared))

        def leftovers() -> list[str]:
            return sorted(p.name for p in shared.iterdir())
    engine = SqlServerEngine(CONN, staging, client_factory=client_factory(server))
    return Setup(engine, server, leftovers, sas)


def open_repo(path: Path) -> Repository:
    return Repository.open(LocalStore(path), PASSPHRASE)


def test_native_backup_round_trip_not_run_against_a_real_sql_server(
        setup: Setup, repo_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sid = new_object_id()
    manifest = backup_database(setup.engine, open_repo(repo_path), snapshot_id=sid)
    assert [(s.name, s.format, s.size) for s in manifest.streams] == [("bak", NATIVE_FORMAT,
                                                                       len(fake_bak("sales")))]
    assert len(manifest.streams[0].chunks) > 1  # chunked (and encrypted) like any other stream
    assert (manifest.engine, manifest.server, manifest.database) == ("sqlserver", "sql1:1433", "sales")
    assert [(t.qualified, t.rows, t.checksum) for t in manifest.tables] == [
        ("dbo.customers", 3, "mssql-checksum-agg:-12345"), ("dbo.orders", 7, "mssql-checksum-agg:null")]
    assert manifest.tool_versions["sqlserver"].startswith("Microsoft SQL Server 2022")
    backup = [s for s in setup.server.statements if s.startswith("BACKUP")]
    assert len(backup) == 1 and "WITH COPY_ONLY, CHECKSUM, FORMAT, INIT" in backup[0]
    assert "COMPRESSION" not in backup[0]
    assert setup.leftovers() == []  # the staging object is gone

    # Restore from a freshly opened repository (no catalog involved) under a new name.
    restore_snapshot(open_repo(repo_path), sid, setup.engine.with_database("sales_copy"))
    assert setup.server.databases["sales_copy"] == fake_bak("sales")
    assert setup.server.received == [fake_bak("sales")] * 2  # FILELISTONLY and RESTORE read the identical bytes
    restore = [s for s in setup.server.statements if s.startswith("RESTORE DATABASE")][0]
    assert ("WITH MOVE N'sales' TO N'/var/opt/mssql/data/sales_copy.mdf', "
            "MOVE N'sales_log' TO N'/var/opt/mssql/log/sales_copy_log.ldf', CHECKSUM, RECOVERY") in restore
    assert "REPLACE" not in restore
    assert setup.leftovers() == []

    # The export is the .bak itself, for RESTORE by hand when vaultflow is not around.
    out = repo_path.parent / "sales.bak"
    export_snapshot(open_repo(repo_path), sid, out)
    assert out.read_bytes() == fake_bak("sales")

    if setup.sas is not None:  # the SAS reached the server's credential and nothing else
        assert setup.server.credentials and set(setup.server.credentials.values()) == {setup.sas}
        signature = re.search(r"sig=([^&]+)", setup.sas)
        assert signature is not None
        signatures = {signature.group(1), unquote(signature.group(1)), quote(unquote(signature.group(1)), safe="")}
        for text in (caplog.text, manifest.model_dump_json(), *(s for s in setup.server.statements
                                                                 if "CREDENTIAL" not in s)):
            assert setup.sas not in text and not any(sig in text for sig in signatures)
        assert "sig=" in caplog.text  # requests were logged (with their SAS cut out)
        assert not re.search(r"sig=(?!REDACTED)", caplog.text)  # every signature, however encoded
    assert "pyodbc-only-pw" not in caplog.text + manifest.model_dump_json()
    assert "staging" in caplog.text  # the log says where the .bak went, without secrets


def test_failed_backup_leaves_no_snapshot_and_no_staging_not_run_against_a_real_sql_server(
        setup: Setup, repo_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    setup.server.fail_backup = True
    repo = open_repo(repo_path)
    with pytest.raises(ToolFailed) as err:
        backup_database(setup.engine, repo, snapshot_id=new_object_id())
    line = str(err.value)
    assert "\n" not in line and "sql1:1433" in line and "Write on backup device failed" in line
    assert repo.snapshot_ids() == [] and list(repo.manifests()) == []
    assert setup.leftovers() == []  # the half-written .bak was deleted
    if setup.sas is not None:
        assert setup.sas not in caplog.text + line


def test_failure_while_storing_deletes_staging_not_run_against_a_real_sql_server(
        setup: Setup, repo_path: Path) -> None:
    """The BACKUP succeeds, then the repository side fails mid-stream."""

    def progress(read: int, stored: int) -> None:
        if read > 1024 * 1024:
            raise OSError("disk full (raised by the test)")

    repo = open_repo(repo_path)
    with pytest.raises(OSError, match="raised by the test"):
        backup_database(setup.engine, repo, snapshot_id=new_object_id(), progress=progress)
    assert repo.snapshot_ids() == []
    assert setup.leftovers() == []


def test_restore_onto_an_existing_database_changes_nothing_not_run_against_a_real_sql_server(
        setup: Setup, repo_path: Path) -> None:
    sid = new_object_id()
    backup_database(setup.engine, open_repo(repo_path), snapshot_id=sid)
    setup.server.databases["sales_copy"] = b"existing"
    setup.server.statements.clear()
    with pytest.raises(TargetNotEmpty) as err:
        restore_snapshot(open_repo(repo_path), sid, setup.engine.with_database("sales_copy"))
    assert "'sales_copy' already exists" in str(err.value) and "new database name" in str(err.value)
    assert setup.server.statements == [database_exists_sql("sales_copy")]  # asked, did nothing else
    assert setup.server.databases["sales_copy"] == b"existing"
    assert setup.leftovers() == []
    with pytest.raises(InputError, match="never replace"):
        restore_snapshot(open_repo(repo_path), sid, setup.engine.with_database("sales_copy"),
                         RestoreRequest(replace=True))


def test_failed_restore_drops_the_partial_database_and_staging_not_run_against_a_real_sql_server(
        setup: Setup, repo_path: Path) -> None:
    sid = new_object_id()
    backup_database(setup.engine, open_repo(repo_path), snapshot_id=sid)
    setup.server.fail_restore = True
    with pytest.raises(ToolFailed, match="RESTORE detected an error"):
        restore_snapshot(open_repo(repo_path), sid, setup.engine.with_database("sales_copy"))
    assert "sales_copy" not in setup.server.databases
    assert "DROP DATABASE [sales_copy]" in setup.server.statements
    assert setup.leftovers() == []


def test_engine_discovery_and_checks_not_run_against_a_real_sql_server(setup: Setup) -> None:
    setup.server.databases["inventory"] = b""
    assert setup.engine.list_databases() == ["inventory", "sales"]
    assert setup.engine.database_exists() and not setup.engine.with_database("nope").database_exists()
    assert setup.engine.fingerprint() is None
    assert [t.rows for t in setup.engine.table_stats(checksums=False)] == [3, 7]
    assert setup.engine.describe() == "SQL Server database 'sales' on sql1:1433"


def test_azure_sql_database_is_refused_with_one_line() -> None:
    class AzureSqlDatabase(FakeSqlServer):
        def run(self, statement: str, database: str) -> list[tuple[Any, ...]]:
            if statement == SERVER_INFO:
                return [("Microsoft SQL Azure (RTM) - 12.0.2000.8", 5)]
            return super().run(statement, database)

    engine = SqlServerEngine(CONN, DiskStaging(SERVER_DIR, "/tmp"), client_factory=client_factory(
        AzureSqlDatabase()))
    with pytest.raises(InputError, match="Azure SQL Database, which does not run a user's BACKUP DATABASE"):
        engine.versions()


def test_without_staging_backup_and_restore_refuse(repo_path: Path) -> None:
    engine = SqlServerEngine(CONN, None, client_factory=client_factory(FakeSqlServer()))
    assert engine.list_databases() == ["sales"]  # discovery needs no staging
    repo = open_repo(repo_path)
    with pytest.raises(InputError, match="needs a staging place") as err:
        backup_database(engine, repo, snapshot_id=new_object_id())
    assert "\n" not in str(err.value) and "staging_container_url" in str(err.value)
    assert repo.snapshot_ids() == []


def test_missing_pyodbc_gives_the_clear_message(monkeypatch: pytest.MonkeyPatch, repo_path: Path,
                                                 tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyodbc", None)  # import fails as if not installed
    engine = SqlServerEngine(CONN, DiskStaging(SERVER_DIR, str(tmp_path)))  # the real client
    repo = open_repo(repo_path)
    with pytest.raises(ToolFailed) as err:
        backup_database(engine, repo, snapshot_id=new_object_id())
    line = err.value.line()
    assert "pyodbc" in line and "msodbcsql18" in line and "unixodbc" in line and "\n" not in line
    assert repo.snapshot_ids() == []
    with pytest.raises(ToolFailed, match="pyodbc cannot be imported"):
        engine.list_databases()


def test_staging_settings_are_checked() -> None:
    with pytest.raises(InputError, match="must be https://ACCOUNT.blob.core.windows.net/CONTAINER"):
        BlobStaging("https://acct.blob.core.windows.net/bak?sv=1", SecretStr("sig"), MemoryStore()).check()
    with pytest.raises(InputError, match="does not exist or is not a directory"):
        DiskStaging(SERVER_DIR, "/nonexistent/staging").check()
    assert re.fullmatch(r"vf-[0-9a-f]{16}-sa-les-db\.bak", staging_name("Sa]les DB"))


def test_refusals_come_from_the_spec_not_run_against_a_real_sql_server(tmp_path: Path, repo_path: Path) -> None:
    """What SQL Server lacks (declared in its EngineSpec) is refused with the spec's one line
    before anything is sent to the (stand-in) server."""
    from vaultflow.engines.base import DroppableDatabase, ServerWideObjects
    from vaultflow.engines.capabilities import CapabilityMissing
    from vaultflow.engines.sqlserver import SPEC

    engine, server = stand_in_engine(tmp_path / "shared")
    assert not any(SPEC.capabilities.has(n) for n in ("drills", "table_restore", "globals", "table_subsets"))
    with pytest.raises(CapabilityMissing, match="SQL Server does not support backing up a subset of tables"):
        with engine.open_dump(include_tables=["dbo.orders"]):
            pass
    with pytest.raises(CapabilityMissing, match="SQL Server does not support restoring chosen tables"):
        engine.restore([], lambda stream, sink: None, tables=["dbo.orders"])
    assert not isinstance(engine, DroppableDatabase | ServerWideObjects)  # no hook that only refuses
    with pytest.raises(CapabilityMissing, match="SQL Server does not support hosting restore drills"):
        SPEC.require("drills", "choose another scratch server")
    with pytest.raises(CapabilityMissing, match="SQL Server does not support server-wide roles and users"):
        backup_database(engine, open_repo(repo_path), BackupRequest(include_globals=True), snapshot_id=new_object_id())
    assert server.statements == [] and (tmp_path / "shared").is_dir()
    sid = new_object_id()
    backup_database(engine, open_repo(repo_path), snapshot_id=sid)  # the stand-in engine backs up as it is
    restore_snapshot(open_repo(repo_path), sid, engine.with_database("sales_copy"))
    assert server.databases["sales_copy"] == fake_bak("sales") and engine.staging is not None
    assert isinstance(engine.staging, DiskStaging) and engine.staging.leftovers() == []


def test_blob_staging_goes_through_a_retrying_store() -> None:
    """vaultflow's side of blob staging is the storage interface, retried: transient
    failures of ranged reads and block uploads pass, a failed fill leaves nothing."""
    from vaultflow.storage import RetryingStore
    from vaultflow.storage.faults import FaultInjectingStore

    faulty = FaultInjectingStore(MemoryStore(), transient_rate=0.3, seed=7)
    staging = BlobStaging("https://acct.blob.core.windows.net/stage", SecretStr("sv=1&sig=s"),
                          RetryingStore(faulty, sleep=lambda seconds: None))
    data = fake_bak("sales")
    name = staging_name("sales")
    staging.write(name, lambda sink: [sink.write(data[i:i + 999_999]) for i in range(0, len(data), 999_999)])
    assert staging.leftovers() == [name]
    with staging.open(name) as stream:
        assert stream.read() == data
    staging.remove(name)
    assert staging.leftovers() == [] and faulty.counts.transient > 0

    def failing(sink: Any) -> None:
        sink.write(data)
        raise OSError("raised by the test")

    with pytest.raises(OSError, match="raised by the test"):
        staging.write(name, failing)
    assert staging.leftovers() == [] and list(staging.store.list()) == []
    with pytest.raises(ToolFailed, match="does not exist"):
        with staging.open(name):
            pass


def test_redact_cuts_the_secret_out_of_an_error() -> None:
    err = redact(ToolFailed("bad SECRET = N'sv=1&sig=abcd'", "fix sig=abcd"), SecretStr("?sv=1&sig=abcd"))
    assert "sig=abcd" not in err.line() and "***" in err.line() and type(err) is ToolFailed


# -- URLs and the block --------------------------------------------------------------------

def test_mssql_url_builds_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SQLCMDPASSWORD", "from-env")
    engine = engine_from_url(f"mssql://backup@sql1:14330/sales?server_path=D:%5Cbak&local_path={tmp_path}"
                             "&trust_server_certificate=yes")
    assert isinstance(engine, SqlServerEngine)
    assert (engine.conn.host, engine.conn.port, engine.conn.user, engine.database) == ("sql1", 14330, "backup",
                                                                                        "sales")
    assert engine.conn.password is not None and engine.conn.password.get_secret_value() == "from-env"
    assert engine.conn.trust_server_certificate and engine.conn.encrypt
    assert engine.staging == DiskStaging("D:\\bak", str(tmp_path))
    assert _server_join("D:\\bak", "x.bak") == "D:\\bak\\x.bak"
    server = server_from_url("sqlserver://backup@sql1")
    assert isinstance(server, SqlServerEngine) and server.database == "master" and server.staging is None
    with pytest.raises(InputError, match="contains a password"):
        engine_from_url("mssql://backup:pw@sql1/sales")
    with pytest.raises(InputError, match="unsupported SQL Server URL parameter"):
        engine_from_url("mssql://backup@sql1/sales?sas=x")
    with pytest.raises(InputError, match="names no database"):
        engine_from_url("mssql://backup@sql1")
    with pytest.raises(InputError, match="needs both server_path and local_path"):
        engine_from_url("mssql://backup@sql1/sales?server_path=D:%5Cbak")


def test_block_builds_the_engine_with_typed_staging(tmp_path: Path) -> None:
    from blocks import SqlServer

    block = SqlServer(host="sql1", password=SecretStr("x"), staging_container_url="https://a.blob.core.windows.net/bak",
                      staging_sas=SecretStr("sv=1&sig=s"), data_dir="/data", log_dir="/log")
    engine = block.engine("sales")
    assert isinstance(engine, SqlServerEngine) and isinstance(engine.staging, BlobStaging)
    assert (engine.database, engine.data_dir, engine.log_dir) == ("sales", "/data", "/log")
    assert block.server_engine().database == "master"
    assert "sig=s" not in repr(block) and "sig=s" not in repr(engine.staging)
    disk = SqlServer(host="sql1", staging_server_path="/srv", staging_local_path=str(tmp_path)).engine("sales")
    assert disk.staging == DiskStaging("/srv", str(tmp_path))
    with pytest.raises(InputError, match="sets both Azure Blob and directory staging"):
        SqlServer(host="sql1", staging_sas=SecretStr("s"), staging_server_path="/srv").engine("sales")
    with pytest.raises(InputError, match="needs both staging_container_url and staging_sas"):
        SqlServer(host="sql1", staging_container_url="https://a.blob.core.windows.net/b").engine("sales")
    assert SqlServer(host="sql1").engine("sales").staging is None
    # Listing databases needs no staging directory on this machine; a backup checks it.
    unmounted = SqlServer(host="sql1", staging_server_path="/srv", staging_local_path="/not/mounted").engine("sales")
    with pytest.raises(InputError, match="/not/mounted does not exist"):
        unmounted._staging("backing up")


def test_cli_backup_of_an_mssql_url_without_staging_is_one_line(repo_path: Path) -> None:
    """The real `vaultflow backup` command: refused before any connection is tried."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "vaultflow.cli.main", "backup", "mssql://backup@127.0.0.1:1/sales",
                           "--repo", str(repo_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SQLCMDPASSWORD": "cli-secret-pw"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a staging place" in lines[0] and "?server_path=" in lines[0]
    assert "cli-secret-pw" not in proc.stderr + proc.stdout
    assert open_repo(repo_path).snapshot_ids() == []
