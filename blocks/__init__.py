"""Prefect blocks: typed, saved configuration for engines and repositories.

Register them for the UI with `prefect block register -m blocks`. Blocks hold settings
and secrets only; they connect when a method that needs a connection is called.

The block classes are imported on first use: `blocks.repository` pulls in prefect-aws and
prefect-azure, seconds of imports that a command given only URLs and paths does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blocks.archive import ArchivePolicy
    from blocks.engines import FileTree, MySQLServer, PostgresServer, SqliteDatabase, SqlServer
    from blocks.repository import BackupRepository
    from blocks.resolve import resolve_engine, resolve_repository

_WHERE = {
    "ArchivePolicy": "blocks.archive",
    "BackupRepository": "blocks.repository",
    "FileTree": "blocks.engines",
    "MySQLServer": "blocks.engines",
    "PostgresServer": "blocks.engines",
    "SqliteDatabase": "blocks.engines",
    "SqlServer": "blocks.engines",
    "resolve_engine": "blocks.resolve",
    "resolve_repository": "blocks.resolve",
}
__all__ = [
    "ArchivePolicy",
    "BackupRepository",
    "FileTree",
    "MySQLServer",
    "PostgresServer",
    "SqliteDatabase",
    "SqlServer",
    "resolve_engine",
    "resolve_repository",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return __all__
