"""PostgreSQL: `pg_dump -Fc -Z0` in an exported snapshot, `pg_restore` from a stream."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import IO, Any
from urllib.parse import quote

import numpy as np
import psycopg
from psycopg import sql

from vaultflow.engines.base import (
    GLOBALS_STREAM,
    DumpSession,
    RestoreObserver,
    RowSplitter,
    RowTap,
    ServerEngine,
    SqlAlchemyTarget,
    StreamReader,
    StreamSource,
    segment_width_of,
    segmented_table_stats,
    table_glob_match,
)
from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.database import READ_PROPERTIES, DatabaseProperties
from vaultflow.engines.postgres.patches import (
    BaseIndex,
    KeyFirstScanner,
    LineIndex,
    SegmentPatch,
    SegmentPatchPlan,
    base_part,
    build_patch,
    copy_lines,
    is_patched,
    read_rows,
)
from vaultflow.engines.process import Deadline, ToolProcess
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
from vaultflow.repository.manifest import (
    ColumnProfile,
    SchemaInventory,
    StreamManifest,
    TableProfile,
    TableStats,
)

_log = logging.getLogger("vaultflow.postgres")

LEGACY_FORMAT = "pg_dump-custom"  # one whole-database archive (format of the first release)
SCHEMA_FORMAT = "pg_dump-custom-schema"  # schema-only archive: pre-data and post-data sections
TABLE_FORMAT = "pg-copy-text"  # one table's rows, COPY text format
DATA_EXTRA_FORMAT = "pg_dump-custom-data-extra"  # sequence values and large objects
GLOBALS_FORMAT = "pg_dumpall-globals-sql"  # roles and tablespaces, pg_dumpall --globals-only
_ORDER_BY_PK_MAX_BYTES = 16 * 2**30
# Tables with a one-column integer primary key and at least SEGMENT_MIN_BYTES of heap are
# stored as key ranges of about SEGMENT_BYTES each (docs/design.md, "Table segments").
SEGMENT_BYTES = 64 * 2**20
SEGMENT_MIN_BYTES = 2 * SEGMENT_BYTES
# Segment patches (engines/segment_patch.py): a changed segment is stored as a patch on its
# base when at most this share of its rows changed since the base was read ...
PATCH_MAX_CHANGED = 0.2
PATCH_MAX_BASE_BYTES = 256 * 2**20  # ... its base is at most this big (it is read into memory) ...
PATCH_BUFFER_BYTES = 512 * 2**20  # ... and a table's changed rows fit in this much memory.
# Recorded snapshot xmins older than this many transaction ids are not compared with rows
# (carrying over and patching need them; older ones mean a read).
XMIN_MAX_AGE = 1_000_000_000
# A table of at most this many rows (by its parent's segments) has the keys of its changed
# rows collected by the segment scan (array_agg: up to 9 bytes a row in the server's memory
# if every row changed); a bigger one has its changed rows read by a second scan beside it.
KEY_COLLECT_MAX_ROWS = 16_000_000
_INTEGER_TYPES = ("smallint", "integer", "bigint")
# A restore's staging database older than this with nobody connected is an orphan of a
# killed restore (the default run deadline is 6 h).
STAGING_ORPHAN_SECONDS = 12 * 3600
_INT8_MAX = 2**63 - 1
_MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL cuts longer names
# Output settings of every COPY session, so the bytes of a row do not depend on the
# server's or the role's defaults (a carried-over segment must equal a re-read one).
_COPY_SETTINGS = ("SET datestyle = ISO, YMD; SET intervalstyle = postgres; SET extra_float_digits = 3; "
                  "SET bytea_output = hex; SET timezone = 'UTC'")
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")

# What COPY writes for a value can change without any row changing: an enum label renamed,
# an attribute added to a composite type. Every table's signature includes this.
_TYPE_SIGNATURE = """
md5(coalesce((SELECT string_agg(format('%s:%s:%s', enumtypid, enumsortorder, enumlabel), ','
                                ORDER BY enumtypid, enumsortorder) FROM pg_enum), '')
    || coalesce((SELECT string_agg(format('%s:%s:%s', a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod)),
                                   ',' ORDER BY a.attrelid, a.attnum)
                 FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid
                 WHERE t.relkind = 'c' AND a.attnum > 0 AND NOT a.attisdropped), ''))
"""

_USER_TABLES = """
SELECT n.nspname, c.relname, pg_total_relation_size(c.oid),
       (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''),
       (SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = c.oid AND i.indisprimary),
       (SELECT array_agg(format_type(a.atttypid, NULL) ORDER BY array_position(i.indkey::int2[], a.attnum))
        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = c.oid AND i.indisprimary),
       pg_table_size(c.oid),
       md5(coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ','
                                       ORDER BY a.attnum)
                     FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
           || (%(types)s))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
""".replace("%(types)s", _TYPE_SIGNATURE)

# Per-table change counters. Rows change only through inserts, updates and deletes (all
# counted) or a new relfilenode (TRUNCATE, VACUUM FULL, CLUSTER, rewriting ALTER TABLE);
# the column list and the type signature catch DDL that changes what COPY writes without
# rewriting. The server's start time and the database's statistics reset time are part of
# it, because a restart after a crash or pg_stat_reset() sets the counters back.
_TABLE_COUNTERS = """
SELECT s.schemaname, s.relname,
       concat_ws(':', extract(epoch FROM pg_postmaster_start_time()),
                 (SELECT extract(epoch FROM stats_reset) FROM pg_stat_database WHERE datname = current_database()),
                 c.relfilenode, s.n_tup_ins, s.n_tup_upd, s.n_tup_del,
                 md5(coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ','
                                              ORDER BY a.attnum)
                               FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                               AND NOT a.attisdropped), '')), (%(types)s))
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
""".replace("%(types)s", _TYPE_SIGNATURE)

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

_USER_NAMESPACE = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
"""
_NOT_EXTENSION_MEMBER = """
    NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                AND d.deptype = 'e')
"""
_INVENTORY_RELATIONS = f"""
SELECT c.relkind::text, format('%s.%s', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i', 'I') AND {_USER_NAMESPACE} AND {_NOT_EXTENSION_MEMBER}
"""
_INVENTORY_CONSTRAINTS = f"""
SELECT format('%s.%s.%s (%s)', n.nspname, c.relname, k.conname, k.contype)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_NAMESPACE} AND {_NOT_EXTENSION_MEMBER}
"""
_INVENTORY_COLUMNS = f"""
SELECT n.nspname, c.relname, a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND {_USER_NAMESPACE} AND {_NOT_EXTENSION_MEMBER}
ORDER BY n.nspname, c.relname, a.attnum
"""
# Unique keys usable as expectations: primary keys and unique indexes over plain columns,
# without a predicate (NULLs aside, which uniqueness expectations ignore too).
_INVENTORY_UNIQUE_KEYS = f"""
SELECT n.nspname, c.relname,
       (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(att, ord)
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.att)
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND i.indisunique AND i.indpred IS NULL AND NOT (0 = ANY(i.indkey::int2[]))
  AND {_USER_NAMESPACE} AND {_NOT_EXTENSION_MEMBER}
ORDER BY 1, 2, i.indisprimary DESC, i.indexrelid
"""
_INVENTORY_KINDS = {"r": "tables", "p": "tables", "v": "views", "m": "views", "S": "sequences",
                    "i": "indexes", "I": "indexes"}


