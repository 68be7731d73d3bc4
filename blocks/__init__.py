"""Prefect blocks: typed, saved configuration for engines and repositories.

Register them for the UI with `prefect block register -m blocks`. Blocks hold settings
and secrets only; they connect when a method that needs a connection is called.
"""

from blocks.archive import ArchivePolicy
from blocks.engines import MySQLServer, PostgresServer, SqliteDatabase, SqlServer
from blocks.repository import BackupRepository
from blocks.resolve import resolve_engine, resolve_repository

__all__ = [
    "ArchivePolicy",
    "BackupRepository",
    "MySQLServer",
    "PostgresServer",
    "SqliteDatabase",
    "SqlServer",
    "resolve_engine",
    "resolve_repository",
]
