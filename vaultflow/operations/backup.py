"""Backup: dump a database into a repository and write the manifest last.

Kinds (docs/design.md, "Chains"):
- full starts a new chain and stores every chunk it needs in it;
- incremental joins the newest chain of the database and stores only chunks the chain
  does not hold yet;
- differential joins the newest chain too, but reuses only the chunks of its full snapshot.
Both carry the parent's streams over without dumping at all when the engine's change
fingerprint equals the parent's. Every manifest lists every chunk it needs, so every
snapshot restores on its own.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import blake3

from vaultflow import __version__
from vaultflow.audit import audited
from vaultflow.engines.base import GLOBALS_STREAM, DatabaseEngine, RowTap, StreamSource, server_wide_objects
from vaultflow.engines.registry import spec
from vaultflow.errors import SourceUnreadable
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.manifest import (
    SKIPPED_PATHS_KEPT,
    SkippedEntries,
    SnapshotKind,
    SnapshotManifest,
    StreamManifest,
    TableStats,
)
from vaultflow.repository.repository import ByteSink, ChunkWriter, ProgressCallback, Repository
from vaultflow.requests import BackupRequest

ParentReader = Callable[[StreamManifest, ByteSink], None]
PATCH_WORKERS = min(4, os.cpu_count() or 1)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupPlan:
    """What a backup run joins: its effective kind, its chain, its parent, and the set of
    snapshots one run takes of a database and its file trees (`set_members`, see the
    manifest field; empty for a snapshot taken alone)."""

    kind: SnapshotKind
    chain: str
    parent: SnapshotManifest | None = None
    note: str | None = None
    set_members: tuple[str, ...] = ()

    @property
    def parent_id(self) -> str | None:
        return self.parent.id if self.parent else None


def plan_backup(repo: Repository, engine: DatabaseEngine, kind: SnapshotKind, snapshot_id: str) -> BackupPlan:
    """Choose chain and parent from the repository's manifests (never from the catalog)."""
    if kind == "full":
        return BackupPlan("full", chain=snapshot_id)
    same_db = [m for m in repo.manifests() if m.base_backup is None  # a base backup is no logical parent
               and (m.engine, m.server, m.database) == (engine.engine, engine.server_label(), engine.database)]
    if not same_db:
        return BackupPlan("full", chain=snapshot_id,
                          note=f"no earlier snapshot of {engine.describe()}: this {kind} backup starts a new "
                               "chain as a full backup")
    newest = max(same_db, key=lambda m: (m.started_at, m.id))
    if kind == "incremental":
        return BackupPlan("incremental", chain=newest.chain, parent=newest)
    fulls = [m for m in same_db if m.chain == newest.chain and m.kind == "full"]
    if not fulls:
        return BackupPlan("full", chain=snapshot_id,
                          note=f"the newest chain of {engine.describe()} has no full snapshot any more: this "
                               "differential backup starts a new chain as a full backup")
    return BackupPlan("differential", chain=newest.chain, parent=fulls[0])