def side_database_name(prefix: str, target: str) -> str:
    """`<prefix>_<target>`, cut to 63 bytes: a staging or replaced copy names the database it
    belongs to, so whoever finds one left over knows which restore made it."""
    return f"{prefix}_{target}".encode()[:_MAX_IDENTIFIER_BYTES].decode("utf-8", "ignore")


def _schema_inventory(c: psycopg.Connection[Any]) -> SchemaInventory:
    """The database's user schema objects, read through `c` (inside its snapshot, if any)."""
    found: dict[str, list[str]] = {kind: [] for kind in _INVENTORY_KINDS.values()}
    for relkind, name in c.execute(_INVENTORY_RELATIONS).fetchall():
        found[_INVENTORY_KINDS[relkind]].append(name)
    constraints = [r[0] for r in c.execute(_INVENTORY_CONSTRAINTS).fetchall()]
    columns: dict[tuple[str, str], list[ColumnProfile]] = {}
    for schema, table, name, type_, nullable in c.execute(_INVENTORY_COLUMNS).fetchall():
        columns.setdefault((schema, table), []).append(ColumnProfile(name=name, type=type_, nullable=nullable))
    keys: dict[tuple[str, str], list[list[str]]] = {}
    for schema, table, cols in c.execute(_INVENTORY_UNIQUE_KEYS).fetchall():
        if cols and list(cols) not in keys.setdefault((schema, table), []):
            keys[(schema, table)].append(list(cols))
    profiles = [TableProfile(schema=schema, name=table, columns=cols, unique_keys=keys.get((schema, table), []))
                for (schema, table), cols in sorted(columns.items())]
    return SchemaInventory(**{kind: sorted(names) for kind, names in found.items()},
                           constraints=sorted(constraints), profiles=profiles)


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
        widths = {t.qualified: w for t in like or [] if (w := segment_width_of(t)) is not None}
        with self._connect() as c:
            tables_info = _user_tables(c, self.conn.database, None, None, _ORDER_BY_PK_MAX_BYTES)
            if tables is not None:
                wanted = set(tables)
                tables_info = [t for t in tables_info if t.qualified in wanted]
            segments = {t.qualified: [seg.number for seg in self._segment_scan(c, t, widths[t.qualified], [])]
                        for t in tables_info if t.qualified in widths and t.segmentable}

        def read(t: TableInfo) -> TableStats:
            if t.qualified not in segments:
                return self._tap(t, None).stats(t.schema, t.name)
            width = widths[t.qualified]
            parts = []
            for number in segments[t.qualified]:
                tap = self._tap(t, KeyRange(number, width))
                parts.append((number, tap.rows, tap.stats(t.schema, t.name).checksum or ""))
            return segmented_table_stats(t.schema, t.name, width, parts)

        # Biggest first, so that one big table does not start last and run alone.
        tables_info.sort(key=lambda t: t.size, reverse=True)
        with ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="vf-stats") as pool:
            out = list(pool.map(read, tables_info))
        return sorted(out, key=lambda t: t.qualified)

    def loaded_table_stats(self, table: str, streams: list[StreamManifest]) -> TableStats | None:
        """Reads the table in heap order, without sorting and before it has indexes: a new
        table filled by one session at a time holds its rows in the order they were loaded,
        which is the order the streams hold them in. A segmented table's rows are split
        into its segments by the row counts the streams recorded."""
        first = streams[0].meta
        segmented = "segment" in first
        if segmented and not all("rows" in s.meta and "checksum" in s.meta for s in streams):
            return None
        as_loaded = TableInfo(schema=first["schema"], name=first["table"],
                              columns=json.loads(first.get("columns", "[]")), pk=[], order="heap")
        split = RowSplitter([int(s.meta["rows"]) for s in streams] if segmented else [])
        with self._copy_out(as_loaded, None, Deadline.start(None)) as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                split(block)
        if not segmented:
            return split.taps[0].stats(first["schema"], first["table"])
        numbers = [int(s.meta["segment"]) for s in streams]
        parts = [(number, tap.rows, tap.stats("", "").checksum or "")
                 for number, tap in zip(numbers, split.taps, strict=False)]
        if len(split.taps) > len(numbers) and split.taps[-1].rows:  # rows beyond what the streams held
            parts.append((max(numbers) + 1, split.taps[-1].rows, ""))
        return segmented_table_stats(first["schema"], first["table"], int(first["segment_width"]), parts)

    def _tap(self, t: TableInfo, key_range: KeyRange | None) -> RowTap:
        tap = RowTap()
        with self._copy_out(t, None, Deadline.start(None), key_range) as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                tap(block)
        return tap

    # -- dump ------------------------------------------------------------------------

    @contextmanager
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        parent_streams: list[StreamManifest] | None = None,
    ) -> Iterator[DumpSession]:
        """Sources, all in one exported snapshot: the schema (a schema-only pg_dump archive),
        one COPY stream per table, and the rest of the data section (sequence values, large
        objects) as a data-only archive without table data.

        Include/exclude globs (schema.table) choose whose rows are backed up; the schema is
        always complete, so a restore recreates every table.

        `parent_streams` are the parent snapshot's streams. A table whose change counters
        equal the parent's both just before and just after the snapshot was exported, with
        no session holding unflushed counters, has not changed since the parent: it gets no
        source and is listed in `unchanged`. A big table with a one-column integer key is
        stored as key-range segments; a segment whose row versions (count, xmin and ctid
        sums, read in the snapshot) equal the parent's segment is listed in `carried`.
        """
        deadline = Deadline.start(timeout)
        before, settled = self._table_counters(settle=12.0 if parent_streams else 0.0)
        c = self._connect(autocommit=False)
        # One thread with its own session in the dump's snapshot reads changed rows for
        # segment patches while the backup goes on.
        speculate = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vf-changed")
        fetcher: _SnapshotSession | None = None
        try:
            server_major, server_version = self._server_version(c)
            versions = self._check_tools(server_major, server_version)
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = c.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            snapshot = str(row[0])
            fetcher = _SnapshotSession(self, snapshot)
            # The oldest transaction this snapshot may not see: every row version with an
            # older xmin was committed before it (segment patches, below).
            row = c.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8" if server_major >= 13
                            else "SELECT txid_snapshot_xmin(txid_current_snapshot())").fetchone()
            assert row is not None
            snapshot_xmin = int(row[0])
            after: dict[str, str] = {}
            if parent_streams and settled:
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
            props_row = c.execute(READ_PROPERTIES).fetchone()
            assert props_row is not None
            sources = [StreamSource("schema", SCHEMA_FORMAT,
                                    functools.partial(self._tool_stream, "pg_dump", schema_argv, deadline),
                                    meta={"refresh_matviews": json.dumps(populated),
                                          "database": DatabaseProperties.from_row(props_row).to_meta()})]
            parent_tables: dict[str, list[StreamManifest]] = {}
            for s in parent_streams or []:
                if s.format == TABLE_FORMAT and "table" in s.meta:
                    parent_tables.setdefault(f"{s.meta['schema']}.{s.meta['table']}", []).append(s)
            unchanged: list[str] = []
            carried: list[str] = []
            for t in tables:
                qualified = t.qualified
                counters = before.get(qualified)
                previous = {s.meta.get("counters") for s in parent_tables.get(qualified, [])}
                if (settled and counters is not None and previous == {counters}
                        and after.get(qualified) == counters):
                    unchanged.append(qualified)  # not read: the parent's streams are carried over
                    continue
                meta = {"schema": t.schema, "table": t.name, "columns": json.dumps(t.columns), "order": t.order}
                if counters is not None:
                    meta["counters"] = counters
                width = self._segment_width(c, t, parent_tables.get(qualified, []))
                if width is None:
                    sources.append(StreamSource(f"table/{qualified}", TABLE_FORMAT,
                                                functools.partial(self._copy_out, t, snapshot, deadline),
                                                meta=meta, table=(t.schema, t.name)))
                    continue
                parent_segments = {s.meta["segment"]: s for s in parent_tables.get(qualified, [])
                                   if s.meta.get("segment_width") == str(width)
                                   and s.meta.get("signature") == t.signature}
                bases = {n: s for n, s in parent_segments.items() if _patchable(s, t, snapshot_xmin)}
                since = min((int(s.meta["base_xmin"]) for s in bases.values()), default=None)
                # At most a few distinct marks per scan; a parent segment whose mark is left
                # out is read (or patched) instead of carried over.
                marks = sorted({int(s.meta["xmin"]) for s in parent_segments.values()
                                if _comparable(s.meta.get("xmin"), snapshot_xmin)}, reverse=True)[:4]
                # The keys of the rows changed since the bases come with the scan; for a
                # table too big for that, those rows are read at the same time through
                # another session in the same snapshot (unused if nothing is patched).
                patchable = since is not None and t.pk[0] in t.columns
                parent_rows = sum(int(s.meta.get("rows", "0")) for s in parent_segments.values())
                collect = patchable and parent_rows <= KEY_COLLECT_MAX_ROWS
                changed_rows = (speculate.submit(self._changed_rows, t, since, snapshot, deadline)
                                if since is not None and patchable and not collect else None)
                try:
                    # The scan runs in two halves of the heap at once, the second one in the
                    # changed-rows session, which is idle until the scan is done.
                    # Per segment: the rows newer than its own base, and at most how many keys
                    # of them to collect.
                    own = {int(n): (int(b.meta["base_xmin"]), int(PATCH_MAX_CHANGED * int(b.meta.get("rows", "0"))))
                           for n, b in bases.items()}
                    scans = self._segment_scan(c, t, width, sorted({*marks, *([since] if since else [])}),
                                               collect=own if collect else None,
                                               beside=None if changed_rows is not None else (speculate, fetcher))
                except BaseException:
                    if changed_rows is not None:
                        changed_rows.cancel()
                    raise
                unchanged_segments = set()
                for seg in scans:
                    old = parent_segments.get(str(seg.number))
                    if old is not None and seg.unchanged_since(old):
                        carried.append(old.name)  # no row changed since the parent read it
                        unchanged_segments.add(seg.number)
                changed_segments = [seg for seg in scans if seg.number not in unchanged_segments]
                patches: dict[int, SegmentPatchPlan] = {}
                if patchable and since is not None:
                    rows: ChangedRows = (_ScannedChangedRows(changed_rows, t, width) if changed_rows is not None
                                         else _FetchedChangedRows(speculate, fetcher, t))
                    patches = self._segment_patches(t, width, since, bases, changed_segments, rows,
                                                    snapshot, deadline)
                for seg in changed_segments:
                    key_range = KeyRange(seg.number, width)
                    segment_meta = {**meta, "segment": str(seg.number), "segment_width": str(width),
                                    "signature": t.signature, "xmin": str(snapshot_xmin),
                                    "base_xmin": str(snapshot_xmin)}
                    sources.append(StreamSource(f"table/{qualified}@{seg.number}", TABLE_FORMAT,
                                                functools.partial(self._copy_out, t, snapshot, deadline, key_range),
                                                meta=segment_meta, table=(t.schema, t.name),
                                                patch=patches.get(seg.number)))
            sources.append(StreamSource("data-extra", DATA_EXTRA_FORMAT,
                                        functools.partial(self._tool_stream, "pg_dump", extra_argv, deadline)))
            inventory = _schema_inventory(c)
            yield DumpSession(sources=sources, versions=versions, unchanged=unchanged, carried=carried,
                              inventory=inventory)
        finally:
            speculate.shutdown(wait=True, cancel_futures=True)
            if fetcher is not None:
                fetcher.close()
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

    def _segment_width(self, c: psycopg.Connection[Any], t: TableInfo, parent: list[StreamManifest]) -> int | None:
        """Keys per segment, or None to store the table whole.

        A table keeps the width its parent used (segments only carry over between equal
        widths); otherwise a table of SEGMENT_MIN_BYTES or more gets a power of two near
        span * SEGMENT_BYTES / heap bytes, so segments hold about SEGMENT_BYTES each.
        """
        if not t.segmentable:
            return None
        for s in parent:
            if "segment_width" in s.meta:
                return int(s.meta["segment_width"])
        if t.heap_bytes < SEGMENT_MIN_BYTES:
            return None
        key = sql.Identifier(t.pk[0])
        row = c.execute(sql.SQL("SELECT min({})::int8, max({})::int8 FROM {}").format(
            key, key, sql.Identifier(t.schema, t.name))).fetchone()
        if row is None or row[0] is None:
            return None
        span = int(row[1]) - int(row[0]) + 1
        pieces = max(1, -(-t.heap_bytes // SEGMENT_BYTES))
        return 1 << max(0, (-(-span // pieces) - 1).bit_length())

    def _segment_scan(self, c: psycopg.Connection[Any], t: TableInfo, width: int, marks: list[int], *,
                      collect: dict[int, tuple[int, int]] | None = None,
                      beside: tuple[ThreadPoolExecutor, _SnapshotSession | None] | None = None
                      ) -> list[SegmentScan]:
        """Every non-empty segment with its row count and, for each mark (a 64-bit
        transaction id), how many of its rows have an xmin that is not older; one scan in
        the dump's snapshot. With `collect` (segment: (its own mark, a cap)), also how many
        of a segment's rows are not older than its own mark, and their keys where they are
        at most the cap (an absolute cap, so that every part of a divided scan agrees).

        `beside`: a thread and a session in the same snapshot; on PostgreSQL 14 or later a
        big table's heap is then scanned in two halves at once (TID ranges), which halves
        the scan's time where the server has a core to spare (the first read after many
        updates, which sets hint bits and prunes pages, costs the most)."""
        key = sql.SQL("{}::int8").format(sql.Identifier(t.pk[0]))

        def newer(mark: int) -> sql.Composable:
            return sql.SQL("age <= age({}::xid)").format(sql.Literal(str(mark % 2**32)))

        counts = [sql.SQL(", count(*) FILTER (WHERE {})").format(newer(m)) for m in marks]
        if collect:
            lo, hi = min(collect), max(collect)
            marks_by_segment = "{" + ",".join(str(collect[n][0] % 2**32) if n in collect else "NULL"
                                              for n in range(lo, hi + 1)) + "}"
            own = sql.SQL("age <= age(({}::xid[])[segment - {} + 1])").format(
                sql.Literal(marks_by_segment), sql.Literal(lo))
            caps = json.dumps({str(n): cap for n, (_, cap) in collect.items()})
            counts.append(sql.SQL(
                ", count(*) FILTER (WHERE {own}), CASE WHEN count(*) FILTER (WHERE {own}) <= "
                "coalesce(({caps}::jsonb ->> segment::text)::int8, -1) "
                "THEN coalesce(array_agg(key) FILTER (WHERE {own}), '{{}}') END"
            ).format(own=own, caps=sql.Literal(caps)))
        # age(xmin) once per row (OFFSET 0 keeps the subquery from being flattened into
        # one age() per FILTER). No ORDER BY: the planner cannot tell there are few groups,
        # and with a sort anywhere in the plan it sorts every row (to disk) instead of
        # hashing them; the few result rows are sorted here.
        def query(pages: tuple[int, int] | None) -> sql.Composed:
            where: sql.Composable = sql.SQL("")
            if pages is not None:
                where = sql.SQL(" WHERE ctid >= {}::tid AND ctid < {}::tid").format(
                    sql.Literal(f"({pages[0]},0)"), sql.Literal(f"({pages[1]},0)"))
            return sql.SQL("SELECT segment, count(*){counts} FROM (SELECT {number} AS segment, {key} AS key, "
                           "age(xmin) AS age FROM {table}{where} OFFSET 0) AS rows GROUP BY 1").format(
                number=_segment_number(key, width), key=key, counts=sql.Composed(counts),
                table=sql.Identifier(t.schema, t.name), where=where)

        def run(conn: psycopg.Connection[Any], q: sql.Composed) -> list[tuple[Any, ...]]:
            conn.execute("SET enable_sort = off")
            try:
                return list(conn.execute(q).fetchall())
            finally:
                conn.execute("RESET enable_sort")

        halves = None
        if beside is not None and beside[1] is not None and c.info.server_version >= 140000 \
                and t.heap_bytes >= SEGMENT_MIN_BYTES:
            row = c.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int8",
                            (sql.Identifier(t.schema, t.name).as_string(c),)).fetchone()
            pages = int(row[0]) if row else 0
            halves = (0, pages // 2, 2**32 - 1) if pages >= 2 else None
        if halves is None:
            rows = run(c, query(None))
        else:
            executor, session = beside  # type: ignore[misc]
            assert session is not None
            other = executor.submit(lambda: run(session.connection(), query((halves[1], halves[2]))))
            try:
                rows = run(c, query((halves[0], halves[1])))
            finally:
                rows_other = other.result()
            rows = _merge_scan_rows(rows + rows_other, 1 + len(marks) + (1 if collect else 0), bool(collect))
        n = len(marks)
        return [SegmentScan(int(r[0]), int(r[1]), dict(zip(marks, (int(x) for x in r[2:2 + n]), strict=True)),
                            changed_own=int(r[2 + n]) if collect else None,
                            changed_keys=r[3 + n] if collect else None)
                for r in sorted(rows)]

    def _changed_rows(self, t: TableInfo, since: int, snapshot: str, deadline: Deadline) -> bytes | None:
        """The table's rows whose xmin is not older than `since`, in key order, read in the
        dump's snapshot with one scan; None if they are more than PATCH_BUFFER_BYTES."""
        out = bytearray()
        try:
            with self._copy_out(t, snapshot, deadline, where=_xmin_not_older(since)) as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    out += block
                    if len(out) > PATCH_BUFFER_BYTES:
                        raise _TooMuchChanged
        except _TooMuchChanged:
            return None
        return bytes(out)

    def _segment_patches(self, t: TableInfo, width: int, since: int, bases: dict[str, StreamManifest],
                         changed: list[SegmentScan], rows: ChangedRows, snapshot: str,
                         deadline: Deadline) -> dict[int, SegmentPatchPlan]:
        """Patch plans for the changed segments that few rows changed in since their base.

        Every row version with an xmin older than the base's snapshot xmin was visible to
        the base and is unchanged since (PostgreSQL never changes a row in place), so the
        base plus the rows whose xmin is not older (`rows`, read in the dump's snapshot, in
        key order) gives the segment now, once the base rows that are gone are dropped. The
        segment's row count says whether any are gone.
        """
        candidates: dict[int, tuple[StreamManifest, int]] = {}
        for seg in changed:
            base = bases.get(str(seg.number))
            changed_rows = seg.changed[since] if seg.changed_own is None else seg.changed_own
            if base is not None and changed_rows <= PATCH_MAX_CHANGED * seg.rows and rows.covers(seg):
                candidates[seg.number] = (base, seg.rows)
        if not candidates:
            return {}
        rows.expect([seg for seg in changed if seg.number in candidates])
        plans = {}
        for number, (base, rows_now) in candidates.items():
            base_rows = base.meta.get("base_rows" if is_patched(base.meta) else "rows")
            build = functools.partial(self._build_segment_patch, t, KeyRange(number, width),
                                      functools.partial(rows.of_segment, number), rows_now,
                                      None if base_rows is None else int(base_rows), snapshot, deadline)
            plans[number] = SegmentPatchPlan(base=base, build=build, meta={"base_xmin": base.meta["base_xmin"]})
        return plans

    def _build_segment_patch(self, t: TableInfo, key_range: KeyRange, changed_rows: Callable[[], bytes | None],
                             rows_now: int, base_rows: int | None, snapshot: str, deadline: Deadline,
                             base: bytes | bytearray) -> SegmentPatch | None:
        """The patch turning `base` into the segment now, or None (read it whole)."""
        key_index = t.columns.index(t.pk[0])
        changed = changed_rows()
        if changed is None:
            return None
        changed_lines = copy_lines(changed, key_index)
        if changed_lines is None or (base and not base.endswith(b"\n")):
            return None
        index: BaseIndex | None = KeyFirstScanner(base, base_rows) if key_index == 0 else None
        if index is None:
            if (lines := copy_lines(base, key_index)) is None:
                return None
            index = LineIndex(base, lines)
        built = build_patch(base, index, changed, changed_lines)
        if built.rows > rows_now:
            # Base rows were deleted (or moved to another key): find them among the keys now.
            lines = index.lines if isinstance(index, LineIndex) else copy_lines(base, key_index)
            keys_only = replace(t, columns=[t.pk[0]])
            with self._copy_out(keys_only, snapshot, deadline, key_range) as stream:
                now = copy_lines(stream.read(), 0)
            if lines is None or now is None:
                return None
            gone = np.setdiff1d(lines.keys, now.keys, assume_unique=True)
            built = build_patch(base, index, changed, changed_lines, gone)
        if built.rows != rows_now or len(built.patch) > PATCH_MAX_CHANGED * max(len(base), 1) + 4096:
            return None
        return built

    @contextmanager
    def _tool_stream(self, tool: str, argv: list[str], deadline: Deadline) -> Iterator[IO[bytes]]:
        with ToolProcess(argv, env=self._tool_env(), stdout=subprocess.PIPE, timeout=deadline.remaining()) as proc:
            yield io.BufferedReader(ArchiveClock(proc.stdout), 1 << 20) if tool == "pg_dump" else proc.stdout
            if proc.wait() != 0:
                raise self._tool_failure(tool, proc, deadline)

    def _copy_out(self, t: TableInfo, snapshot: str | None, deadline: Deadline,
                  key_range: KeyRange | None = None, *, where: sql.Composable | None = None
                  ) -> AbstractContextManager[IO[bytes]]:
        """A table's rows (or one key range of them, or those matching `where`) as COPY
        text, via psql (its big buffered writes beat per-row reads)."""
        conditions = [where] if where is not None else []
        if key_range is not None:
            key = sql.Identifier(t.pk[0])
            conditions.append(sql.SQL("{} >= {}").format(key, sql.Literal(key_range.low)))
            if key_range.high is not None:
                conditions.append(sql.SQL("{} < {}").format(key, sql.Literal(key_range.high)))
        where_clause = sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conditions)) if conditions else sql.SQL("")
        query = sql.SQL("COPY (SELECT {} FROM {}{}{}) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(col) for col in t.columns) if t.columns else sql.SQL("*"),
            sql.Identifier(t.schema, t.name), where_clause,
            sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(sql.Identifier(k) for k in t.pk))
            if t.order == "pk" else sql.SQL(""),
        ).as_string(None)
        argv = [self._tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *self._conn_args(self.conn.database)]
        if snapshot:
            argv += ["-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                     "-c", f"SET TRANSACTION SNAPSHOT '{snapshot}'"]
        argv += ["-c", "SET synchronize_seqscans = off; " + _COPY_SETTINGS, "-c", query]
        if snapshot:
            argv += ["-c", "COMMIT"]
        return self._tool_stream("psql", argv, deadline)

    def _tool_failure(self, tool: str, proc: ToolProcess, deadline: Deadline) -> VaultflowError:
        if proc.timed_out:
            return TransientError(
                f"{tool} for {self.describe()} ran past the run's {deadline.seconds or 0:.0f} s deadline and was "
                "killed",
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
        return self._tool_error(tool, line)

    # -- server-wide objects ----------------------------------------------------------

    def globals_source(self, *, passwords: bool = False) -> StreamSource:
        """Roles, their memberships and settings, and tablespaces: pg_dumpall --globals-only,
        with --no-role-passwords unless `passwords`."""
        argv = [self._tool("pg_dumpall"), "--globals-only",
                *([] if passwords else ["--no-role-passwords"]),
                "--host", self.conn.host, "--port", str(self.conn.port), "--username", self.conn.user,
                "--no-password", "--database", self.conn.maintenance_database]
        return StreamSource(GLOBALS_STREAM, GLOBALS_FORMAT,
                            functools.partial(self._tool_stream, "pg_dumpall", argv, Deadline.start(None)),
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

    # -- restore drills ------------------------------------------------------------------

    def schema_inventory(self) -> SchemaInventory:
        with self._connect() as c:
            return _schema_inventory(c)

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
        """See DatabaseEngine.restore. The database is created with the snapshot's encoding,
        locale, settings, comment, connection limit and owner (postgres_database.py)."""
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
        props = None if server_locale else next(
            (DatabaseProperties.from_meta(s.meta["database"]) for s in streams
             if s.format == SCHEMA_FORMAT and "database" in s.meta), None)
        staging = side_database_name(f"vf_restore_{int(time.time())}_{os.urandom(4).hex()}", target)
        with self._connect(self.conn.maintenance_database) as admin:
            self._sweep_orphaned_staging(admin)
            self._create_database(admin, staging, props)
        observer = observer or RestoreObserver()
        try:
            self.with_database(staging)._load(streams, read, deadline=Deadline.start(timeout), no_owner=no_owner,
                                              jobs=jobs, tables=tables, observer=observer)
            if props is not None:
                self._apply_properties(staging, props, no_owner=no_owner)
            observer.finishing(failed=False)
            self._swap_in(staging, target, exists)
        except BaseException:
            observer.finishing(failed=True)
            self._drop_quietly(staging)
            raise

    def _create_database(self, admin: psycopg.Connection[Any], name: str, props: DatabaseProperties | None) -> None:
        """CREATE DATABASE from template0, with the snapshot's encoding and locale if given."""
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        if props is None:
            admin.execute(statement)
            return
        fix = ("install that locale on the target server (locale-gen, or an ICU build), or restore (or drill) "
               "with --server-locale to use the server's default encoding and locale")
        try:
            options = props.create_options(self._server_version(admin)[0])
        except ValueError as exc:
            raise InputError(f"cannot restore into {self.describe()} the snapshot's {props.describe()}: {exc}",
                             fix) from None
        try:
            admin.execute(sql.SQL("{} {}").format(statement, options))
        except (psycopg.errors.InvalidParameterValue, psycopg.errors.WrongObjectType,
                psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedObject,
                psycopg.errors.ObjectNotInPrerequisiteState) as exc:
            first = str(exc).strip().splitlines()[0]
            raise InputError(f"cannot restore into {self.describe()} the snapshot's {props.describe()} ({first})",
                             fix) from None

    def _apply_properties(self, database: str, props: DatabaseProperties, *, no_owner: bool) -> None:
        """The database's settings, comment, connection limit and (unless `no_owner`) owner,
        privileges and role settings, once its content is in: a setting such as
        default_transaction_read_only would stop the load. One that this server refuses is skipped
        with a warning (naming it and the error's kind, never the server's text, which may quote a value)."""
        ident = sql.Identifier(database)
        with self._connect(self.conn.maintenance_database) as admin:
            statements = props.setting_statements(database)
            if props.comment is not None:
                statements.append(("comment", sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    ident, sql.Literal(props.comment))))
            if not no_owner:
                statements += props.grant_statements(database) + props.role_setting_statements(database)
            if props.connection_limit != -1:
                statements.append(("connection limit", sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                    ident, sql.Literal(props.connection_limit))))
            if props.owner and not no_owner:  # last: the rest needs the restoring role to own it
                statements.append((f"owner {props.owner}", sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    ident, sql.Identifier(props.owner))))
            for what, statement in statements:
                try:
                    admin.execute(statement)
                except psycopg.Error as exc:  # its text may quote a setting's value: only its kind
                    _log.warning("restoring %s: the source database's %s was not applied (%s)", self.describe(),
                                 what, type(exc).__name__)

    def _sweep_orphaned_staging(self, admin: psycopg.Connection[Any]) -> None:
        """Drop staging databases left by restores that were killed: older than
        STAGING_ORPHAN_SECONDS (from the time in their name) and with no session on them."""
        rows = admin.execute(
            "SELECT d.datname FROM pg_database d WHERE d.datname ~ '^vf_restore_[0-9]+_[0-9a-f]{8}(_|$)' "
            "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)").fetchall()
        for (name,) in rows:
            if time.time() - int(name.split("_")[2]) < STAGING_ORPHAN_SECONDS:
                continue
            try:
                admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
                _log.warning("dropped %s on %s, left behind by a restore that did not finish", name,
                             self.server_label())
            except psycopg.Error:
                pass  # in use after all, or dropped by another restore just now

    def _load(self, streams: list[StreamManifest], read: StreamReader, *, deadline: Deadline, no_owner: bool,
              jobs: int, tables: list[str] | None, observer: RestoreObserver) -> None:
        owner_flags = ["--no-owner", "--no-acl"] if no_owner else []
        restore = [self._tool("pg_restore"), "--exit-on-error", *owner_flags, *self._conn_args(self.conn.database)]
        by_format: dict[str, list[StreamManifest]] = {}
        for s in streams:
            by_format.setdefault(s.format, []).append(s)
        for legacy in by_format.get(LEGACY_FORMAT, []):
            self._feed("pg_restore", restore, legacy, read, deadline)
        schema = by_format.get(SCHEMA_FORMAT, [])
        for s in schema:
            self._feed("pg_restore", [*restore, "--section=pre-data"], s, read, deadline)
        table_streams = by_format.get(TABLE_FORMAT, [])
        if tables is not None:
            wanted = set(tables)
            unknown = wanted - {f"{s.meta['schema']}.{s.meta['table']}" for s in table_streams}
            if unknown:
                raise InputError(f"the snapshot has no rows of table(s) {', '.join(sorted(unknown))}",
                                 "give tables as schema.name, as vaultflow lists them")
            table_streams = [s for s in table_streams if f"{s.meta['schema']}.{s.meta['table']}" in wanted]
        # A table's streams (its key-range segments) load in key order through one COPY, so
        # its heap holds the rows in the order a backup reads them. Tables load `jobs` at a
        # time, largest first, so one big table does not start last and run alone at the end.
        by_table: dict[str, list[StreamManifest]] = {}
        for s in table_streams:
            by_table.setdefault(f"{s.meta['schema']}.{s.meta['table']}", []).append(s)

        def load_table(table: str, group: list[StreamManifest]) -> None:
            group.sort(key=lambda s: int(s.meta.get("segment", "0")))
            self._copy_in(table, group, read, deadline)
            observer.table_loaded(self, table, group)

        order = sorted(by_table.items(), key=lambda item: sum(s.size for s in item[1]), reverse=True)
        with ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="vf-load") as pool:
            futures = [pool.submit(load_table, table, group) for table, group in order]
            try:
                for fut in futures:
                    fut.result()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        for s in by_format.get(DATA_EXTRA_FORMAT, []):
            self._feed("pg_restore", restore, s, read, deadline)
        for s in schema:
            if tables is None:
                self._feed("pg_restore", [*restore, "--section=post-data"], s, read, deadline)
            else:
                # A subset can lack the rows a foreign key of a restored table points at; such
                # constraints are left out (and named) instead of failing the whole restore.
                lenient = [a for a in restore if a != "--exit-on-error"]
                self._feed("pg_restore", [*lenient, "--section=post-data"], s, read, deadline, lenient=True)
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

    def _copy_in(self, table: str, streams: list[StreamManifest], read: StreamReader, deadline: Deadline) -> None:
        """All rows of one new, empty table through one COPY, in the order of `streams`.

        The table is truncated in the COPY's own transaction: then COPY appends page after
        page without looking for free space in earlier pages (so the heap keeps the load
        order) and can FREEZE the rows (no hint-bit writes or freeze vacuum later).
        """
        meta = streams[0].meta
        ident = sql.Identifier(meta["schema"], meta["table"])
        columns = json.loads(meta.get("columns", "[]"))
        query = sql.SQL("COPY {} ({}) FROM STDIN WITH (FREEZE)").format(
            ident, sql.SQL(", ").join(sql.Identifier(c) for c in columns)).as_string(None)
        argv = [self._tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *self._conn_args(self.conn.database),
                "-c", _COPY_SETTINGS, "-c", "BEGIN", "-c", sql.SQL("TRUNCATE ONLY {}").format(ident).as_string(None),
                "-c", query, "-c", "COMMIT"]
        self._feed("psql", argv, streams, read, deadline, what=f"table {table}")

    def _feed(self, tool: str, argv: list[str], streams: StreamManifest | list[StreamManifest], read: StreamReader,
              deadline: Deadline, *, lenient: bool = False, what: str | None = None) -> None:
        """Write the streams, one after another, into the tool's stdin."""
        if isinstance(streams, StreamManifest):
            what = what or f"stream {streams.name!r}"
            streams = [streams]
        with ToolProcess(argv, env=self._tool_env(), stdin=subprocess.PIPE, timeout=deadline.remaining()) as proc:
            try:
                for stream in streams:
                    read_rows(read, stream, proc.stdin)
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the tool stopped early; its own error is reported below
            code = proc.wait()
            if lenient and code == 1 and _only_foreign_key_errors(proc.stderr_text()):
                _log.warning("%s: foreign keys pointing at rows that were not restored were left out: %s",
                             self.describe(), proc.last_error_line())
                return
            if code != 0:
                failure = self._tool_failure(tool, proc, deadline)
                # Keep the class: a restore cut off by a refused connection is worth a retry.
                raise type(failure)(f"restoring {what}: {failure.what}", failure.fix) from None

    def _swap_in(self, staging: str, target: str, exists: bool) -> None:
        ident = sql.Identifier
        with self._connect(self.conn.maintenance_database) as admin:
            if exists:
                old = side_database_name(f"vf_old_{os.urandom(6).hex()}", target)
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


class ArchiveClock(io.RawIOBase):
    """A pg_dump custom archive with its creation time set to 2000-01-01 00:00:00.

    The time is the only part of the header that changes from run to run; without it, an
    unchanged schema dumps to the same bytes and its chunks are reused. pg_restore only
    prints it. Headers of an unknown layout pass through unchanged.
    """

    _FIXED_TIME = (0, 0, 0, 1, 0, 100, 0)  # sec, min, hour, mday, mon (0-based), year - 1900, isdst

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._head = b""
        self._started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._started:
            self._started = True
            head = b""
            while len(head) < 128:
                more = self._raw.read(128 - len(head))
                if not more:
                    break
                head += more
            self._head = _with_fixed_time(head, self._FIXED_TIME)
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(view))
        view[: len(data)] = data
        return len(data)


