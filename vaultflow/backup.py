"""Backup: dump a database into a repository and write the manifest last."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from vaultflow import __version__
from vaultflow.engines.base import DatabaseEngine
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
) -> SnapshotManifest:
    """Stream a consistent dump into `repo`; return the manifest once it is durable.

    Chunks already stored in `chain` (by an earlier attempt with the same ids) are reused.
    If anything fails, no manifest is written, so no snapshot becomes visible.
    """
    started = datetime.now(UTC)
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
