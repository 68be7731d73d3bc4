"""Restore and export: rebuild a snapshot's native dump from the repository."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from vaultflow.audit import audited
from vaultflow.engines.base import GLOBALS_STREAM, DatabaseEngine, server_wide_objects
from vaultflow.engines.registry import spec, spec_for_format
from vaultflow.errors import InputError, StorageUnwritable
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.manifest import SnapshotManifest, StreamManifest
from vaultflow.repository.repository import ByteSink, ProgressCallback, Repository
from vaultflow.requests import RestoreRequest


def restore_snapshot(
    repo: Repository,
    snapshot_id: str,
    target: DatabaseEngine,
    request: RestoreRequest = RestoreRequest(),  # noqa: B008 - frozen, never changed
    *,
    progress: ProgressCallback | None = None,
) -> SnapshotManifest:
    """Load a snapshot into `target` as `request` says; the target changes only if every
    check passed.

    `request` holds the user's options, each declared once (vaultflow/requests.py):
    `jobs` tables load at once; `tables` (schema.name; empty: every table) restricts the
    rows restored. `include_globals` first creates the roles/users of the snapshot's
    globals stream that the target server lacks (so ownership and grants in the dump find
    them). `server_locale` creates the database with the server's default encoding and
    locale instead of the snapshot's. An option the target's engine lacks (Capabilities)
    is refused before the repository or the target is touched.
    """
    repo.require("restore", "restore")
    refuse_missing_restore_capabilities(target, request)
    tables = request.tables or None
    with (audited(repo, "restore", object=snapshot_id, database=target.database,
                  detail=f"into {target.describe()}"),
          RepositoryLock(repo, "shared", f"restore into {target.describe()}", wait=60)):
        manifest = repo.load_manifest(snapshot_id)
        check_target_engine(manifest, target)
        if tables is not None:
            known = sorted(t.qualified for t in manifest.tables)
            unknown = sorted(set(tables) - set(known))
            if unknown:
                listed = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
                raise InputError(f"snapshot {manifest.short_id} has no table {', '.join(unknown)} "
                                 f"(it has {listed or 'none'})",
                                 "name tables as the snapshot does: schema.name for PostgreSQL, name for MySQL")
        read = _reader(repo, manifest, progress)
        data = [s for s in manifest.streams if s.name != GLOBALS_STREAM]
        if request.include_globals:
            found = [s for s in manifest.streams if s.name == GLOBALS_STREAM]
            if not found:
                raise InputError(f"snapshot {manifest.short_id} holds no server-wide objects",
                                 "back up with --globals first, or restore without --globals")
            server_wide_objects(target).restore_globals(found[0], read)
        target.restore(data, read, replace=request.replace, no_owner=not request.owner,
                       timeout=request.timeout_seconds, jobs=request.jobs, tables=tables,
                       server_locale=request.server_locale)
    return manifest


def check_set_restore(repo: Repository, snapshot_id: str, file_targets: list[DatabaseEngine], *,
                      replace: bool = False) -> list[str]:
    """The ids of the file tree snapshots of `snapshot_id`'s backup set, in the order of
    `file_targets`, once the set is known to be restorable there: the snapshot is a set's
    database member, every member exists, there is one target per tree, each a file tree
    that is new, empty or `replace`d. Raises InputError (one line) before anything is touched."""
    manifest = repo.load_manifest(snapshot_id)
    members = manifest.set_members
    if not members:
        raise InputError(f"snapshot {manifest.short_id} was backed up alone, without file trees",
                         "drop --files-to, or give the database snapshot of a backup set")
    if members[0] != manifest.id:
        raise InputError(f"snapshot {manifest.short_id} is a file tree of backup set {members[0][:8]}",
                         f"restore the set through its database snapshot: vaultflow restore {members[0][:8]} ...")
    trees = members[1:]
    if len(file_targets) != len(trees):
        raise InputError(f"backup set {manifest.short_id} holds {len(trees)} file tree(s) but {len(file_targets)} "
                         "--files-to target(s) were given",
                         "give one --files-to per file tree, in the order vaultflow show lists them")
    present = set(repo.snapshot_ids())
    missing = [t[:8] for t in trees if t not in present]
    if missing:
        raise InputError(f"backup set {manifest.short_id} is incomplete: file tree snapshot(s) "
                         f"{', '.join(missing)} were never written (their backup failed)",
                         "restore the database alone (drop --files-to), or a complete set")
    if len({t.describe() for t in file_targets}) != len(file_targets):
        raise InputError("two --files-to targets name the same directory", "give each file tree its own directory")
    for tree_id, target in zip(trees, file_targets, strict=True):
        check_target_engine(repo.load_manifest(tree_id), target)
        target.check_restore_target(replace)
    return trees


def refuse_missing_restore_capabilities(target: DatabaseEngine, request: RestoreRequest) -> None:
    """Raise CapabilityMissing (one line: the engine, the alternative) for an option of
    `request` the target's engine does not declare."""
    if not (request.tables or request.jobs > 1 or request.include_globals or request.server_locale):
        return
    engine = spec(target.engine)
    if request.tables:
        engine.require("table_restore", "drop --table: restore the whole snapshot, then copy the tables you need")
    if request.jobs > 1:
        engine.require("parallel_restore", "drop --jobs: the tables load one at a time")
    if request.include_globals:
        engine.require("globals", "drop --globals: create the server's users and roles by hand")
    if request.server_locale:
        engine.require("server_locale", "drop --server-locale: the database gets the snapshot's encoding")


