"""Restore and export: rebuild a snapshot's native dump from the repository."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vaultflow.engines.base import DatabaseEngine
from vaultflow.errors import InputError, StorageUnwritable
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import ByteSink, ProgressCallback, Repository

_ENGINE_OF_FORMAT = {"pg_dump-custom": "postgresql", "sqlite3-file": "sqlite"}


def restore_snapshot(
    repo: Repository,
    snapshot_id: str,
    target: DatabaseEngine,
    *,
    replace: bool = False,
    no_owner: bool = False,
    timeout: float | None = None,
    progress: ProgressCallback | None = None,
) -> SnapshotManifest:
    """Load a snapshot into `target`; the target changes only if every check passed."""
    with RepositoryLock(repo, "shared", f"restore into {target.describe()}", wait=60):
        return _restore(repo, snapshot_id, target, replace=replace, no_owner=no_owner, timeout=timeout,
                        progress=progress)


def _restore(repo: Repository, snapshot_id: str, target: DatabaseEngine, *, replace: bool, no_owner: bool,
             timeout: float | None, progress: ProgressCallback | None) -> SnapshotManifest:
    manifest = repo.load_manifest(snapshot_id)
    stream = manifest.streams[0]
    if _ENGINE_OF_FORMAT.get(stream.format) != target.engine:
        raise InputError(
            f"snapshot {manifest.short_id} is a {manifest.engine} backup; it cannot be restored "
            f"into {target.describe()}",
            f"choose a {manifest.engine} target",
        )

    def feed(sink: ByteSink) -> None:
        repo.read_stream(manifest.id, stream, sink, manifest.chain, progress=progress)

    target.restore(stream.format, feed, replace=replace, no_owner=no_owner, timeout=timeout)
    return manifest


def export_snapshot(
    repo: Repository, snapshot_id: str, destination: str | os.PathLike[str],
    *, progress: ProgressCallback | None = None,
) -> SnapshotManifest:
    """Write the snapshot's native dump to a file; the file appears only when verified."""
    with RepositoryLock(repo, "shared", "export", wait=60):
        return _export(repo, snapshot_id, destination, progress)


def _export(repo: Repository, snapshot_id: str, destination: str | os.PathLike[str],
            progress: ProgressCallback | None) -> SnapshotManifest:
    manifest = repo.load_manifest(snapshot_id)
    stream = manifest.streams[0]
    dest = Path(destination).expanduser().absolute()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    except OSError as exc:
        raise StorageUnwritable(f"cannot write {dest}: {exc.strerror}", "choose a writable path") from None
    try:
        with os.fdopen(fd, "wb") as out:
            repo.read_stream(manifest.id, stream, out, manifest.chain, progress=progress)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return manifest
