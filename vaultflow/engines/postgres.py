"""PostgreSQL: `pg_dump -Fc -Z0` in an exported snapshot, `pg_restore` from a stream."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from vaultflow.engines.base import DatabaseEngine, DumpSession, StreamWriter
from vaultflow.engines.process import ToolProcess
from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    InputError,
    TargetNotEmpty,
    ToolFailed,
    ToolVersionMismatch,
    TransientError,
    VaultflowError,
)
from vaultflow.repository.manifest import TableStats

DUMP_FORMAT = "pg_dump-custom"
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")

_USER_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

_USER_OBJECT_COUNT = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
"""


@dataclass(frozen=True)
class PostgresConnection:
    """Where a PostgreSQL database is; the password travels only as a SecretStr."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    database: str = "postgres"
    password: SecretStr | None = None
    sslmode: str | None = None
    bin_dir: str | None = None
    maintenance_database: str = "postgres"
    connect_timeout: int = 10


class PostgresEngine(DatabaseEngine):
    engine = "postgresql"

    def __init__(self, conn: PostgresConnection) -> None:
        self.conn = conn

    # -- identity --------------------------------------------------------------------

    @property
    def database(self) -> str:
        return self.conn.database

    def server_label(self) -> str:
        return f"{self.conn.host}:{self.conn.port}"

    def with_database(self, database: str) -> PostgresEngine:
        return PostgresEngine(replace(self.conn, database=database))

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
            raise self._map_error(exc, database or c.database) from None

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

    def _tool(self, name: str) -> str:
        if self.conn.bin_dir:
            path = os.path.join(self.conn.bin_dir, name)
            if os.access(path, os.X_OK):
                return path
        else:
            found = shutil.which(name)
            if found:
                return found
        raise ToolFailed(
            f"{name} not found{' in ' + self.conn.bin_dir if self.conn.bin_dir else ' on PATH'}",
            "install the PostgreSQL client (Debian: postgresql-client) or set bin_dir",
        )

    def _map_error(self, exc: BaseException, database: str) -> VaultflowError:
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
                             "connection reset", "the database system is starting up",
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
        """The cluster's next transaction id and every sequence's last value.

        Any committed write anywhere in the cluster (DDL included) takes a transaction id,
        and sequences move without one, so equal fingerprints mean nothing changed. The
        statistics counters (pg_stat_user_tables) are not used: they are flushed
        asynchronously and can lag a commit by seconds, which would make a skip unsafe.
        """
        with self._connect() as c:
            row = c.execute(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text, "
                "(SELECT coalesce(string_agg(format('%I.%I=%s', schemaname, sequencename, last_value), ','"
                " ORDER BY schemaname, sequencename), '') FROM pg_sequences)").fetchone()
        assert row is not None
        digest = hashlib.sha256(str(row[1]).encode()).hexdigest()[:16]
        return f"pg:xid={row[0]}:seq={digest}"

    def table_stats(self, *, checksums: bool = True) -> list[TableStats]:
        with self._connect() as c:
            return _table_stats(c, checksums)

    # -- dump ------------------------------------------------------------------------

    @contextmanager
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None
    ) -> Iterator[DumpSession]:
        c = self._connect(autocommit=False)
        try:
            server_major, server_version = self._server_version(c)
            versions = self._check_tools(server_major, server_version)
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = c.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            snapshot = str(row[0])
            argv = [self._tool("pg_dump"), "--format=custom", "--compress=0",
                    f"--snapshot={snapshot}", *self._conn_args(self.conn.database)]
            session_tables: list[TableStats] = []
            stats_error: list[BaseException] = []

            def collect_stats() -> None:
                try:
                    session_tables.extend(_table_stats(c, table_checksums))
                except BaseException as exc:  # surfaced after the dump
                    stats_error.append(exc)

            with ToolProcess(argv, env=self._tool_env(), stdout=subprocess.PIPE,
                             timeout=timeout) as proc:
                stats = threading.Thread(target=collect_stats, name="vf-pg-stats", daemon=True)
                stats.start()
                session = DumpSession(stream=proc.stdout, stream_name="dump", format=DUMP_FORMAT,
                                      versions=versions)
                yield session
                # The caller has read to EOF; the tool's verdict decides.
                code = proc.wait()
                stats.join()
                if code != 0:
                    raise self._tool_failure("pg_dump", proc, timeout)
                if stats_error:
                    err = stats_error[0]
                    raise err if isinstance(err, VaultflowError) else self._map_error(
                        err, self.conn.database)
                session.tables = session_tables
        finally:
            c.close()

    def _tool_failure(self, tool: str, proc: ToolProcess, timeout: float | None) -> VaultflowError:
        if proc.timed_out:
            return TransientError(
                f"{tool} for {self.describe()} ran past its {timeout:.0f} s deadline and was killed",
                "raise the timeout or look at the server's load",
            )
        line = proc.last_error_line()
        low = line.lower()
        stderr = proc.stderr_text().lower()
        if ("server version" in low and "version mismatch" in stderr) or "unsupported version" in stderr:
            return ToolVersionMismatch(
                f"{tool} cannot work with the server at {self.server_label()}: {line}",
                "install a matching PostgreSQL client or set bin_dir",
            )
        mapped = self._map_error(RuntimeError(line), self.conn.database)
        if type(mapped) is not VaultflowError:
            return mapped
        return ToolFailed(f"{tool} failed for {self.describe()}: {line[:300]}")

    # -- restore ---------------------------------------------------------------------

    def _database_exists(self, admin: psycopg.Connection[Any], name: str) -> bool:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def has_user_objects(self) -> bool:
        with self._connect() as c:
            row = c.execute(_USER_OBJECT_COUNT).fetchone()
        return bool(row and row[0])

    def restore(
        self, fmt: str, write_stream: StreamWriter, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False,
    ) -> None:
        if fmt != DUMP_FORMAT:
            raise InputError(
                f"a {fmt} stream cannot be restored into PostgreSQL",
                "restore it into an engine of its own kind",
            )
        target = self.conn.database
        with self._connect(self.conn.maintenance_database) as admin:
            exists = self._database_exists(admin, target)
            self._check_tools(*self._server_version(admin))
        if exists and not replace and self.has_user_objects():
            raise TargetNotEmpty(
                f"database {target!r} on {self.server_label()} already has tables",
                "restore into a new database name, or pass --replace to swap it out",
            )
        staging = f"vf_restore_{os.urandom(6).hex()}"
        with self._connect(self.conn.maintenance_database) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(staging)))
        try:
            argv = [self._tool("pg_restore"), "--exit-on-error", *self._conn_args(staging)]
            if no_owner:
                argv += ["--no-owner", "--no-acl"]
            with ToolProcess(argv, env=self._tool_env(), stdin=subprocess.PIPE,
                             timeout=timeout) as proc:
                try:
                    write_stream(proc.stdin)
                    proc.stdin.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # pg_restore stopped early; its own error is reported below
                code = proc.wait()
                if code != 0:
                    raise self._tool_failure("pg_restore", proc, timeout)
            self._swap_in(staging, target, exists)
        except BaseException:
            self._drop_quietly(staging)
            raise

    def _swap_in(self, staging: str, target: str, exists: bool) -> None:
        ident = sql.Identifier
        with self._connect(self.conn.maintenance_database) as admin:
            if exists:
                old = f"vf_old_{os.urandom(6).hex()}"
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (target,))
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(target), ident(old)))
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(staging), ident(target)))
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(old)))
            else:
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(staging), ident(target)))

    def _drop_quietly(self, name: str) -> None:
        try:
            with self._connect(self.conn.maintenance_database) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except VaultflowError:
            pass


def _table_stats(c: psycopg.Connection[Any], checksums: bool) -> list[TableStats]:
    """Row counts and order-independent checksums: the sum of a 64-bit hash of each row's text.

    hashtextextended is PostgreSQL's own 64-bit text hash (several times cheaper than md5);
    the sum is a numeric, so it never overflows, and row order does not matter.
    """
    tables = c.execute(_USER_TABLES).fetchall()
    out: list[TableStats] = []
    for schema, name in tables:
        ident = sql.Identifier(schema, name)
        if checksums:
            query = sql.SQL(
                "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)"
                " FROM {} AS t").format(ident)
        else:
            query = sql.SQL("SELECT count(*), NULL FROM {}").format(ident)
        row = c.execute(query).fetchone()
        assert row is not None
        out.append(TableStats(schema=schema, name=name, rows=int(row[0]),
                              checksum=f"h64sum:{row[1]}" if checksums else None))
    return out