def _with_fixed_time(head: bytes, fixed: tuple[int, ...]) -> bytes:
    """Replace the creation time of a custom-format archive header (archive versions
    1.12 to 1.16: magic, version, int size, offset size, format, compression, then seven
    sign-and-magnitude ints of the creation time)."""
    if len(head) < 16 or not head.startswith(b"PGDMP") or head[5] != 1 or not 12 <= head[6] <= 16:
        return head
    int_size = head[8]
    pos = 11 + (1 if head[6] >= 15 else 1 + int_size)  # compression: one byte from 1.15, an int before
    end = pos + 7 * (1 + int_size)
    if int_size not in (4, 8) or len(head) < end:
        return head
    fields = b"".join(b"\x00" + value.to_bytes(int_size, "little") for value in fixed)
    return head[:pos] + fields + head[end:]


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: list[str]
    pk: list[str]
    order: str  # "pk" or "heap"
    size: int = 0  # bytes on disk, indexes and TOAST included
    heap_bytes: int = 0  # heap and TOAST, without indexes
    key_type: str | None = None  # the type of a one-column integer primary key
    signature: str = ""  # columns, their types and the type signature: what COPY writes

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def segmentable(self) -> bool:
        return self.order == "pk" and self.key_type is not None


@dataclass(frozen=True)
class KeyRange:
    """Segment `number` of a table: keys from number*width up to (number+1)*width."""

    number: int
    width: int

    @property
    def low(self) -> int:
        return self.number * self.width

    @property
    def high(self) -> int | None:
        high = (self.number + 1) * self.width
        return high if high <= _INT8_MAX else None


