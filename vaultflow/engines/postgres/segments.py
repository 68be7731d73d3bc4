"""PostgreSQL tables as a dump sees them: which tables, in what order, and big tables as
key-range segments (docs/design.md, "Table segments"): the segment scan, what changed in a
segment since its parent, and the changed rows that segment patches are built from."""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from psycopg import sql

from vaultflow.engines.base import table_glob_match
from vaultflow.engines.postgres.patches import base_part, copy_lines
from vaultflow.errors import InputError
from vaultflow.repository.manifest import StreamManifest

if TYPE_CHECKING:
    from vaultflow.engines.postgres.engine import PostgresEngine

# Tables bigger than this stream in heap order: sorting them costs more than incrementals save.
ORDER_BY_PK_MAX_BYTES = 16 * 2**30
# Tables with a one-column integer primary key and at least SEGMENT_MIN_BYTES of heap are
# stored as key ranges of about SEGMENT_BYTES each (docs/design.md, "Table segments").
SEGMENT_BYTES = 64 * 2**20
SEGMENT_MIN_BYTES = 2 * SEGMENT_BYTES
# Segment patches (patches.py): a changed segment is stored as a patch on its base when at
# most PATCH_MAX_CHANGED (dump.py) of its rows changed since the base was read, and its base
# is at most this big (it is read into memory).
PATCH_MAX_BASE_BYTES = 256 * 2**20
# Recorded snapshot xmins older than this many transaction ids are not compared with rows
# (carrying over and patching need them; older ones mean a read).
XMIN_MAX_AGE = 1_000_000_000
_INTEGER_TYPES = ("smallint", "integer", "bigint")
_INT8_MAX = 2**63 - 1
# Output settings of every COPY session, so the bytes of a row do not depend on the
# server's or the role's defaults (a carried-over segment must equal a re-read one).
COPY_SETTINGS = ("SET datestyle = ISO, YMD; SET intervalstyle = postgres; SET extra_float_digits = 3; "
                 "SET bytea_output = hex; SET timezone = 'UTC'")


# What COPY writes for a value can change without any row changing: an enum label renamed,
# an attribute added to a composite type. Every table's signature includes this.
TYPE_SIGNATURE = """
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
""".replace("%(types)s", TYPE_SIGNATURE)

# Per-table change counters. Rows change only through inserts, updates and deletes (all
# counted) or a new relfilenode (TRUNCATE, VACUUM FULL, CLUSTER, rewriting ALTER TABLE);
# the column list and the type signature catch DDL that changes what COPY writes without
# rewriting. The server's start time and the database's statistics reset time are part of


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


def user_tables(c: psycopg.Connection[Any], database: str, include: list[str] | None,
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


class SnapshotSession:
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
            conn.execute(COPY_SETTINGS)
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


class FetchedChangedRows(ChangedRows):
    """Rows fetched by the keys the segment scan collected, segment by segment, on the
    snapshot session's thread."""

    def __init__(self, executor: ThreadPoolExecutor, session: SnapshotSession | None, t: TableInfo) -> None:
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


class ScannedChangedRows(ChangedRows):
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


class TooMuchChanged(Exception):
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


def merge_scan_rows(rows: list[tuple[Any, ...]], counts: int, keys: bool) -> list[tuple[Any, ...]]:
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


def comparable(xmin: str | None, snapshot_xmin: int) -> bool:
    """Whether rows can be compared with a recorded snapshot xmin: not older than
    XMIN_MAX_AGE ids, so that 32-bit xids still compare, and a normal id."""
    return (xmin is not None and 0 <= snapshot_xmin - int(xmin) < XMIN_MAX_AGE
            and int(xmin) % 2**32 >= 3)


def patchable_base(base: StreamManifest, t: TableInfo, snapshot_xmin: int) -> bool:
    """Whether a parent's segment stream can be the base of a patch now: it records a
    comparable snapshot xmin its base was read at and a BLAKE3 digest, and is small enough
    to be read into memory."""
    if not comparable(base.meta.get("base_xmin"), snapshot_xmin) or base_part(base) is None:
        return False
    size = int(base.meta.get("base_bytes", base.size))
    return size <= PATCH_MAX_BASE_BYTES and t.pk[0] in t.columns


def xmin_not_older(since: int) -> sql.Composable:
    """Rows whose xmin is `since` (a 64-bit transaction id) or newer. age() counts back from
    the same point for both sides of the comparison; PostgreSQL keeps the ids of live rows
    within 2^31 of each other, and `since` is kept within XMIN_MAX_AGE of now."""
    return sql.SQL("age(xmin) <= age({}::xid)").format(sql.Literal(str(since % 2**32)))


def segment_width(c: psycopg.Connection[Any], t: TableInfo, parent: list[StreamManifest]) -> int | None:
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


def segment_scan(c: psycopg.Connection[Any], t: TableInfo, width: int, marks: list[int], *,
                 collect: dict[int, tuple[int, int]] | None = None,
                 beside: tuple[ThreadPoolExecutor, SnapshotSession | None] | None = None
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
        rows = merge_scan_rows(rows + rows_other, 1 + len(marks) + (1 if collect else 0), bool(collect))
    n = len(marks)
    return [SegmentScan(int(r[0]), int(r[1]), dict(zip(marks, (int(x) for x in r[2:2 + n]), strict=True)),
                        changed_own=int(r[2 + n]) if collect else None,
                        changed_keys=r[3 + n] if collect else None)
            for r in sorted(rows)]


def copy_query(t: TableInfo, key_range: KeyRange | None = None, *, where: sql.Composable | None = None) -> str:
    """The `COPY (SELECT ...) TO STDOUT` of a table's rows in the order a backup streams them."""
    conditions = [where] if where is not None else []
    if key_range is not None:
        key = sql.Identifier(t.pk[0])
        conditions.append(sql.SQL("{} >= {}").format(key, sql.Literal(key_range.low)))
        if key_range.high is not None:
            conditions.append(sql.SQL("{} < {}").format(key, sql.Literal(key_range.high)))
    where_clause = sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conditions)) if conditions else sql.SQL("")
    return sql.SQL("COPY (SELECT {} FROM {}{}{}) TO STDOUT").format(
        sql.SQL(", ").join(sql.Identifier(col) for col in t.columns) if t.columns else sql.SQL("*"),
        sql.Identifier(t.schema, t.name), where_clause,
        sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(sql.Identifier(k) for k in t.pk))
        if t.order == "pk" else sql.SQL(""),
    ).as_string(None)