def _reader(repo: Repository, manifest: SnapshotManifest, progress: ProgressCallback | None
            ) -> Callable[[StreamManifest, ByteSink], None]:
    """Reads streams for an engine; progress reports the bytes of all streams together,
    also when the engine reads several at once."""
    done: dict[str, int] = {}
    lock = threading.Lock()

    def stream_progress(name: str) -> ProgressCallback | None:
        if progress is None:
            return None

        def report(read: int, _: int) -> None:
            with lock:  # reported under the lock, so the total never goes backwards
                done[name] = read
                progress(sum(done.values()), 0)
        return report

    def read(stream: StreamManifest, sink: ByteSink) -> None:
        repo.read_stream(manifest.id, stream, sink, manifest.chain, progress=stream_progress(stream.name))
    return read


def check_target_engine(manifest: SnapshotManifest, target: DatabaseEngine) -> None:
    """Refuse a target of another engine than the snapshot's streams need, and a physical base
    backup, which only `vaultflow pitr restore` lays out (into a data directory)."""
    refuse_base_backup(manifest)
    found = spec_for_format(manifest.streams[0].format)
    if found is None or found.name != target.engine:
        raise InputError(
            f"snapshot {manifest.short_id} is a {manifest.engine} backup; it cannot be restored "
            f"into {target.describe()}",
            f"choose a {manifest.engine} target",
        )


def refuse_base_backup(manifest: SnapshotManifest) -> None:
    """InputError (one line) for a physical base backup, which is no database dump."""
    if manifest.base_backup is not None:
        raise InputError(f"snapshot {manifest.short_id} is a physical base backup of cluster "
                         f"{manifest.base_backup.system_identifier}, not a database dump",
                         f"lay it out with vaultflow pitr restore {manifest.short_id} --to-time T --pgdata DIR")


def export_snapshot(
    repo: Repository, snapshot_id: str, destination: str | os.PathLike[str],
    *, progress: ProgressCallback | None = None,
) -> SnapshotManifest:
    """Write the snapshot as a file its engine's own tools restore; it appears only when verified.

    SQLite: the database file. PostgreSQL: the pg_dump custom archive (first-release
    snapshots) or a plain SQL script for `psql -f` (per-table snapshots). MySQL: the
    mariadb-dump SQL script, for `mariadb DBNAME < file`.
    """
    repo.require("restore", "export")
    with (audited(repo, "export", object=snapshot_id, detail=f"to {destination}") as note,
          RepositoryLock(repo, "shared", "export", wait=60)):
        manifest = _export(repo, snapshot_id, destination, progress)
        note.database = manifest.database
        return manifest


def _export(repo: Repository, snapshot_id: str, destination: str | os.PathLike[str],
            progress: ProgressCallback | None) -> SnapshotManifest:
    manifest = repo.load_manifest(snapshot_id)
    refuse_base_backup(manifest)
    dest = Path(destination).expanduser().absolute()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    except OSError as exc:
        raise StorageUnwritable(f"cannot write {dest}: {exc.strerror}", "choose a writable path") from None
    try:
        with os.fdopen(fd, "wb") as out:
            read = _reader(repo, manifest, progress)
            found = spec_for_format(manifest.streams[0].format)
            exporter = found.exporter_for(manifest.streams[0].format) if found is not None else None
            if exporter is not None:
                exporter([s for s in manifest.streams if s.name != GLOBALS_STREAM], read, out)
            else:
                read(manifest.streams[0], out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return manifest