def backup_database(
    engine: DatabaseEngine,
    repo: Repository,
    request: BackupRequest = BackupRequest(),  # noqa: B008 - frozen, never changed
    *,
    snapshot_id: str,
    plan: BackupPlan | None = None,
    progress: ProgressCallback | None = None,
    lock_wait: float = 600.0,
) -> SnapshotManifest:
    """Stream a consistent dump into `repo`; return the manifest once it is durable.

    `request` holds the user's options, each declared once (vaultflow/requests.py); an
    empty table list means every table. The keywords are not options: the snapshot id and
    plan of this run, its progress callback and how long to wait for the repository lock.

    Without `plan`, a full backup starting its own chain. Chunks already stored in the
    chain (by an earlier attempt with the same ids, or by the parent) are reused. If
    anything fails, no manifest is written, so no snapshot becomes visible.

    `request.repair` dumps everything and writes every chunk again, even those the chain
    holds: chunks that verify found missing or damaged are replaced wherever the new dump
    produces the same content, which heals the older snapshots of the chain that use them.

    `request.include_globals` adds the server's roles/users and grants as a "globals"
    stream (password hashes only with `globals_passwords`); it is taken fresh every time.

    Entries the engine may not read (files) fail the backup, listed, before any stream is
    stored; with `request.skip_unreadable` they are left out, logged and listed in the manifest.

    Table subsets, globals or skip_unreadable on an engine that lacks them (Capabilities)
    are refused before the repository is touched.
    """
    include_tables = request.include_tables or None
    exclude_tables = request.exclude_tables or None
    if include_tables or exclude_tables:
        spec(engine.engine).require("table_subsets", "drop --include-table/--exclude-table: back up the whole "
                                                     "database")
    if request.include_globals:
        spec(engine.engine).require("globals", "drop --globals: this server's users are not backed up with it")
    if request.skip_unreadable:
        spec(engine.engine).require("skip_unreadable", "drop --skip-unreadable: the database is read whole")
    plan = plan or BackupPlan("full", chain=snapshot_id)
    started = datetime.now(UTC)
    # The shared lock keeps prune from collecting this backup's chunks before the manifest
    # names them; it waits for a running prune rather than failing.
    table_filter = [f"include:{p}" for p in include_tables or []] + [f"exclude:{p}" for p in exclude_tables or []]
    with (audited(repo, "backup", object=snapshot_id, database=engine.database) as note,
          RepositoryLock(repo, "shared", f"backup of {engine.describe()}", wait=lock_wait) as lock):
        if plan.parent is not None and plan.parent.id not in repo.snapshot_ids():
            # Planned before the lock was taken; a prune has forgotten the parent since.
            plan = replace(plan_backup(repo, engine, plan.kind, snapshot_id), set_members=plan.set_members)
        # Taken before the dump: a change racing the dump makes the next fingerprint differ.
        fingerprint = engine.fingerprint()
        parent = plan.parent
        if parent is not None and parent.table_filter != table_filter:
            parent = None  # a parent with other table subsets has other rows: nothing carries over
        globals_source = (server_wide_objects(engine).globals_source(passwords=request.globals_passwords)
                          if request.include_globals else None)
        if not request.repair and parent is not None and fingerprint is not None and parent.fingerprint == fingerprint:
            if parent.skipped is not None:
                _check_unreadable(engine, parent.skipped.paths, parent.skipped.count, request.skip_unreadable)
            carried = [s for s in parent.streams if s.name != GLOBALS_STREAM]
            if globals_source is not None:
                carried += _store_sources(repo.writer(plan.chain), [globals_source], 1, progress)[0]
            manifest = _manifest(engine, snapshot_id, plan, started, streams=carried,
                                 tables=parent.tables, versions=parent.tool_versions, fingerprint=fingerprint,
                                 reused_from=parent.id, table_filter=table_filter,
                                 schema_inventory=parent.schema_inventory, skipped=parent.skipped,
                                 binlog=parent.binlog)
        else:
            known: dict[str, int] | None = None
            if request.repair:
                known = {}
            elif plan.kind == "differential" and parent is not None:
                known = {c.id: c.stored for s in parent.streams for c in s.chunks}
            writer = repo.writer(plan.chain, known=known, repair=request.repair)
            previous = parent.streams if parent is not None and not request.repair else None
            with engine.open_dump(table_checksums=request.table_checksums, timeout=request.timeout_seconds,
                                  include_tables=include_tables, exclude_tables=exclude_tables,
                                  parent_streams=previous) as session:
                _check_unreadable(engine, session.unreadable, len(session.unreadable), request.skip_unreadable)
                sources = session.sources + ([globals_source] if globals_source is not None else [])
                read_parent = None
                if previous is not None and parent is not None and not repo.can_read_data:
                    _log.warning("segment patches are off: the key opened is a %s key, which cannot read the "
                                 "parent snapshot's chunks; changed segments are stored whole", repo.role)
                elif previous is not None and parent is not None:
                    def read_parent(stream: StreamManifest, sink: ByteSink, parent: SnapshotManifest = parent
                                    ) -> None:
                        repo.read_stream(parent.id, stream, sink, parent.chain)
                streams, tables = _store_sources(writer, sources, request.jobs, progress, read_parent)
            if parent is not None and (session.unchanged or session.carried):
                streams, tables = _carry_over(parent, session.unchanged, session.carried, streams, tables)
            # Tables stored as several streams get statistics combined from those streams'.
            combined = engine.combined_table_stats(streams)
            tables = [t for t in tables if t.qualified not in {c.qualified for c in combined}] + combined
            manifest = _manifest(engine, snapshot_id, plan, started, streams=streams,
                                 tables=sorted(session.tables + tables, key=lambda t: t.qualified),
                                 versions=session.versions, fingerprint=fingerprint, table_filter=table_filter,
                                 schema_inventory=session.inventory, skipped=_skipped(session.unreadable),
                                 binlog=session.binlog)
        lock.check_held()
        repo.save_manifest(manifest)
        note.detail = f"{manifest.kind} of {engine.describe()}, {manifest.logical_size} bytes"
    return manifest


