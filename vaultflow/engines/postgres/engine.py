"""PostgreSQL: `pg_dump -Fc -Z0` in an exported snapshot, `pg_restore` from a stream.

The engine holds the connection (psycopg sessions, client-tool environment, error
mapping) and what concerns the server and the database as a whole; the dump, the
restore, table statistics and segments live in their own modules, as functions taking
the engine."""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import IO, Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from vaultflow.engines.base import (
    GLOBALS_STREAM,
    DumpSession,
    RestoreObserver,
    ServerEngine,
    SqlAlchemyTarget,
    StreamReader,
    StreamSource,
)
from vaultflow.engines.postgres import GLOBALS_FORMAT, dump, restore, stats
from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.segments import KeyRange, TableInfo
from vaultflow.engines.process import Deadline, ToolProcess
from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    InputError,
    ToolFailed,
    ToolVersionMismatch,
    VaultflowError,
)
from vaultflow.repository.manifest import SchemaInventory, StreamManifest, TableStats


class PostgresEngine(ServerEngine[PostgresConnection]):
    engine = "postgresql"
    tool_fix = "install the PostgreSQL client (Debian: postgresql-client) or set bin_dir"

    # -- connections -----------------------------------------------------------------

    def _connect(self, database: str | None = None, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        c = self.conn
        kwargs: dict[str, Any] = {
            "host": c.host, "port": c.port, "user": c.user, "dbname": database or c.database,
            "connect_timeout": c.connect_timeout, "autocommit": autocommit,
            "application_name": "vaultflow",
        }
        if c.password is not None:
            kwargs["password"] = c.password.get_secret_value()
        if c.sslmode:
            kwargs["sslmode"] = c.sslmode
        try:
            return psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            raise self.map_error(exc, database or c.database) from None

    def _tool_env(self) -> dict[str, str]:
        env = {"PGCONNECT_TIMEOUT": str(self.conn.connect_timeout), "PGAPPNAME": "vaultflow"}
        if self.conn.password is not None:
            env["PGPASSWORD"] = self.conn.password.get_secret_value()
        if self.conn.sslmode:
            env["PGSSLMODE"] = self.conn.sslmode
        return env

    def _conn_args(self, database: str) -> list[str]:
        return ["--host", self.conn.host, "--port", str(self.conn.port),
                "--username", self.conn.user, "--dbname", database, "--no-password"]

    def map_error(self, exc: BaseException, database: str) -> VaultflowError:
        text = str(exc).strip()
        low = text.lower()
        where = f"{self.server_label()}"
        if "password authentication failed" in low or "no password supplied" in low or (
            "authentication failed" in low
        ):
            return AuthenticationFailed(
                f"PostgreSQL at {where} rejected the credentials of user {self.conn.user!r}",
                "check the password in the PostgresServer block, PGPASSWORD or ~/.pgpass",
            )
        if re.search(r'database ".*" does not exist', low):
            return DatabaseNotFound(
                f"database {database!r} does not exist on PostgreSQL at {where}",
                "check the name (psql -l lists the databases)",
            )
        transient_markers = ("connection refused", "could not connect", "timeout expired",
                             "timed out", "could not translate host name", "server closed the connection",
                             "connection reset", "the database system is starting up", "too many clients",
                             "remaining connection slots are reserved", "not yet accepting connections",
                             "the database system is shutting down", "too many connections")
        if any(m in low for m in transient_markers):
            first = text.splitlines()[0] if text else type(exc).__name__
            reason = first.rsplit("failed: ", 1)[-1]
            return ConnectionFailed(
                f"cannot connect to PostgreSQL at {where} ({reason.strip()[:160]})",
                "check that the server is running and the host and port are right",
            )
        first = text.splitlines()[0] if text else type(exc).__name__
        return VaultflowError(f"PostgreSQL error on {where}/{database}: {first[:300]}")

    # -- discovery and versions ------------------------------------------------------

    def list_databases(self) -> list[str]:
        with self._connect(self.conn.maintenance_database) as c:
            rows = c.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    def _server_version(self, c: psycopg.Connection[Any]) -> tuple[int, str]:
        num = c.info.server_version
        return num // 10000, f"{num // 10000}.{num % 10000}"

    def tool_version(self, name: str) -> tuple[int, str]:
        path = self._tool(name)
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        m = re.search(r"\d+(?:\.\d+)*", out.stdout)
        if out.returncode != 0 or not m:
            raise ToolFailed(f"could not read the version of {path}", "check the installation")
        parts = [int(p) for p in m.group(0).split(".")]
        # Before PostgreSQL 10 the major version had two parts (9.6); encode it as 9.6 -> 9.
        return parts[0], m.group(0)

    def versions(self) -> dict[str, str]:
        with self._connect() as c:
            server_major, server_version = self._server_version(c)
        return self._check_tools(server_major, server_version)

    def _check_tools(self, server_major: int, server_version: str) -> dict[str, str]:
        versions = {"postgresql": server_version}
        for tool in ("pg_dump", "pg_restore"):
            major, version = self.tool_version(tool)
            versions[tool] = version
            if major < server_major:
                raise ToolVersionMismatch(
                    f"{tool} {version} is older than the PostgreSQL {server_version} server at "
                    f"{self.server_label()}",
                    f"install postgresql-client-{server_major} or point bin_dir at a {tool} "
                    f">= {server_major}",
                )
        return versions

    # -- statistics ------------------------------------------------------------------

    def fingerprint(self) -> str | None:
        """The cluster's transaction snapshot (xmin:xmax:in-progress ids) and every sequence's
        last value; None on a standby, where replay changes data without any of these moving.

        Any committed write anywhere in the cluster (DDL included) takes a transaction id,
        and a transaction still open when the parent was taken is in the in-progress list,
        so its later commit changes the snapshot too; sequences move without an id. The
        statistics counters are not used here: they are flushed asynchronously.
        """
        with self._connect() as c:
            row = c.execute(
                "SELECT pg_is_in_recovery(), pg_current_snapshot()::text, "
                "(SELECT coalesce(string_agg(format('%I.%I=%s', schemaname, sequencename, last_value), ','"
                " ORDER BY schemaname, sequencename), '') FROM pg_sequences)").fetchone()
        assert row is not None
        if row[0]:
            return None
        digest = hashlib.sha256(str(row[2]).encode()).hexdigest()[:16]
        return f"pg:snapshot={row[1]}:seq={digest}"

    def table_stats(self, *, like: list[TableStats] | None = None, checksums: bool = True) -> list[TableStats]:
        """Row count and checksum of every user table, read the way a backup reads it.

        The checksum is the BLAKE3 of the table's rows in COPY text format, in the order a
        backup streams them (primary key, else heap order), so a restored copy must match
        the statistics its snapshot recorded byte for byte. Tables that `like` records as
        segmented are read segment by segment with the same width.
        """
        return self.table_stats_parallel(1, like=like)

    def table_stats_parallel(self, jobs: int, *, like: list[TableStats] | None = None,
                             tables: list[str] | None = None) -> list[TableStats]:
        return stats.table_stats_parallel(self, jobs, like=like, tables=tables)

    def loaded_table_stats(self, table: str, streams: list[StreamManifest]) -> TableStats | None:
        return stats.loaded_table_stats(self, table, streams)

    def combined_table_stats(self, streams: list[StreamManifest]) -> list[TableStats]:
        return stats.combined_segment_stats(streams)

    # -- dump ------------------------------------------------------------------------

    @contextmanager
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        parent_streams: list[StreamManifest] | None = None,
    ) -> Iterator[DumpSession]:
        """See dump.open_dump."""
        with dump.open_dump(self, table_checksums=table_checksums, timeout=timeout, include_tables=include_tables,
                            exclude_tables=exclude_tables, parent_streams=parent_streams) as session:
            yield session

    def _copy_out(self, t: TableInfo, snapshot: str | None, deadline: Deadline,
                  key_range: KeyRange | None = None, *, where: sql.Composable | None = None
                  ) -> AbstractContextManager[IO[bytes]]:
        """A table's rows as COPY text (dump.copy_out); every reader of table rows goes
        through this method."""
        return dump.copy_out(self, t, snapshot, deadline, key_range, where=where)


    # -- server-wide objects ----------------------------------------------------------

    def globals_source(self, *, passwords: bool = False) -> StreamSource:
        """Roles, their memberships and settings, and tablespaces: pg_dumpall --globals-only,
        with --no-role-passwords unless `passwords`."""
        argv = [self._tool("pg_dumpall"), "--globals-only",
                *([] if passwords else ["--no-role-passwords"]),
                "--host", self.conn.host, "--port", str(self.conn.port), "--username", self.conn.user,
                "--no-password", "--database", self.conn.maintenance_database]
        return StreamSource(GLOBALS_STREAM, GLOBALS_FORMAT,
                            functools.partial(dump.tool_stream, self, "pg_dumpall", argv, Deadline.start(None)),
                            meta={"passwords": str(passwords).lower()})

    def restore_globals(self, stream: StreamManifest, read: StreamReader) -> None:
        """Run the script with psql; a role or tablespace that already exists is left as it is."""
        if stream.format != GLOBALS_FORMAT:
            raise InputError(f"stream {stream.name!r} holds {stream.format}, not PostgreSQL roles",
                             "restore globals into a server of the snapshot's engine")
        argv = [self._tool("psql"), "-X", "-q", *self._conn_args(self.conn.maintenance_database)]
        with ToolProcess(argv, env=self._tool_env(), stdin=subprocess.PIPE) as proc:
            try:
                read(stream, proc.stdin)
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass
            code = proc.wait()
            errors = [ln for ln in proc.stderr_text().splitlines()
                      if "ERROR:" in ln and "already exists" not in ln]
            if code != 0 or errors:
                line = errors[0] if errors else proc.last_error_line()
                raise ToolFailed(f"restoring the roles of {self.server_label()} failed: {line.strip()[:300]}",
                                 "fix the role named there, then restore with --globals again")

    # -- restore ---------------------------------------------------------------------

    def _database_exists(self, admin: psycopg.Connection[Any], name: str) -> bool:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def has_user_objects(self) -> bool:
        with self._connect() as c:
            row = c.execute(stats.USER_OBJECT_COUNT).fetchone()
        return bool(row and row[0])

    # -- restore drills ------------------------------------------------------------------

    def schema_inventory(self) -> SchemaInventory:
        with self._connect() as c:
            return stats.schema_inventory_of(c)

    def database_exists(self) -> bool:
        with self._connect(self.conn.maintenance_database) as admin:
            return self._database_exists(admin, self.conn.database)

    def drop_database(self) -> None:
        if self.conn.database == self.conn.maintenance_database:
            raise InputError(f"refusing to drop the maintenance database {self.conn.database!r} on "
                             f"{self.server_label()}", "name another database")
        with self._connect(self.conn.maintenance_database) as admin:
            try:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.conn.database)))
            except psycopg.Error as exc:
                raise self.map_error(exc, self.conn.database) from None

    def sqlalchemy_target(self) -> SqlAlchemyTarget:
        c = self.conn
        url = f"postgresql+psycopg://{quote(c.user, safe='')}@{c.host}:{c.port}/{quote(c.database, safe='')}"
        connect_args: dict[str, object] = {"connect_timeout": c.connect_timeout, "application_name": "vaultflow"}
        if c.password is not None:
            connect_args["password"] = c.password.get_secret_value()
        if c.sslmode:
            connect_args["sslmode"] = c.sslmode
        return SqlAlchemyTarget(url, {"connect_args": connect_args})

    def restore(
        self, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
        tables: list[str] | None = None, observer: RestoreObserver | None = None, server_locale: bool = False,
    ) -> None:
        """See DatabaseEngine.restore and restore.restore."""
        restore.restore(self, streams, read, replace=replace, timeout=timeout, no_owner=no_owner, jobs=jobs,
                        tables=tables, observer=observer, server_locale=server_locale)
