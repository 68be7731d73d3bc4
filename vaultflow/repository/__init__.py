"""The on-storage repository format, version 1 (see docs/design.md)."""

from vaultflow.repository.manifest import ChunkRef, SnapshotManifest, StreamManifest, TableStats
from vaultflow.repository.repository import (
    ChunkerParams,
    ChunkWriter,
    Repository,
    new_object_id,
    open_repository,
)

__all__ = [
    "ChunkRef",
    "ChunkWriter",
    "ChunkerParams",
    "Repository",
    "SnapshotManifest",
    "StreamManifest",
    "TableStats",
    "new_object_id",
    "open_repository",
]
