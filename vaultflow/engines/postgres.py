"""PostgreSQL: `pg_dump -Fc -Z0` in an exported snapshot, `pg_restore` from a stream."""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import IO, Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from vaultflow.engines.base import (
    GLOBALS_STREAM,
    DatabaseEngine,
    DumpSession,
    RowTap,
    StreamReader,
    StreamSource,
)
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
from vaultflow.repository.manifest import StreamManifest, TableStats

_log = logging.getLogger("vaultflow.postgres")

LEGACY_FORMAT = "pg_dump-custom"  # one whole-database archive (format of the first release)
SCHEMA_FORMAT = "pg_dump-custom-schema"  # schema-only archive: pre-data and post-data sections
TABLE_FORMAT = "pg-copy-text"  # one table's rows, COPY text format
DATA_EXTRA_FORMAT = "pg_dump-custom-data-extra"  # sequence values and large objects
GLOBALS_FORMAT = "pg_dumpall-globals-sql"  # roles and tablespaces, pg_dumpall --globals-only
_ORDER_BY_PK_MAX_BYTES = 16 * 2**30
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")

_USER_TABLES = """
SELECT n.nspname, c.relname, pg_total_relation_size(c.oid),
       (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''),
       (SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = c.oid AND i.indisprimary)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

# Per-table change counters. Rows change only through inserts, updates and deletes (all
# counted) or a new relfilenode (TRUNCATE, VACUUM FULL, CLUSTER, rewriting ALTER TABLE);
# the column list catches DDL that changes what COPY writes without rewriting. The server's
# start time and the database's statistics reset time are part of it, because a restart
# after a crash or pg_stat_reset() sets the counters back.
_TABLE_COUNTERS = """
SELECT s.schemaname, s.relname,
       concat_ws(':', extract(epoch FROM pg_postmaster_start_time()),
                 (SELECT extract(epoch FROM stats_reset) FROM pg_stat_database WHERE datname = current_database()),
                 c.relfilenode, s.n_tup_ins, s.n_tup_upd, s.n_tup_del,
                 md5(coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ','
                                              ORDER BY a.attnum)
                               FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                               AND NOT a.attisdropped), '')))
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
"""

# Sessions that may hold table counters not yet flushed to the cumulative statistics: a
# backend flushes when it goes idle, at most once a second, and otherwise within 10 s.
_UNSETTLED_SESSIONS = """
SELECT count(*) FILTER (WHERE state <> 'idle'),
       count(*) FILTER (WHERE state = 'idle' AND state_change > now() - interval '11 seconds')
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type <> 'autovacuum worker' AND application_name <> 'vaultflow'
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

    def table_stats(self, *, checksums: bool = True) -> list[TableStats]:
        """Row count and checksum of every user table, read the way a backup reads it.

        The checksum is the BLAKE3 of the table's rows in COPY text format, in the order a
        backup streams them (primary key, else heap order), so a restored copy must match
        the statistics its snapshot recorded byte for byte.
        """
        with self._connect() as c:
            tables = _user_tables(c, self.conn.database, None, None, _ORDER_BY_PK_MAX_BYTES)
        out = []
        for t in tables:
            with self._copy_out(t, snapshot=None, timeout=None) as stream:
                tap = RowTap()
                for block in iter(lambda: stream.read(1 << 20), b""):
                    tap(block)
            out.append(tap.stats(t.schema, t.name))
        return sorted(out, key=lambda t: t.qualified)

    # -- dump ------------------------------------------------------------------------

    @contextmanager
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        previous: dict[str, str] | None = None,
    ) -> Iterator[DumpSession]:
        """Sources, all in one exported snapshot: the schema (a schema-only pg_dump archive),
        one COPY stream per table, and the rest of the data section (sequence values, large
        objects) as a data-only archive without table data.

        Include/exclude globs (schema.table) choose whose rows are backed up; the schema is
        always complete, so a restore recreates every table.

        `previous` maps schema.table to the change counters a parent snapshot recorded. A
        table whose counters equal them both just before and just after the snapshot was
        exported, with no session holding unflushed counters, has not changed since the
        parent: it gets no source and is listed in `unchanged`.
        """
        before, settled = self._table_counters(settle=12.0 if previous else 0.0)
        c = self._connect(autocommit=False)
        try:
            server_major, server_version = self._server_version(c)
            versions = self._check_tools(server_major, server_version)
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = c.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            snapshot = str(row[0])
            after: dict[str, str] = {}
            if previous and settled:
                after, settled = self._table_counters()
            tables = _user_tables(c, self.conn.database, include_tables, exclude_tables, _ORDER_BY_PK_MAX_BYTES)
            base = [self._tool("pg_dump"), f"--snapshot={snapshot}", "--format=custom", "--compress=0"]
            schema_argv = [*base, "--schema-only", *self._conn_args(self.conn.database)]
            # Every table's rows come as their own stream; what the data section has besides
            # (sequence values, large objects) comes from one more pg_dump. Names are quoted
            # so that pattern characters in them match literally.
            exclude_rows = [f"--exclude-table-data={_quoted_pattern(t.schema)}.{_quoted_pattern(t.name)}"
                            for t in _user_tables(c, self.conn.database, None, None, _ORDER_BY_PK_MAX_BYTES)]
            extra_argv = [*base, "--data-only", *exclude_rows, *self._conn_args(self.conn.database)]
            # pg_dump keeps materialized view contents out of both sections we take; like a
            # whole-database restore, ours refreshes the ones that were populated.
            populated = [list(r) for r in c.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'm' AND c.relispopulated ORDER BY c.oid").fetchall()]
            sources = [StreamSource("schema", SCHEMA_FORMAT,
                                    functools.partial(self._tool_stream, "pg_dump", schema_argv, timeout),
                                    meta={"refresh_matviews": json.dumps(populated)})]
            unchanged: list[str] = []
            for t in tables:
                qualified = f"{t.schema}.{t.name}"
                counters = before.get(qualified)
                if (previous and settled and counters is not None and previous.get(qualified) == counters
                        and after.get(qualified) == counters):
                    unchanged.append(qualified)  # not read: the parent's stream is carried over
                    continue
                meta = {"schema": t.schema, "table": t.name, "columns": json.dumps(t.columns), "order": t.order}
                if counters is not None:
                    meta["counters"] = counters
                sources.append(StreamSource(f"table/{qualified}", TABLE_FORMAT,
                                            functools.partial(self._copy_out, t, snapshot, timeout),
                                            meta=meta, table=(t.schema, t.name)))
            sources.append(StreamSource("data-extra", DATA_EXTRA_FORMAT,
                                        functools.partial(self._tool_stream, "pg_dump", extra_argv, timeout)))
            yield DumpSession(sources=sources, versions=versions, unchanged=unchanged)
        finally:
            c.close()

    def _table_counters(self, *, settle: float = 0.0) -> tuple[dict[str, str], bool]:
        """Per-table change counters, and whether they can be trusted to be complete.

        Counters read before the snapshot export are always safe to record: a change they
        miss is in the snapshot, and only makes the next incremental read that table. To
        decide that a table is unchanged they must also be complete: no other session of
        the database may be working or in a transaction, and none may have gone idle in
        the last 11 s (sessions flush their counters within seconds of going idle); those
        are waited for up to `settle` seconds.
        """
        deadline = time.monotonic() + settle
        with self._connect() as c:
            # Before PostgreSQL 15, sessions reported counters through a lossy collector;
            # and on a standby, replay changes rows without moving them.
            recovery = c.execute("SELECT pg_is_in_recovery()").fetchone()
            usable = c.info.server_version >= 150000 and not (recovery and recovery[0])
            while True:
                row = c.execute(_UNSETTLED_SESSIONS).fetchone()
                assert row is not None
                busy, recently_idle = int(row[0]), int(row[1])
                complete = usable and not busy and not recently_idle
                if complete or busy or not usable or time.monotonic() >= deadline:
                    counters = {f"{schema}.{name}": value for schema, name, value in c.execute(_TABLE_COUNTERS)}
                    return counters, complete
                time.sleep(1.0)

    @contextmanager
    def _tool_stream(self, tool: str, argv: list[str], timeout: float | None) -> Iterator[IO[bytes]]:
        with ToolProcess(argv, env=self._tool_env(), stdout=subprocess.PIPE, timeout=timeout) as proc:
            yield proc.stdout
            if proc.wait() != 0:
                raise self._tool_failure(tool, proc, timeout)

    def _copy_out(self, t: TableInfo, snapshot: str | None, timeout: float | None) -> AbstractContextManager[IO[bytes]]:
        """A table's rows as COPY text, via psql (its big buffered writes beat per-row reads)."""
        query = sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(col) for col in t.columns) if t.columns else sql.SQL("*"),
            sql.Identifier(t.schema, t.name),
            sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(sql.Identifier(k) for k in t.pk))
            if t.order == "pk" else sql.SQL(""),
        ).as_string(None)
        argv = [self._tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *self._conn_args(self.conn.database)]
        if snapshot:
            argv += ["-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                     "-c", f"SET TRANSACTION SNAPSHOT '{snapshot}'"]
        argv += ["-c", "SET synchronize_seqscans = off", "-c", query]
        if snapshot:
            argv += ["-c", "COMMIT"]
        return self._tool_stream("psql", argv, timeout)

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

    # -- server-wide objects ----------------------------------------------------------

    def globals_source(self, *, passwords: bool = False) -> StreamSource:
        """Roles, their memberships and settings, and tablespaces: pg_dumpall --globals-only,
        with --no-role-passwords unless `passwords`."""
        argv = [self._tool("pg_dumpall"), "--globals-only",
                *([] if passwords else ["--no-role-passwords"]),
                "--host", self.conn.host, "--port", str(self.conn.port), "--username", self.conn.user,
                "--no-password", "--database", self.conn.maintenance_database]
        return StreamSource(GLOBALS_STREAM, GLOBALS_FORMAT,
                            functools.partial(self._tool_stream, "pg_dumpall", argv, None),
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
            row = c.execute(_USER_OBJECT_COUNT).fetchone()
        return bool(row and row[0])

    def restore(
        self, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
        tables: list[str] | None = None,
    ) -> None:
        formats = {s.format for s in streams}
        if not formats <= {LEGACY_FORMAT, SCHEMA_FORMAT, TABLE_FORMAT, DATA_EXTRA_FORMAT}:
            raise InputError(f"a snapshot with {', '.join(sorted(formats))} streams cannot be restored into "
                             "PostgreSQL", "restore it into an engine of its own kind")
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
            self.with_database(staging)._load(streams, read, timeout=timeout, no_owner=no_owner, jobs=jobs,
                                              tables=tables)
            self._swap_in(staging, target, exists)
        except BaseException:
            self._drop_quietly(staging)
            raise

    def _load(self, streams: list[StreamManifest], read: StreamReader, *, timeout: float | None, no_owner: bool,
              jobs: int, tables: list[str] | None) -> None:
        owner_flags = ["--no-owner", "--no-acl"] if no_owner else []
        restore = [self._tool("pg_restore"), "--exit-on-error", *owner_flags, *self._conn_args(self.conn.database)]
        by_format: dict[str, list[StreamManifest]] = {}
        for s in streams:
            by_format.setdefault(s.format, []).append(s)
        for legacy in by_format.get(LEGACY_FORMAT, []):
            self._feed("pg_restore", restore, legacy, read, timeout)
        schema = by_format.get(SCHEMA_FORMAT, [])
        for s in schema:
            self._feed("pg_restore", [*restore, "--section=pre-data"], s, read, timeout)
        table_streams = by_format.get(TABLE_FORMAT, [])
        if tables is not None:
            wanted = set(tables)
            unknown = wanted - {f"{s.meta['schema']}.{s.meta['table']}" for s in table_streams}
            if unknown:
                raise InputError(f"the snapshot has no rows of table(s) {', '.join(sorted(unknown))}",
                                 "give tables as schema.name, as vaultflow lists them")
            table_streams = [s for s in table_streams if f"{s.meta['schema']}.{s.meta['table']}" in wanted]
        # Largest first, so one big table does not start last and run alone at the end.
        table_streams.sort(key=lambda s: s.size, reverse=True)
        with ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="vf-load") as pool:
            futures = [pool.submit(self._copy_in, s, read, timeout) for s in table_streams]
            try:
                for fut in futures:
                    fut.result()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        for s in by_format.get(DATA_EXTRA_FORMAT, []):
            self._feed("pg_restore", restore, s, read, timeout)
        for s in schema:
            if tables is None:
                self._feed("pg_restore", [*restore, "--section=post-data"], s, read, timeout)
            else:
                # A subset can lack the rows a foreign key of a restored table points at; such
                # constraints are left out (and named) instead of failing the whole restore.
                lenient = [a for a in restore if a != "--exit-on-error"]
                self._feed("pg_restore", [*lenient, "--section=post-data"], s, read, timeout, lenient=True)
            self._refresh_matviews(json.loads(s.meta.get("refresh_matviews", "[]")))

    def _refresh_matviews(self, names: list[list[str]]) -> None:
        """Refresh in creation order, retrying those that depend on a later one."""
        pending = [sql.Identifier(schema, name) for schema, name in names]
        with self._connect() as c:
            while pending:
                failed = []
                for ident in pending:
                    try:
                        c.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(ident))
                    except psycopg.errors.ObjectNotInPrerequisiteState:
                        failed.append(ident)
                if len(failed) == len(pending):
                    raise ToolFailed(f"cannot refresh materialized view {failed[0].as_string(None)} in "
                                     f"{self.describe()}", "check the views it depends on")
                pending = failed

    def _copy_in(self, stream: StreamManifest, read: StreamReader, timeout: float | None) -> None:
        columns = json.loads(stream.meta.get("columns", "[]"))
        query = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(stream.meta["schema"], stream.meta["table"]),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns)).as_string(None)
        argv = [self._tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *self._conn_args(self.conn.database),
                "-c", query]
        self._feed("psql", argv, stream, read, timeout)

    def _feed(self, tool: str, argv: list[str], stream: StreamManifest, read: StreamReader,
              timeout: float | None, *, lenient: bool = False) -> None:
        with ToolProcess(argv, env=self._tool_env(), stdin=subprocess.PIPE, timeout=timeout) as proc:
            try:
                read(stream, proc.stdin)
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the tool stopped early; its own error is reported below
            code = proc.wait()
            if lenient and code == 1 and "errors ignored on restore" in proc.stderr_text():
                _log.warning("%s: some objects of stream %r were not restored: %s", self.describe(), stream.name,
                             proc.last_error_line())
                return
            if code != 0:
                failure = self._tool_failure(tool, proc, timeout)
                # Keep the class: a restore cut off by a refused connection is worth a retry.
                raise type(failure)(f"restoring stream {stream.name!r}: {failure.what}", failure.fix) from None

    def _swap_in(self, staging: str, target: str, exists: bool) -> None:
        ident = sql.Identifier
        with self._connect(self.conn.maintenance_database) as admin:
            if exists:
                old = f"vf_old_{os.urandom(6).hex()}"
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (target,))
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(target), ident(old)))
                try:
                    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(staging), ident(target)))
                except psycopg.Error:
                    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(old), ident(target)))
                    raise
                try:
                    admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(old)))
                except psycopg.Error as exc:  # the restore itself succeeded; say what is left over
                    _log.warning("restored %s, but could not drop the previous copy %s: %s", self.describe(),
                                 old, str(exc).strip().splitlines()[0])
            else:
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(staging), ident(target)))

    def _drop_quietly(self, name: str) -> None:
        try:
            with self._connect(self.conn.maintenance_database) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except VaultflowError:
            pass


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: list[str]
    pk: list[str]
    order: str  # "pk" or "heap"