def _user_tables(c: psycopg.Connection[Any], database: str, include: list[str] | None,
                 exclude: list[str] | None, order_limit: int) -> list[TableInfo]:
    """Every user table with rows of its own (leaf partitions included), filtered by globs.

    Rows are streamed in primary-key order when the table has a primary key and is smaller
    than `order_limit` bytes (sorting a bigger one costs more than the incrementals save);
    otherwise in heap order.
    """
    out = []
    for schema, name, size, columns, pk, pk_types, heap_bytes, signature in c.execute(_USER_TABLES).fetchall():
        if include and not any(table_glob_match(p, schema, name) for p in include):
            continue
        if exclude and any(table_glob_match(p, schema, name) for p in exclude):
            continue
        order = "pk" if pk and size < order_limit else "heap"
        key_type = pk_types[0] if pk_types and len(pk_types) == 1 and pk_types[0] in _INTEGER_TYPES else None
        out.append(TableInfo(schema=schema, name=name, columns=list(columns or []), pk=list(pk or []),
                             order=order, size=int(size or 0), heap_bytes=int(heap_bytes or 0),
                             key_type=key_type, signature=str(signature)))
    if (include or exclude) and not out:
        raise InputError(f"no table of database {database!r} matches the include/exclude patterns",
                         "check the globs (schema.table, or table for any schema)")
    return out


