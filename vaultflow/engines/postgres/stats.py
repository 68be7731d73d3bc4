"""PostgreSQL table statistics: row counts and COPY-text checksums of every table, read the
way a backup reads it (whole, or segment by segment), per-table change counters, and the
schema inventory queries."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import blake3
import psycopg
import psycopg.sql

from vaultflow.engines.base import RowTap
from vaultflow.engines.postgres.segments import (
    COPY_SETTINGS,
    ORDER_BY_PK_MAX_BYTES,
    TYPE_SIGNATURE,
    KeyRange,
    TableInfo,
    copy_query,
    segment_scan,
    user_tables,
)
from vaultflow.engines.process import Deadline
from vaultflow.repository.manifest import (
    ColumnProfile,
    SchemaInventory,
    StreamManifest,
    TableProfile,
    TableStats,
)

if TYPE_CHECKING:
    from vaultflow.engines.postgres.engine import PostgresEngine

SEGMENTED_CHECKSUM = "copy-seg-b3"


class RowSplitter:
    """RowTaps over consecutive runs of rows: the first `counts[0]` rows, then the next
    `counts[1]`, and so on; rows beyond them go to one more tap. No counts: one tap."""

    def __init__(self, counts: list[int]) -> None:
        self._counts = counts
        self.taps = [RowTap()]

    def _left(self) -> int | None:
        """Rows the current tap still takes; None for the last (unbounded) one."""
        index = len(self.taps) - 1
        return self._counts[index] - self.taps[-1].rows if index < len(self._counts) else None

    def __call__(self, block: bytes) -> None:
        while block:
            left = self._left()
            if left is None or block.count(b"\n") < left:
                self.taps[-1](block)
                return
            cut = 0
            for _ in range(left):
                cut = block.index(b"\n", cut) + 1
            self.taps[-1](block[:cut])
            self.taps.append(RowTap())
            block = block[cut:]


def segmented_table_stats(schema: str, name: str, width: int, segments: list[tuple[int, int, str]]) -> TableStats:
    """Statistics of a table stored as key-range segments of `width` keys each.

    `segments`: (segment number, rows, the segment's RowTap checksum) of every non-empty
    segment. The checksum is a BLAKE3 over those triples in key order, so it can be built
    from segments carried over from a parent without reading them.
    """
    digest = blake3.blake3()
    for number, rows, checksum in sorted(segments):
        digest.update(f"{number}:{rows}:{checksum}\n".encode())
    return TableStats(schema=schema, name=name, rows=sum(rows for _, rows, _ in segments),
                      checksum=f"{SEGMENTED_CHECKSUM}:{width}:{digest.hexdigest()}")


def segment_width_of(stats: TableStats) -> int | None:
    """The key width of a segmented checksum, None for a whole-table one."""
    if stats.checksum and stats.checksum.startswith(SEGMENTED_CHECKSUM + ":"):
        return int(stats.checksum.split(":")[1])
    return None


def combined_segment_stats(streams: list[StreamManifest]) -> list[TableStats]:
    """One TableStats per segmented table, from the rows and checksums of its segments."""
    parts: dict[tuple[str, str, int], list[tuple[int, int, str]]] = {}
    for s in streams:
        if "segment" in s.meta:
            key = (s.meta["schema"], s.meta["table"], int(s.meta["segment_width"]))
            parts.setdefault(key, []).append((int(s.meta["segment"]), int(s.meta["rows"]), s.meta["checksum"]))
    return [segmented_table_stats(schema, name, width, segs) for (schema, name, width), segs in parts.items()]

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
""".replace("%(types)s", TYPE_SIGNATURE)

# Sessions that may hold table counters not yet flushed to the cumulative statistics: a
# backend flushes when it goes idle, at most once a second, and otherwise within 10 s.
_UNSETTLED_SESSIONS = """
SELECT count(*) FILTER (WHERE state <> 'idle'),
       count(*) FILTER (WHERE state = 'idle' AND state_change > now() - interval '11 seconds')
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type <> 'autovacuum worker' AND application_name <> 'vaultflow'
"""

USER_OBJECT_COUNT = """
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


def schema_inventory_of(c: psycopg.Connection[Any]) -> SchemaInventory:
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


def table_stats_parallel(engine: PostgresEngine, jobs: int, *, like: list[TableStats] | None = None,
                         tables: list[str] | None = None) -> list[TableStats]:
    """See PostgresEngine.table_stats: up to `jobs` tables at once; `tables` reads only those."""
    widths = {t.qualified: w for t in like or [] if (w := segment_width_of(t)) is not None}
    with engine._connect() as c:
        tables_info = user_tables(c, engine.conn.database, None, None, ORDER_BY_PK_MAX_BYTES)
        if tables is not None:
            wanted = set(tables)
            tables_info = [t for t in tables_info if t.qualified in wanted]
        segments = {t.qualified: [seg.number for seg in segment_scan(c, t, widths[t.qualified], [])]
                    for t in tables_info if t.qualified in widths and t.segmentable}

    def read(t: TableInfo) -> TableStats:
        if t.qualified not in segments:
            return _tap(engine, t, None).stats(t.schema, t.name)
        width = widths[t.qualified]
        parts = []
        for number in segments[t.qualified]:
            tap = _tap(engine, t, KeyRange(number, width))
            parts.append((number, tap.rows, tap.stats(t.schema, t.name).checksum or ""))
        return segmented_table_stats(t.schema, t.name, width, parts)

    # Biggest first, so that one big table does not start last and run alone.
    tables_info.sort(key=lambda t: t.size, reverse=True)
    with ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="vf-stats") as pool:
        out = list(pool.map(read, tables_info))
    return sorted(out, key=lambda t: t.qualified)


def loaded_table_stats(engine: PostgresEngine, table: str, streams: list[StreamManifest]) -> TableStats | None:
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
    with engine._copy_out(as_loaded, None, Deadline.start(None)) as stream:
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


def _tap(engine: PostgresEngine, t: TableInfo, key_range: KeyRange | None) -> RowTap:
    tap = RowTap()
    with engine._copy_out(t, None, Deadline.start(None), key_range) as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            tap(block)
    return tap


def table_counters(engine: PostgresEngine, *, settle: float = 0.0) -> tuple[dict[str, str], bool]:
    """Per-table change counters, and whether they can be trusted to be complete.

    Counters read before the snapshot export are always safe to record: a change they
    miss is in the snapshot, and only makes the next incremental read that table. To
    decide that a table is unchanged they must also be complete: no other session of
    the database may be working or in a transaction, and none may have gone idle in
    the last 11 s (sessions flush their counters within seconds of going idle); those
    are waited for up to `settle` seconds.
    """
    deadline = time.monotonic() + settle
    with engine._connect() as c:
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


class SnapshotReaders:
    """Sessions that read whole tables' statistics (RowTap over the COPY text `copy_query` gives,
    the backup's order) in one exported snapshot, imported when the sessions open: the transaction
    that exported it may end as soon as this object exists (a PITR mark lets writers go on then).
    Without a snapshot each session reads in its own (a paused standby, where nothing changes)."""

    def __init__(self, engine: PostgresEngine, snapshot: str | None, sessions: int) -> None:
        self._engine = engine
        self._conns: list[psycopg.Connection[Any]] = []
        try:
            for _ in range(max(sessions, 1)):
                conn = engine._connect(autocommit=False)
                self._conns.append(conn)
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                if snapshot is not None:
                    conn.execute(psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(psycopg.sql.Literal(snapshot)))
                conn.execute("SET synchronize_seqscans = off; " + COPY_SETTINGS)
        except BaseException:
            self.close()
            raise

    def read(self, tables: list[TableInfo]) -> list[TableStats]:
        """The statistics of `tables`, biggest first, one table per session at a time; by name."""
        pending = sorted(tables, key=lambda t: t.size, reverse=True)
        out: list[TableStats] = []
        lock = threading.Lock()

        def work(conn: psycopg.Connection[Any]) -> None:
            while True:
                with lock:
                    if not pending:
                        return
                    t = pending.pop(0)
                tap = RowTap()
                with conn.cursor().copy(copy_query(t)) as copy:
                    for block in copy:
                        tap(bytes(block))
                with lock:
                    out.append(tap.stats(t.schema, t.name))

        with ThreadPoolExecutor(max_workers=len(self._conns), thread_name_prefix="vf-mark-stats") as pool:
            for done in [pool.submit(work, conn) for conn in self._conns]:
                done.result()
        return sorted(out, key=lambda t: t.qualified)

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.rollback()
                conn.close()
            except psycopg.Error:
                pass
        self._conns = []

    def __enter__(self) -> SnapshotReaders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
