"""The on-storage repository format, version 1 (see docs/design.md).

The names below load on first use (PEP 562): `vaultflow-wal`, which PostgreSQL starts once per WAL
file, opens a repository without importing the pydantic manifest models (docs/design.md, R77).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

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
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
