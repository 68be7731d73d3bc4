"""PostgreSQL dumps: the sources of one exported snapshot (schema and data-extra pg_dump
archives, one COPY stream per table or key-range segment), segments carried over from the
parent or offered as patches on it, and the client tools' streams and failures."""

from __future__ import annotations

import functools
import io
import json
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import IO, TYPE_CHECKING

import numpy as np
from psycopg import sql

from vaultflow.engines.base import DumpSession, StreamSource
from vaultflow.engines.postgres import DATA_EXTRA_FORMAT, SCHEMA_FORMAT, TABLE_FORMAT
from vaultflow.engines.postgres.archive_reader import ArchiveClock
from vaultflow.engines.postgres.database import READ_PROPERTIES, DatabaseProperties
from vaultflow.engines.postgres.patches import (
    BaseIndex,
    KeyFirstScanner,
    LineIndex,
    SegmentPatch,
    SegmentPatchPlan,
    build_patch,
    copy_lines,
    is_patched,
)
from vaultflow.engines.postgres.segments import (
    COPY_SETTINGS,
    ORDER_BY_PK_MAX_BYTES,
    ChangedRows,
    FetchedChangedRows,
    KeyRange,
    ScannedChangedRows,
    SegmentScan,
    SnapshotSession,
    TableInfo,
    TooMuchChanged,
    comparable,
    copy_query,
    patchable_base,
    segment_scan,
    segment_width,
    user_tables,
    xmin_not_older,
)
from vaultflow.engines.postgres.stats import schema_inventory_of, table_counters
from vaultflow.engines.process import Deadline, ToolProcess
from vaultflow.errors import ToolVersionMismatch, TransientError, VaultflowError
from vaultflow.repository.manifest import StreamManifest

if TYPE_CHECKING:
    from vaultflow.engines.postgres.engine import PostgresEngine

# A changed segment is stored as a patch on its base when at most this share of its rows
# changed since the base was read (and the base is small enough, segments.py) ...
PATCH_MAX_CHANGED = 0.2
PATCH_BUFFER_BYTES = 512 * 2**20  # ... and a table's changed rows fit in this much memory.
# A table of at most this many rows (by its parent's segments) has the keys of its changed
# rows collected by the segment scan (array_agg: up to 9 bytes a row in the server's memory
# if every row changed); a bigger one has its changed rows read by a second scan beside it.
KEY_COLLECT_MAX_ROWS = 16_000_000


