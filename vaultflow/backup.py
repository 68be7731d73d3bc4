"""Backup: dump a database into a repository and write the manifest last."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from vaultflow import __version__
from vaultflow.engines.base import DatabaseEngine
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.manifest import SnapshotKind, SnapshotManifest
from vaultflow.repository.repository import ProgressCallback, Repository


def backup_database(
    engine: DatabaseEngine,
    repo: Repository,
    *,
    snapshot_id: str,
    chain: str,
    kind: SnapshotKind = "full",
    parent: str | None = None,
    table_checksums: bool = True,
    timeout: float | None = None,
    progress: ProgressCallback | None = None,
    lock_wait: float = 600.0,
) -> SnapshotManifest:
    """Stream a consistent dump into `repo`; return the manifest once it is durable.

    Chunks already stored in `chain` (by an earlier attempt with the same ids) are reused.
    If anything fails, no manifest is written, so no snapshot becomes visible.
    """
    started = datetime.now(UTC)
    # The shared lock keeps prune from collecting this backup's chunks before the manifest
    # names them; it waits for a running prune rather than failing.
    with RepositoryLock(repo, "shared", f"backup of {engine.describe()}", wait=lock_wait):
        manifest = _dump(engine, repo, snapshot_id=snapshot_id, chain=chain, kind=kind, parent=parent,
                         started=started, table_checksums=table_checksums, timeout=timeout, progress=progress)
    return manifest


def _dump(engine: DatabaseEngine, repo: Repository, *, snapshot_id: str, chain: str, kind: SnapshotKind,
          parent: str | None, started: datetime, table_checksums: bool, timeout: float | None,
          progress: ProgressCallback | None) -> SnapshotManifest:
    writer = repo.writer(chain)
    with engine.open_dump(table_checksums=table_checksums, timeout=timeout) as session:
        stream = writer.write_stream(session.stream_name, session.format, session.stream, progress)
    manifest = SnapshotManifest(
        id=snapshot_id, chain=chain, parent=parent, kind=kind, engine=engine.engine,
        server=engine.server_label(), database=engine.database, started_at=started,
        finished_at=datetime.now(UTC), hostname=socket.gethostname(),
        vaultflow_version=__version__, tool_versions=session.versions, streams=[stream],
        tables=session.tables,
    )
    repo.save_manifest(manifest)
    return manifest