_PATHS_SHOWN = 5  # unreadable paths named in the error line


def _check_unreadable(engine: DatabaseEngine, paths: list[str], count: int, skip: bool) -> None:
    """Fail on unreadable entries (one line: how many, the first few, the fixes) unless
    told to skip them; then name each in a warning."""
    if not count:
        return
    if not skip:
        shown = ", ".join(paths[:_PATHS_SHOWN]) + (f" and {count - _PATHS_SHOWN} more" if count > _PATHS_SHOWN
                                                    else "")
        raise SourceUnreadable(f"{count} entr{'y' if count == 1 else 'ies'} of {engine.describe()} cannot be read "
                               f"(permission denied): {shown}",
                               "grant the backup's user read access, leave them out with --exclude-table, or "
                               "pass --skip-unreadable to back up the rest and list them in the snapshot")
    for path in paths[:SKIPPED_PATHS_KEPT]:
        _log.warning("left out %s of %s: permission denied (--skip-unreadable)", path, engine.describe())
    if count > SKIPPED_PATHS_KEPT:
        _log.warning("left out %d more unreadable entries of %s", count - SKIPPED_PATHS_KEPT, engine.describe())


def _skipped(paths: list[str]) -> SkippedEntries | None:
    return SkippedEntries(count=len(paths), paths=paths[:SKIPPED_PATHS_KEPT]) if paths else None


def _carry_over(parent: SnapshotManifest, unchanged: list[str], carried: list[str], streams: list[StreamManifest],
                tables: list[TableStats]) -> tuple[list[StreamManifest], list[TableStats]]:
    """Add the parent's streams of the tables the engine found unchanged, with their
    statistics, and the single streams (table segments) it named as carried."""
    keep = set(unchanged)
    names = set(carried)
    taken = [s for s in parent.streams if _table_of(s) in keep or s.name in names]
    table_streams = sorted([s for s in streams if _table_of(s)] + taken, key=_stream_order)
    rest = [s for s in streams if not _table_of(s)]  # the schema first, data extras last
    stats = tables + [t for t in parent.tables if t.qualified in keep]
    return [*rest[:1], *table_streams, *rest[1:]], stats


def _stream_order(stream: StreamManifest) -> tuple[str, int]:
    return _table_of(stream) or "", int(stream.meta.get("segment", "0"))


def _table_of(stream: StreamManifest) -> str | None:
    return f"{stream.meta['schema']}.{stream.meta['table']}" if "table" in stream.meta else None


