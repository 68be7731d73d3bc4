"""The on-storage repository format, version 1 (see docs/design.md).

The names below load on first use (PEP 562): `vaultflow-wal`, which PostgreSQL starts once per WAL
file, opens a repository without importing the pydantic manifest models (docs/design.md, R77).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaultflow.lazy_exports import load_export

if TYPE_CHECKING:
    from vaultflow.repository.manifest import ChunkRef, SnapshotManifest, StreamManifest, TableStats
    from vaultflow.repository.repository import (
        ChunkerParams,
        ChunkWriter,
        Repository,
        new_object_id,
        open_repository,
    )

_MODULE_OF = {
    "ChunkRef": "manifest",
    "SnapshotManifest": "manifest",
    "StreamManifest": "manifest",
    "TableStats": "manifest",
    "ChunkWriter": "repository",
    "ChunkerParams": "repository",
    "Repository": "repository",
    "new_object_id": "repository",
    "open_repository": "repository",
}

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


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first use."""
    return load_export(__name__, _MODULE_OF, name)