def _segment_number(key: sql.Composable, width: int) -> sql.Composable:
    """The segment of `key` (floor division by `width`, also for negative keys)."""
    return sql.SQL("CASE WHEN {key} >= 0 THEN {key} / {w} ELSE ({key} + 1) / {w} - 1 END").format(
        key=key, w=sql.Literal(width))


class _SnapshotSession:
    """A session of its own in the dump's exported snapshot, opened on first use (by the
    one thread that uses it)."""

    def __init__(self, engine: PostgresEngine, snapshot: str) -> None:
        self._engine = engine
        self._snapshot = snapshot
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            conn = self._engine._connect(autocommit=False)
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self._snapshot)))
            conn.execute(_COPY_SETTINGS)
            self._conn = conn
        return self._conn

    def rows_by_key(self, t: TableInfo, keys: list[int]) -> bytes:
        """The rows with these keys, in key order, as COPY text (an index scan)."""
        if not keys:
            return b""
        pk = sql.Identifier(t.pk[0])
        query = sql.SQL("COPY (SELECT {} FROM {} WHERE {} = ANY(%s) ORDER BY {}) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(col) for col in t.columns), sql.Identifier(t.schema, t.name), pk, pk)
        out = bytearray()
        with self.connection().cursor().copy(query, [keys]) as copy:
            for block in copy:
                out += block
        return bytes(out)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class ChangedRows:
    """The rows of a table changed since its segments' bases, by segment, for patches;
    `of_segment` waits until that segment's rows are there (None: too many to hold)."""

    def covers(self, seg: SegmentScan) -> bool:
        """Whether this can give every changed row of `seg`."""
        return True

    def expect(self, segments: list[SegmentScan]) -> None:
        """The segments that will be asked for, in the order they will be."""

    def of_segment(self, number: int) -> bytes | None:
        raise NotImplementedError


class _FetchedChangedRows(ChangedRows):
    """Rows fetched by the keys the segment scan collected, segment by segment, on the
    snapshot session's thread."""

    def __init__(self, executor: ThreadPoolExecutor, session: _SnapshotSession | None, t: TableInfo) -> None:
        assert session is not None
        self._executor, self._session, self._table = executor, session, t
        self._futures: dict[int, Future[bytes]] = {}

    def covers(self, seg: SegmentScan) -> bool:
        return seg.changed_keys is not None and len(seg.changed_keys) == seg.changed_own

    def expect(self, segments: list[SegmentScan]) -> None:
        for seg in segments:
            self._futures[seg.number] = self._executor.submit(self._session.rows_by_key, self._table,
                                                              seg.changed_keys or [])

    def of_segment(self, number: int) -> bytes | None:
        return self._futures[number].result()


class _ScannedChangedRows(ChangedRows):
    """Rows read for the whole table by one scan beside the segment scan, split by segment."""

    def __init__(self, scanned: Future[bytes | None], t: TableInfo, width: int) -> None:
        self._scanned, self._table, self._width = scanned, t, width
        self._lock = threading.Lock()
        self._pieces: dict[int, bytes] | None = None

    def of_segment(self, number: int) -> bytes | None:
        with self._lock:
            if self._pieces is None:
                self._pieces = self._split(self._scanned.result())
        return self._pieces.get(number, b"") if self._pieces is not None else None

    def _split(self, rows: bytes | None) -> dict[int, bytes] | None:
        lines = None if rows is None else copy_lines(rows, self._table.columns.index(self._table.pk[0]))
        if rows is None or lines is None:
            return None
        numbers = lines.keys // self._width
        pieces = {}
        for number in np.unique(numbers).tolist():
            first, end = (int(i) for i in np.searchsorted(numbers, [number, number + 1]))
            pieces[int(number)] = rows[int(lines.starts[first]):int(lines.ends[end - 1]) + 1]
        return pieces


class _TooMuchChanged(Exception):
    """Raised inside a COPY read to stop it (leaving the tool's context kills psql)."""


@dataclass(frozen=True)
class SegmentScan:
    """One non-empty key-range segment as the dump's snapshot sees it: its rows, and per
    mark (a 64-bit transaction id) how many of them have an xmin that is not older."""

    number: int
    rows: int
    changed: dict[int, int]
    changed_own: int | None = None  # rows not older than the segment's own base (when collected)
    changed_keys: list[int] | None = None  # their keys, when at most the cap

    def unchanged_since(self, old: StreamManifest) -> bool:
        """Whether the segment holds exactly the rows of `old`, a stream of it read (or
        carried over) in a snapshot whose xmin `old` records: no row is newer than that
        xmin (every insert or update writes a version with a newer one) and no row is gone
        (the count is the same)."""
        mark = old.meta.get("xmin")
        return (mark is not None and self.changed.get(int(mark)) == 0
                and str(self.rows) == old.meta.get("rows"))


def _merge_scan_rows(rows: list[tuple[Any, ...]], counts: int, keys: bool) -> list[tuple[Any, ...]]:
    """Segment scan rows (segment, `counts` counts[, keys]) of several heap ranges, summed
    per segment. Keys are kept only where every range that holds rows of the segment gave
    them (one over the cap gives none, and the segment is then not patched)."""
    merged: dict[int, list[Any]] = {}
    for r in rows:
        m = merged.get(r[0])
        if m is None:
            merged[r[0]] = list(r)
            continue
        for i in range(1, 1 + counts):
            m[i] += r[i]
        if keys:
            k = 1 + counts
            m[k] = None if m[k] is None or r[k] is None else m[k] + r[k]
    return [tuple(m) for m in merged.values()]


def _comparable(xmin: str | None, snapshot_xmin: int) -> bool:
    """Whether rows can be compared with a recorded snapshot xmin: not older than
    XMIN_MAX_AGE ids, so that 32-bit xids still compare, and a normal id."""
    return (xmin is not None and 0 <= snapshot_xmin - int(xmin) < XMIN_MAX_AGE
            and int(xmin) % 2**32 >= 3)


def _patchable(base: StreamManifest, t: TableInfo, snapshot_xmin: int) -> bool:
    """Whether a parent's segment stream can be the base of a patch now: it records a
    comparable snapshot xmin its base was read at and a BLAKE3 digest, and is small enough
    to be read into memory."""
    if not _comparable(base.meta.get("base_xmin"), snapshot_xmin) or base_part(base) is None:
        return False
    size = int(base.meta.get("base_bytes", base.size))
    return size <= PATCH_MAX_BASE_BYTES and t.pk[0] in t.columns


def _xmin_not_older(since: int) -> sql.Composable:
    """Rows whose xmin is `since` (a 64-bit transaction id) or newer. age() counts back from
    the same point for both sides of the comparison; PostgreSQL keeps the ids of live rows
    within 2^31 of each other, and `since` is kept within XMIN_MAX_AGE of now."""
    return sql.SQL("age(xmin) <= age({}::xid)").format(sql.Literal(str(since % 2**32)))


def _only_foreign_key_errors(stderr: str) -> bool:
    """Whether every error pg_restore ignored was a foreign key its restored rows violate
    (what a restore of chosen tables expects), and none was lost from the kept stderr."""
    ignored = re.search(r"errors ignored on restore: (\d+)", stderr)
    failures = [ln for ln in stderr.splitlines() if "could not execute query" in ln]
    return (ignored is not None and int(ignored.group(1)) == len(failures) > 0
            and all("violates foreign key constraint" in ln for ln in failures))


def _quoted_pattern(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
        read_rows(read, s, out)
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
