"""SQL Server / Azure SQL Managed Instance: native COPY_ONLY backups as vaultflow snapshots.

NOT RUN AGAINST A REAL SERVER: no SQL Server can run on the machines this was written on.
`SqlServerEngine` takes a native `BACKUP DATABASE ... WITH COPY_ONLY, CHECKSUM` into a
staging place that both the server and vaultflow reach (an Azure Blob container with a
SAS, written TO URL and read through the storage interface; or a shared directory,
written TO DISK), streams that .bak through the repository writer as one stream and
deletes the staging object, also on failure. Restore streams the .bak back to staging and
runs RESTORE FILELISTONLY and RESTORE ... WITH MOVE to the target name (never REPLACE).
The T-SQL (`sql.py`), the ODBC connection strings (`config.py`), the error mapping
(`client.py`) and the staging (`staging.py`) and repository parts are tested (the staging
parts against Azurite and a real directory); the statements themselves were only ever
given to a stand-in client in the tests, never to SQL Server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import IO, Literal

from vaultflow.engines.base import DumpSession, RestoreObserver, ServerEngine, StreamReader, StreamSource
from vaultflow.engines.sqlserver import SPEC
from vaultflow.engines.sqlserver.client import SqlServerClient, map_error
from vaultflow.engines.sqlserver.config import SqlServerConnection
from vaultflow.engines.sqlserver.sql import AZURE_SQL_DATABASE_EDITION, quote_name
from vaultflow.engines.sqlserver.staging import BlobStaging, Staging, staging_name
from vaultflow.errors import InputError, TargetNotEmpty, VaultflowError
from vaultflow.repository.manifest import StreamManifest, TableStats

_log = logging.getLogger("vaultflow.sqlserver")

NATIVE_FORMAT = "mssql-native-bak"  # one stream: the .bak of BACKUP DATABASE ... COPY_ONLY, CHECKSUM
CHECKSUM_PREFIX = "mssql-checksum-agg:"  # CHECKSUM_AGG(BINARY_CHECKSUM(*)): weak, order-independent


class SqlServerEngine(ServerEngine[SqlServerConnection]):
    """One SQL Server database, backed up natively into a vaultflow repository.

    NEVER RUN AGAINST A REAL SERVER (see the module doc). `staging` is where BACKUP writes
    the .bak and RESTORE reads it; without it the engine lists databases and reads
    statistics but refuses to dump or restore. `data_dir`/`log_dir`: where a restore puts
    the database's files, as the server sees them (default: the instance's default paths).
    `compression` asks BACKUP for COMPRESSION: smaller staging objects, but a compressed
    .bak changes throughout when any page changes, so later snapshots share fewer chunks.
    """

    engine = "sqlserver"
    tool_fix = ("install Microsoft's mssql-tools18 (bcp, sqlcmd) or set bin_dir; the native path needs "
                "only pyodbc and msodbcsql18")

    def __init__(self, conn: SqlServerConnection, staging: Staging | None = None, *, data_dir: str | None = None,
                 log_dir: str | None = None, compression: bool = False,
                 client_factory: Callable[[SqlServerConnection], SqlServerClient] = SqlServerClient) -> None:
        super().__init__(conn)
        self.staging = staging
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.compression = compression
        self.client_factory = client_factory

    def with_database(self, database: str) -> SqlServerEngine:
        return SqlServerEngine(replace(self.conn, database=database), self.staging, data_dir=self.data_dir,
                               log_dir=self.log_dir, compression=self.compression,
                               client_factory=self.client_factory)

    def describe(self) -> str:
        return f"SQL Server database {self.conn.database!r} on {self.server_label()}"

    def client(self) -> SqlServerClient:
        return self.client_factory(self.conn)

    def map_error(self, exc: BaseException, database: str) -> VaultflowError:
        return map_error(exc, self.server_label(), database)

    def _staging(self, action: str) -> Staging:
        if self.staging is None:
            raise InputError(f"{action} {self.describe()} needs a staging place that SQL Server writes the .bak to "
                             "and vaultflow reads it from",
                             "set staging_container_url and staging_sas (Azure Blob), or staging_server_path and "
                             "staging_local_path (a shared directory) in the SqlServer block, or add "
                             "?server_path=...&local_path=... to the mssql:// URL")
        self.staging.check()
        return self.staging

    def check_configuration(self, action: Literal["backup", "restore"]) -> None:
        self._staging("backing up" if action == "backup" else "restoring into")

    # -- discovery and checks ----------------------------------------------------------

    def list_databases(self) -> list[str]:
        return self.client().list_databases()

    def database_exists(self) -> bool:
        return self.client().database_exists(self.conn.database)

    def versions(self) -> dict[str, str]:
        version, edition = self.client().server_info()
        if edition == AZURE_SQL_DATABASE_EDITION:
            raise InputError(f"{self.server_label()} is Azure SQL Database, which does not run a user's "
                             "BACKUP DATABASE", "use its automated backups or a BACPAC export; vaultflow's native "
                             "path needs SQL Server or Azure SQL Managed Instance")
        return {"sqlserver": version, "odbc_driver": self.conn.driver}

    def fingerprint(self) -> str | None:
        """None: no cheap value is known here that is sure to change with every write."""
        return None

    def table_stats(self, *, like: list[TableStats] | None = None, checksums: bool = True) -> list[TableStats]:
        """Row counts (exact, COUNT_BIG) and CHECKSUM_AGG(BINARY_CHECKSUM(*)) per user table.

        The checksum is weak (collisions are easy, some column types are left out of it)
        and is read from the live database, not from the .bak. Without `checksums` the row
        counts come from sys.partitions (approximate, cheap).
        """
        client = self.client()
        listed = client.table_stats(self.conn.database)
        if not checksums:
            return [TableStats(schema=s, name=t, rows=n) for s, t, n in listed]
        out = []
        for schema, table, _ in listed:
            rows, checksum = client.table_checksum(self.conn.database, schema, table)
            out.append(TableStats(schema=schema, name=table, rows=rows,
                                  checksum=f"{CHECKSUM_PREFIX}{'null' if checksum is None else checksum}"))
        return out

    # -- backup ------------------------------------------------------------------------

    @contextmanager
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        parent_streams: list[StreamManifest] | None = None,
    ) -> Iterator[DumpSession]:
        """BACKUP DATABASE ... COPY_ONLY, CHECKSUM into staging; one source reads it back.

        The staging object is deleted when the context is left, whether the backup
        succeeded or not. The table statistics are read from the live database just before
        BACKUP starts, so a concurrent writer makes them differ from the .bak's content.
        `timeout` is not applied to the BACKUP statement.
        """
        if include_tables or exclude_tables:
            SPEC.require("table_subsets", "drop --include-table/--exclude-table for SQL Server sources (native "
                         "backups copy the whole database)")
        staging = self._staging("backing up")
        versions = self.versions()
        tables = self.table_stats(checksums=table_checksums)
        client = self.client()
        name = staging_name(self.conn.database)
        where = staging.describe(name)
        try:
            _log.info("BACKUP DATABASE %s COPY_ONLY, CHECKSUM to %s", self.describe(), where)
            staging.backup(client, self.conn.database, name, self.compression)

            @contextmanager
            def staged() -> Iterator[IO[bytes]]:
                with staging.open(name) as stream:
                    yield stream

            meta = {"backup": "COPY_ONLY,CHECKSUM" + (",COMPRESSION" if self.compression else ""),
                    "staging": "url" if isinstance(staging, BlobStaging) else "disk"}
            yield DumpSession(sources=[StreamSource("bak", NATIVE_FORMAT, staged, meta=meta)], tables=tables,
                              versions=versions)
        finally:
            self._remove_staged(staging, name, where)

    def _remove_staged(self, staging: Staging, name: str, where: str) -> None:
        """Delete a staging object; a failure is logged (it holds the database, unencrypted)
        and does not hide the error that may be on its way."""
        try:
            staging.remove(name)
        except (VaultflowError, OSError) as exc:
            line = exc.line() if isinstance(exc, VaultflowError) else str(exc)
            _log.warning("could not delete %s (an unencrypted copy of the database): %s; delete it by hand",
                         where, line)

    # -- restore -----------------------------------------------------------------------

    def restore(
        self, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
        tables: list[str] | None = None, observer: RestoreObserver | None = None, server_locale: bool = False,
    ) -> None:
        """Stream the .bak to staging, then RESTORE ... WITH MOVE as this database (new name).

        An existing database of this name fails with TargetNotEmpty before anything is
        written; `replace` is refused (restore under a new name, then swap by hand). If the
        RESTORE fails, a database of this name it left behind is dropped. The staging
        object is deleted in every case. `no_owner`, `jobs` and `timeout` have no effect.
        """
        if tables:
            SPEC.require("table_restore", "drop --table for SQL Server targets (snapshots restore as a whole "
                         "database)")
        if [s.format for s in streams] != [NATIVE_FORMAT]:
            raise InputError(f"a snapshot with {', '.join(sorted({s.format for s in streams}))} streams cannot be "
                             "restored into SQL Server", "restore it into an engine of its own kind")
        if replace:
            raise InputError(f"SQL Server restores never replace a database ({self.describe()})",
                             "restore under a new name, check it, then drop or rename the old one yourself")
        staging = self._staging("restoring into")
        client = self.client()
        target = self.conn.database
        quote_name(target)
        if client.database_exists(target):
            raise TargetNotEmpty(f"database {target!r} already exists on SQL Server at {self.server_label()}",
                                 "restore under a new database name")
        data_dir, log_dir = self.data_dir, self.log_dir
        if not data_dir or not log_dir:
            default_data, default_log = client.default_paths()
            data_dir, log_dir = data_dir or default_data, log_dir or default_log
        if not data_dir or not log_dir:
            raise InputError(f"SQL Server at {self.server_label()} reports no default data or log directory",
                             "set data_dir and log_dir in the SqlServer block")
        name = staging_name(target)
        where = staging.describe(name)
        try:
            staging.write(name, lambda sink: read(streams[0], sink))
            _log.info("RESTORE DATABASE %s WITH MOVE from %s", self.describe(), where)
            try:
                client.restore_as(target, data_dir=data_dir, log_dir=log_dir,
                                  **staging.restore_source(client, name))
            except BaseException:
                self._drop_partial(client, target)
                raise
        finally:
            self._remove_staged(staging, name, where)

    def bcp_sources(self, auth: str, *, timeout: float | None = None) -> list[StreamSource]:
        """The logical path: one source per user table, its rows from `bcp ... queryout` in
        native format and primary key order, streamed through a FIFO. Data only (no schema,
        no way to restore it yet), so backups do not use it; only trusted (Kerberos) or
        Entra ID logins, never a SQL login's password (bcp would need it in argv)."""
        from vaultflow.engines.sqlserver.bcp import bcp_sources

        return bcp_sources(self, auth, timeout)

    def _drop_partial(self, client: SqlServerClient, target: str) -> None:
        """Drop what a failed RESTORE left under `target` (it did not exist before)."""
        try:
            if client.database_exists(target):
                client.drop_database(target)
        except VaultflowError as exc:
            _log.warning("could not drop the partly restored database %r on %s: %s; drop it by hand", target,
                         self.server_label(), exc.line())