def _user_tables(c: psycopg.Connection[Any], database: str, include: list[str] | None,
                 exclude: list[str] | None, order_limit: int) -> list[TableInfo]:
    """Every user table with rows of its own (leaf partitions included), filtered by globs.

    Rows are streamed in primary-key order when the table has a primary key and is smaller
    than `order_limit` bytes (sorting a bigger one costs more than the incrementals save);
    otherwise in heap order.
    """
    out = []
    for schema, name, size, columns, pk in c.execute(_USER_TABLES).fetchall():
        if include and not any(_glob_match(p, schema, name) for p in include):
            continue
        if exclude and any(_glob_match(p, schema, name) for p in exclude):
            continue
        order = "pk" if pk and size < order_limit else "heap"
        out.append(TableInfo(schema=schema, name=name, columns=list(columns or []), pk=list(pk or []),
                             order=order))
    if (include or exclude) and not out:
        raise InputError(f"no table of database {database!r} matches the include/exclude patterns",
                         "check the globs (schema.table, or table for any schema)")
    return out


def _quoted_pattern(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _glob_match(pattern: str, schema: str, name: str) -> bool:
    return fnmatch.fnmatchcase(f"{schema}.{name}" if "." in pattern else name, pattern)


def export_plain_sql(streams: list[StreamManifest], read: StreamReader, out: IO[bytes],
                     bin_dir: str | None = None) -> None:
    """Write a per-table snapshot as one plain SQL script that `psql -f` restores.

    The schema's pre-data section, then each table's rows as a COPY block, then sequence
    values and large objects, then the post-data section (indexes, constraints, triggers,
    materialized view refreshes); pg_restore turns the archive streams into SQL.
    """
    tool = PostgresEngine(PostgresConnection(bin_dir=bin_dir))._tool("pg_restore")
    schema = [s for s in streams if s.format == SCHEMA_FORMAT]
    extra = [s for s in streams if s.format == DATA_EXTRA_FORMAT]

    def to_sql(stream: StreamManifest, *flags: str) -> None:
        with ToolProcess([tool, "-f", "-", *flags], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
            failures: list[BaseException] = []
            feeder = threading.Thread(target=_feed_and_close, args=(read, stream, proc.stdin, failures), daemon=True)
            feeder.start()
            for block in iter(lambda: proc.stdout.read(1 << 20), b""):
                out.write(block)
            feeder.join()
            if failures:
                raise failures[0]
            if proc.wait() != 0:
                raise ToolFailed(f"pg_restore could not convert stream {stream.name!r} to SQL: "
                                 f"{proc.last_error_line()}")

    for s in schema:
        to_sql(s, "--section=pre-data")
    for s in streams:
        if s.format != TABLE_FORMAT:
            continue
        columns = json.loads(s.meta.get("columns", "[]"))
        header = sql.SQL("COPY {} ({}) FROM stdin;\n").format(
            sql.Identifier(s.meta["schema"], s.meta["table"]),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns)).as_string(None)
        out.write(header.encode())
        read(s, out)
        out.write(b"\\.\n\n")
    for s in extra:
        to_sql(s)
    for s in schema:
        to_sql(s, "--section=post-data")
        for schema_name, name in json.loads(s.meta.get("refresh_matviews", "[]")):
            statement = sql.SQL("REFRESH MATERIALIZED VIEW {};\n").format(sql.Identifier(schema_name, name))
            out.write(statement.as_string(None).encode())


def _feed_and_close(read: StreamReader, stream: StreamManifest, sink: IO[bytes],
                    failures: list[BaseException]) -> None:
    try:
        read(stream, sink)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except BaseException as exc:  # handed to the reading thread, which raises it
        failures.append(exc)
    finally:
        try:
            sink.close()
        except OSError:
            pass