def _store_sources(writer: ChunkWriter, sources: list[StreamSource], jobs: int,
                   progress: ProgressCallback | None, read_parent: ParentReader | None = None
                   ) -> tuple[list[StreamManifest], list[TableStats]]:
    """Store every source; table sources run `jobs` at a time and yield their statistics.
    A source that offers a patch on a parent's stream is stored as one when that works."""

    def store(source: StreamSource) -> tuple[StreamManifest, TableStats | None]:
        tap = RowTap() if source.table else None
        with source.open() as reader:
            stream = writer.write_stream(source.name, source.format, reader, progress, tap=tap or source.tap,
                                         meta=source.meta)
        stats = tap.stats(*source.table) if tap and source.table else None
        if stats is not None and "segment" in source.meta:
            # A segment's statistics live with it, so a later snapshot can carry it over.
            meta = {**stream.meta, "rows": str(stats.rows), "checksum": stats.checksum or ""}
            return stream.model_copy(update={"meta": meta}), None
        return stream, stats

    patches = [s for s in sources if s.table and s.patch is not None and read_parent is not None]
    tables = [s for s in sources if s.table and s not in patches]
    results: dict[str, tuple[StreamManifest, TableStats | None]] = {}
    for source in sources:
        if not source.table:
            results[source.name] = store(source)
    # `jobs` bounds the sessions on the database; patches are built from the repository
    # (CPU and storage reads) beside them, PATCH_WORKERS at a time. A patch the engine
    # declines is read from the database after all, in the `jobs` pool.
    with ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="vf-dump") as pool, \
            ThreadPoolExecutor(max_workers=PATCH_WORKERS, thread_name_prefix="vf-patch") as patch_pool:

        def patch_or_read(source: StreamSource) -> tuple[StreamManifest, TableStats | None]:
            assert read_parent is not None
            patched = _store_patch(writer, source, read_parent, progress)
            return (patched, None) if patched is not None else pool.submit(store, source).result()

        futures = {s.name: pool.submit(store, s) for s in tables}
        futures.update((s.name, patch_pool.submit(patch_or_read, s)) for s in patches)
        try:
            done, _ = wait(futures.values(), return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            results.update((name, fut.result()) for name, fut in futures.items())
        except BaseException:
            # Stop the other tables' dumps now (their tools are killed when their streams
            # stop) instead of letting them run to the end of a backup that has failed.
            writer.abort()
            for fut in futures.values():
                fut.cancel()
            wait(futures.values())
            raise
    ordered = [results[s.name] for s in sources]
    return [r[0] for r in ordered], [r[1] for r in ordered if r[1] is not None]


_thread_buffers = threading.local()


class _BufferSink:
    """Collects a stream of known size in one buffer. The buffer is the thread's own and
    is reused by its next _BufferSink: a fresh one costs a page fault every 4 KiB."""

    def __init__(self, size: int) -> None:
        data: bytearray | None = getattr(_thread_buffers, "data", None)
        try:
            if data is None:
                raise BufferError
            if len(data) > size:
                del data[size:]
            elif len(data) < size:
                data.extend(bytes(size - len(data)))
        except BufferError:  # still exported by a view of an earlier use: take a new one
            data = bytearray(size)
        _thread_buffers.data = self.data = data
        self._view = memoryview(data)
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._view[self.size:self.size + len(data)] = data
        self.size += len(data)
        return len(data)

    def close(self) -> None:
        self._view.release()


def _store_patch(writer: ChunkWriter, source: StreamSource, read_parent: ParentReader,
                 progress: ProgressCallback | None) -> StreamManifest | None:
    """Store `source` as a patch on its base (the engine's PatchOffer): only the patch's
    chunks are new, the base's chunks are referred to as they are. The statistics are those
    of the patched rows. None when the engine declines; then the source is read."""
    assert source.patch is not None
    base = source.patch.base_stream()
    if base is None:
        return None
    collected = _BufferSink(base.size)
    try:
        read_parent(base, collected)  # verifies the base's size and digest
    finally:
        collected.close()
    rows = collected.data
    built = source.patch.patched(rows)
    if built is None:
        return None
    patch = writer.write_stream(source.name, source.format, io.BytesIO(built.patch), progress)
    digest = blake3.blake3(built.patch, max_threads=blake3.blake3.AUTO)
    digest.update(rows)
    meta = {**source.meta, **source.patch.meta, "rows": str(built.rows),
            "checksum": built.checksum, "patch_bytes": str(len(built.patch)),
            "patch_chunks": str(len(patch.chunks)), "patch_splices": str(built.splices),
            "base_rows": str(built.base_rows),
            "base_bytes": str(base.size), "base_digest": base.digest}
    return StreamManifest(name=source.name, format=source.format, size=len(built.patch) + base.size,
                          blake3=digest.hexdigest(), chunks=[*patch.chunks, *base.chunks], meta=meta)


def _manifest(engine: DatabaseEngine, snapshot_id: str, plan: BackupPlan, started: datetime, **fields: object
              ) -> SnapshotManifest:
    return SnapshotManifest.model_validate({
        "id": snapshot_id, "chain": plan.chain, "parent": plan.parent_id, "kind": plan.kind,
        "engine": engine.engine, "server": engine.server_label(), "database": engine.database,
        "started_at": started, "finished_at": datetime.now(UTC), "hostname": socket.gethostname(),
        "vaultflow_version": __version__,
        "streams": fields["streams"], "tables": fields["tables"], "tool_versions": fields["versions"],
        "fingerprint": fields["fingerprint"], "reused_from": fields.get("reused_from"),
        "table_filter": fields["table_filter"], "schema_inventory": fields.get("schema_inventory"),
        "skipped": fields.get("skipped"), "set_members": list(plan.set_members), "binlog": fields.get("binlog"),
    })
