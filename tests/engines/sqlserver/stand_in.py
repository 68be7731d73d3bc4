"""The SQL Server stand-in: a fake server behind `SqlServerClient`, for tests only.

NOT A REAL SQL SERVER, and nothing built on it was ever run against one: none can run on
these machines. `FakeSqlServer` takes the place of `SqlServerClient._run` (the call that
hands one T-SQL batch to pyodbc): it answers the catalog queries, and when given BACKUP
... TO URL/DISK it writes a deterministic "bak" of a few MiB (`fake_bak`) to the staging
place (TO URL with the SAS it was given in CREATE CREDENTIAL, through Azurite), and when
given RESTORE it reads the staged bytes back. It raises AssertionError on any statement it
does not know. Whether a real SQL Server accepts these statements is NOT tested.

A `SqlServerEngine` wired to it with a disk staging directory (for a conformance suite)::

    from tests.engines.sqlserver.stand_in import stand_in_engine

    engine, server = stand_in_engine(tmp_path / "shared")  # directory made if missing
    # engine: SqlServerEngine on database "sales" of the fake server sql1:1433, whose
    # BACKUP ... TO DISK writes into tmp_path / "shared" (SERVER_DIR as the server sees it);
    # server: the FakeSqlServer (its databases, statements, what RESTORE read)

which is, spelled out::

    server = FakeSqlServer(disk_root=shared)
    staging = DiskStaging(server_path=SERVER_DIR, local_path=str(shared))
    engine = SqlServerEngine(CONN, staging, client_factory=client_factory(server))

Its snapshots hold one stream of format "mssql-native-bak" (the fake .bak). A restore goes
to a database name that does not exist yet (`engine.with_database("sales_copy")`); the
restored bytes are then `server.databases["sales_copy"]`. Table statistics are fixed:
dbo.customers (3 rows) and dbo.orders (7 rows).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tests.object_servers import AzuriteServer
from vaultflow.engines.sqlserver.client import SqlServerClient, map_error, redact
from vaultflow.engines.sqlserver.config import SqlServerConnection
from vaultflow.engines.sqlserver.engine import SqlServerEngine
from vaultflow.engines.sqlserver.sql import DEFAULT_PATHS, LIST_DATABASES, PRIMARY_KEYS, SERVER_INFO, TABLE_STATS
from vaultflow.engines.sqlserver.staging import STAGING_PREFIX, DiskStaging
from vaultflow.errors import VaultflowError

SERVER_DIR = "/var/opt/mssql/backup/vaultflow"  # the staging directory as the (fake) server sees it
BAK_SIZE = 3 * 1024 * 1024 + 12345  # a few MiB, not a multiple of any block size


def fake_bak(database: str) -> bytes:
    """Deterministic stand-in bytes for the .bak of `database` (not a real backup format)."""
    return b"FAKE-BAK " + database.encode() + b"\n" + random.Random(database).randbytes(BAK_SIZE)


@dataclass
class FakeSqlServer:
    """The server's side of the stand-in: its databases and what it was sent and received."""

    databases: dict[str, bytes] = field(default_factory=lambda: {"sales": fake_bak("sales")})
    disk_root: Path | None = None  # where SERVER_DIR really is (the shared directory)
    azurite: AzuriteServer | None = None
    credentials: dict[str, str] = field(default_factory=dict)  # container URL -> SAS (as CREATE CREDENTIAL got it)
    statements: list[str] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)  # the bytes RESTORE read from staging
    fail_backup: bool = False  # write part of the .bak, then fail as a real BACKUP would
    fail_restore: bool = False  # leave a RESTORING database behind, then fail

    # -- staging, as the server reaches it ----------------------------------------------

    def _blob(self, url: str) -> Any:
        from azure.storage.blob import ContainerClient

        assert self.azurite is not None
        container_url, _, blob = url.partition(f"/{STAGING_PREFIX}/")
        sas = self.credentials.get(container_url)
        if sas is None:
            raise map_error(Exception("42000", "[SQL Server]Cannot open backup device. Operating system error "
                                         "86(The specified network password is not correct.). (3201)"),
                               "sql1:1433", "master")
        container = container_url.rsplit("/", 1)[1]
        client = ContainerClient(self.azurite.account_url, container, credential=sas)
        return client.get_blob_client(f"{STAGING_PREFIX}/{blob}")

    def _disk(self, path: str) -> Path:
        assert self.disk_root is not None and path.startswith(SERVER_DIR + "/")
        return self.disk_root / path[len(SERVER_DIR) + 1:]

    def _write(self, target: tuple[str, str], data: bytes) -> None:
        kind, where = target
        if kind == "DISK":
            self._disk(where).write_bytes(data)
        else:
            self._blob(where).upload_blob(data, overwrite=True)

    def _read(self, target: tuple[str, str]) -> bytes:
        kind, where = target
        if kind == "DISK":
            return self._disk(where).read_bytes()
        return bytes(self._blob(where).download_blob().readall())

    # -- T-SQL -------------------------------------------------------------------------

    def run(self, statement: str, database: str) -> list[tuple[Any, ...]]:
        self.statements.append(statement)
        if statement == LIST_DATABASES:
            return [(n,) for n in sorted(self.databases)]
        if statement == SERVER_INFO:
            return [("Microsoft SQL Server 2022 (RTM-CU15) (FAKE: not a real server)\n\tDeveloper Edition", 3)]
        if statement == DEFAULT_PATHS:
            return [("/var/opt/mssql/data/", "/var/opt/mssql/log/")]
        if m := re.fullmatch(r"SELECT DB_ID\(N'(.*)'\)", statement):
            name = m.group(1).replace("''", "'")
            return [(sorted(self.databases).index(name) + 5 if name in self.databases else None,)]
        if statement == PRIMARY_KEYS:
            return [("dbo", "customers", "id"), ("dbo", "orders", "region"), ("dbo", "orders", "id")]
        if statement == TABLE_STATS:
            return [("dbo", "customers", 3), ("dbo", "orders", 7)]
        if m := re.fullmatch(r"SELECT COUNT_BIG\(\*\), CHECKSUM_AGG\(BINARY_CHECKSUM\(\*\)\) FROM \[dbo\]\.\[(\w+)\]",
                             statement):
            return [(3, -12345)] if m.group(1) == "customers" else [(7, None)]
        if m := re.search(r"CREATE CREDENTIAL \[(.*?)\] WITH IDENTITY = 'SHARED ACCESS SIGNATURE', SECRET = N'(.*)'$",
                          statement):
            self.credentials[m.group(1)] = m.group(2).replace("''", "'")
            return []
        if m := re.match(r"BACKUP DATABASE \[(.*?)\] TO (DISK|URL) = N'(.*?)' WITH (.*)", statement):
            database_name, kind, where, options = m.groups()
            assert options.startswith("COPY_ONLY, CHECKSUM")
            data = self.databases[database_name]
            if self.fail_backup:  # a disk file half written, or blob blocks never committed
                if kind == "DISK":
                    self._write((kind, where), data[: len(data) // 2])
                else:
                    self._blob(where).stage_block("YmxvY2swMDAx", data[: len(data) // 2])
                raise map_error(Exception("42000", "[SQL Server]Write on backup device failed: operating system "
                                             "error 112 (not enough space). (3202)"), "sql1:1433", database_name)
            self._write((kind, where), data)
            return []
        if m := re.fullmatch(r"RESTORE FILELISTONLY FROM (DISK|URL) = N'(.*?)'", statement):
            self.received.append(self._read((m.group(1), m.group(2))))
            return [("sales", "/var/opt/mssql/data/sales.mdf", "D"), ("sales_log", "/var/opt/mssql/log/s.ldf", "L")]
        if m := re.match(r"RESTORE DATABASE \[(.*?)\] FROM (DISK|URL) = N'(.*?)' WITH (.*)", statement):
            name, kind, where, _ = m.groups()
            assert "REPLACE" not in statement
            data = self._read((kind, where))
            self.received.append(data)
            self.databases[name] = data if not self.fail_restore else b"RESTORING"
            if self.fail_restore:
                raise map_error(Exception("42000", "[SQL Server]RESTORE detected an error on page (1:42). "
                                             "(3183)"), "sql1:1433", name)
            return []
        if m := re.fullmatch(r"DROP DATABASE \[(.*?)\]", statement):
            del self.databases[m.group(1)]
            return []
        raise AssertionError(f"the fake SQL Server does not know: {statement[:120]}")


class FakeClient(SqlServerClient):
    """SqlServerClient with `_run` answered by FakeSqlServer instead of pyodbc (test stand-in)."""

    server: FakeSqlServer

    def _run(self, statement: str, database: str = "master", *, secret: SecretStr | None = None
             ) -> list[tuple[Any, ...]]:
        try:
            return self.server.run(statement, database)
        except VaultflowError as exc:
            raise redact(exc, secret) from None


def client_factory(server: FakeSqlServer) -> Any:
    def make(conn: SqlServerConnection) -> SqlServerClient:
        client = FakeClient(conn)
        client.server = server
        return client
    return make


CONN = SqlServerConnection(host="sql1", user="backup", password=SecretStr("pyodbc-only-pw"), database="sales")


def stand_in_engine(shared: Path, server: FakeSqlServer | None = None) -> tuple[SqlServerEngine, FakeSqlServer]:
    """A SqlServerEngine on database "sales" of a FakeSqlServer (NOT a real SQL Server) that
    stages through the directory `shared` (created if missing): see the module doc."""
    shared.mkdir(parents=True, exist_ok=True)
    server = server or FakeSqlServer()
    server.disk_root = shared
    engine = SqlServerEngine(CONN, DiskStaging(server_path=SERVER_DIR, local_path=str(shared)),
                             client_factory=client_factory(server))
    return engine, server