@contextmanager
def open_dump(
    engine: PostgresEngine, *, table_checksums: bool = True, timeout: float | None = None,
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
    before, settled = table_counters(engine, settle=12.0 if parent_streams else 0.0)
    c = engine._connect(autocommit=False)
    # One thread with its own session in the dump's snapshot reads changed rows for
    # segment patches while the backup goes on.
    speculate = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vf-changed")
    fetcher: SnapshotSession | None = None
    try:
        server_major, server_version = engine._server_version(c)
        versions = engine._check_tools(server_major, server_version)
        c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = c.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        fetcher = SnapshotSession(engine, snapshot)
        # The oldest transaction this snapshot may not see: every row version with an
        # older xmin was committed before it (segment patches, below).
        row = c.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8" if server_major >= 13
                        else "SELECT txid_snapshot_xmin(txid_current_snapshot())").fetchone()
        assert row is not None
        snapshot_xmin = int(row[0])
        after: dict[str, str] = {}
        if parent_streams and settled:
            after, settled = table_counters(engine, )
        tables = user_tables(c, engine.conn.database, include_tables, exclude_tables, ORDER_BY_PK_MAX_BYTES)
        base = [engine._tool("pg_dump"), f"--snapshot={snapshot}", "--format=custom", "--compress=0"]
        schema_argv = [*base, "--schema-only", *engine._conn_args(engine.conn.database)]
        # Every table's rows come as their own stream; what the data section has besides
        # (sequence values, large objects) comes from one more pg_dump. Names are quoted
        # so that pattern characters in them match literally.
        exclude_rows = [f"--exclude-table-data={_quoted_pattern(t.schema)}.{_quoted_pattern(t.name)}"
                        for t in user_tables(c, engine.conn.database, None, None, ORDER_BY_PK_MAX_BYTES)]
        extra_argv = [*base, "--data-only", *exclude_rows, *engine._conn_args(engine.conn.database)]
        # pg_dump keeps materialized view contents out of both sections we take; like a
        # whole-database restore, ours refreshes the ones that were populated.
        populated = [list(r) for r in c.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'm' AND c.relispopulated ORDER BY c.oid").fetchall()]
        props_row = c.execute(READ_PROPERTIES).fetchone()
        assert props_row is not None
        sources = [StreamSource("schema", SCHEMA_FORMAT,
                                functools.partial(tool_stream, engine, "pg_dump", schema_argv, deadline),
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
            width = segment_width(c, t, parent_tables.get(qualified, []))
            if width is None:
                sources.append(StreamSource(f"table/{qualified}", TABLE_FORMAT,
                                            functools.partial(engine._copy_out, t, snapshot, deadline),
                                            meta=meta, table=(t.schema, t.name)))
                continue
            parent_segments = {s.meta["segment"]: s for s in parent_tables.get(qualified, [])
                               if s.meta.get("segment_width") == str(width)
                               and s.meta.get("signature") == t.signature}
            bases = {n: s for n, s in parent_segments.items() if patchable_base(s, t, snapshot_xmin)}
            since = min((int(s.meta["base_xmin"]) for s in bases.values()), default=None)
            # At most a few distinct marks per scan; a parent segment whose mark is left
            # out is read (or patched) instead of carried over.
            marks = sorted({int(s.meta["xmin"]) for s in parent_segments.values()
                            if comparable(s.meta.get("xmin"), snapshot_xmin)}, reverse=True)[:4]
            # The keys of the rows changed since the bases come with the scan; for a
            # table too big for that, those rows are read at the same time through
            # another session in the same snapshot (unused if nothing is patched).
            patchable = since is not None and t.pk[0] in t.columns
            parent_rows = sum(int(s.meta.get("rows", "0")) for s in parent_segments.values())
            collect = patchable and parent_rows <= KEY_COLLECT_MAX_ROWS
            changed_rows = (speculate.submit(read_changed_rows, engine, t, since, snapshot, deadline)
                            if since is not None and patchable and not collect else None)
            try:
                # The scan runs in two halves of the heap at once, the second one in the
                # changed-rows session, which is idle until the scan is done.
                # Per segment: the rows newer than its own base, and at most how many keys
                # of them to collect.
                own = {int(n): (int(b.meta["base_xmin"]), int(PATCH_MAX_CHANGED * int(b.meta.get("rows", "0"))))
                       for n, b in bases.items()}
                scans = segment_scan(c, t, width, sorted({*marks, *([since] if since else [])}),
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
                rows: ChangedRows = (ScannedChangedRows(changed_rows, t, width) if changed_rows is not None
                                     else FetchedChangedRows(speculate, fetcher, t))
                patches = segment_patches(engine, t, width, since, bases, changed_segments, rows,
                                                snapshot, deadline)
            for seg in changed_segments:
                key_range = KeyRange(seg.number, width)
                segment_meta = {**meta, "segment": str(seg.number), "segment_width": str(width),
                                "signature": t.signature, "xmin": str(snapshot_xmin),
                                "base_xmin": str(snapshot_xmin)}
                sources.append(StreamSource(f"table/{qualified}@{seg.number}", TABLE_FORMAT,
                                            functools.partial(engine._copy_out, t, snapshot, deadline, key_range),
                                            meta=segment_meta, table=(t.schema, t.name),
                                            patch=patches.get(seg.number)))
        sources.append(StreamSource("data-extra", DATA_EXTRA_FORMAT,
                                    functools.partial(tool_stream, engine, "pg_dump", extra_argv, deadline)))
        inventory = schema_inventory_of(c)
        yield DumpSession(sources=sources, versions=versions, unchanged=unchanged, carried=carried,
                          inventory=inventory)
    finally:
        speculate.shutdown(wait=True, cancel_futures=True)
        if fetcher is not None:
            fetcher.close()
        c.close()


def read_changed_rows(engine: PostgresEngine, t: TableInfo, since: int, snapshot: str,
                      deadline: Deadline) -> bytes | None:
    """The table's rows whose xmin is not older than `since`, in key order, read in the
    dump's snapshot with one scan; None if they are more than PATCH_BUFFER_BYTES."""
    out = bytearray()
    try:
        with engine._copy_out(t, snapshot, deadline, where=xmin_not_older(since)) as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                out += block
                if len(out) > PATCH_BUFFER_BYTES:
                    raise TooMuchChanged
    except TooMuchChanged:
        return None
    return bytes(out)


def segment_patches(engine: PostgresEngine, t: TableInfo, width: int, since: int,
                    bases: dict[str, StreamManifest], changed: list[SegmentScan], rows: ChangedRows,
                    snapshot: str, deadline: Deadline) -> dict[int, SegmentPatchPlan]:
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
        build = functools.partial(_build_segment_patch, engine, t, KeyRange(number, width),
                                  functools.partial(rows.of_segment, number), rows_now,
                                  None if base_rows is None else int(base_rows), snapshot, deadline)
        plans[number] = SegmentPatchPlan(base=base, build=build, meta={"base_xmin": base.meta["base_xmin"]})
    return plans


def _build_segment_patch(engine: PostgresEngine, t: TableInfo, key_range: KeyRange,
                         changed_rows: Callable[[], bytes | None], rows_now: int, base_rows: int | None,
                         snapshot: str, deadline: Deadline, base: bytes | bytearray) -> SegmentPatch | None:
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
        with engine._copy_out(keys_only, snapshot, deadline, key_range) as stream:
            now = copy_lines(stream.read(), 0)
        if lines is None or now is None:
            return None
        gone = np.setdiff1d(lines.keys, now.keys, assume_unique=True)
        built = build_patch(base, index, changed, changed_lines, gone)
    if built.rows != rows_now or len(built.patch) > PATCH_MAX_CHANGED * max(len(base), 1) + 4096:
        return None
    return built


@contextmanager
def tool_stream(engine: PostgresEngine, tool: str, argv: list[str], deadline: Deadline) -> Iterator[IO[bytes]]:
    with ToolProcess(argv, env=engine._tool_env(), stdout=subprocess.PIPE, timeout=deadline.remaining()) as proc:
        yield io.BufferedReader(ArchiveClock(proc.stdout), 1 << 20) if tool == "pg_dump" else proc.stdout
        if proc.wait() != 0:
            raise tool_failure(engine, tool, proc, deadline)


def copy_out(engine: PostgresEngine, t: TableInfo, snapshot: str | None, deadline: Deadline,
             key_range: KeyRange | None = None, *, where: sql.Composable | None = None
             ) -> AbstractContextManager[IO[bytes]]:
    """A table's rows (or one key range of them, or those matching `where`) as COPY
    text, via psql (its big buffered writes beat per-row reads)."""
    query = copy_query(t, key_range, where=where)
    argv = [engine._tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *engine._conn_args(engine.conn.database)]
    if snapshot:
        argv += ["-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                 "-c", f"SET TRANSACTION SNAPSHOT '{snapshot}'"]
    argv += ["-c", "SET synchronize_seqscans = off; " + COPY_SETTINGS, "-c", query]
    if snapshot:
        argv += ["-c", "COMMIT"]
    return tool_stream(engine, "psql", argv, deadline)


def tool_failure(engine: PostgresEngine, tool: str, proc: ToolProcess, deadline: Deadline) -> VaultflowError:
    if proc.timed_out:
        return TransientError(
            f"{tool} for {engine.describe()} ran past the run's {deadline.seconds or 0:.0f} s deadline and was "
            "killed",
            "raise the timeout or look at the server's load",
        )
    line = proc.last_error_line()
    low = line.lower()
    stderr = proc.stderr_text().lower()
    if ("server version" in low and "version mismatch" in stderr) or "unsupported version" in stderr:
        return ToolVersionMismatch(
            f"{tool} cannot work with the server at {engine.server_label()}: {line}",
            "install a matching PostgreSQL client or set bin_dir",
        )
    return engine._tool_error(tool, line)


def _quoted_pattern(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
