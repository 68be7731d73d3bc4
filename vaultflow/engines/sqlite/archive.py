"""SQLite as an archival source: its dialect of the archive protocol (vaultflow/archive)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from vaultflow.archive.sources import ArchiveSource, Column, SourceConnection, TableShape
from vaultflow.engines.sqlite.engine import SqliteEngine
from vaultflow.errors import DatabaseNotFound, VaultflowError


class SqliteSource(ArchiveSource):
    """An SQLite file; a batch holds the database's write lock (BEGIN IMMEDIATE)."""

    placeholder = "?"
    lock_clause = ""
    database_engine: SqliteEngine

    def __init__(self, database_engine: SqliteEngine) -> None:
        super().__init__(database_engine)

    def connect(self) -> SourceConnection:
        path = self.database_engine.path
        if not path.exists():
            raise DatabaseNotFound(f"SQLite database {path} does not exist", "check the path")
        raw = sqlite3.connect(path, isolation_level=None, timeout=60)
        return SourceConnection(raw, self)

    def map_error(self, exc: BaseException) -> VaultflowError | None:
        return None  # SQLite's errors name the file and carry no secret: raised as they are

    def is_age_column(self, col: Column) -> bool:
        return super().is_age_column(col) or sqlite_is_datetime(col.source_type)

    def begin(self, conn: SourceConnection) -> None:
        if conn.raw.in_transaction:
            conn.raw.execute("ROLLBACK")
        conn.raw.execute("BEGIN IMMEDIATE")

    def describe(self, conn: SourceConnection, table: str) -> TableShape | None:
        exists = conn.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table])
        if not exists:
            return None
        info = conn.query(f"PRAGMA table_xinfo({self.quote(table)})")
        columns = []
        pk: list[tuple[int, str]] = []
        for _cid, name, decl, _notnull, _default, pkpos, hidden in info:
            columns.append(Column(name, decl or "", _sqlite_kind(decl or ""), generated=hidden in (2, 3)))
            if pkpos:
                pk.append((pkpos, name))
        return TableShape(None, table, columns, [name for _, name in sorted(pk)])

    def unique_keys(self, conn: SourceConnection, shape: TableShape) -> list[list[str]]:
        out = []
        for row in conn.query(f"PRAGMA index_list({self.quote(shape.name)})"):
            name, unique, partial = row[1], row[2], row[4]
            if unique and not partial:
                cols = conn.query(f"PRAGMA index_info({self.quote(name)})")
                out.append([c[2] for c in sorted(cols)])
        return out

    def age_condition(self, age: Column) -> str:
        q = self.quote(age.name)
        return f"{q} IS NOT NULL AND datetime({q}) < datetime(?)"

    def store_value(self, col: Column, value: Any) -> Any:
        """sqlite3 binds only int, float, str, bytes and None: others (rows archived from
        another engine) become what SQLite stores for the column's affinity."""
        if value is None or isinstance(value, int | float | str | bytes):
            return value
        if isinstance(value, Decimal):
            return float(value) if col.kind == "float64" else str(value)
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.isoformat(sep=" ")
        if isinstance(value, date | time):
            return value.isoformat()
        return str(value)

    def cutoff_param(self, age: Column, cutoff: datetime) -> Any:
        return cutoff.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    def estimate_bytes_sql(self, shape: TableShape, where: str) -> str:
        lengths = " + ".join(f"coalesce(length({self.quote(c.name)}), 0)" for c in shape.columns) or "0"
        return f"SELECT count(*), coalesce(sum({lengths}), 0) FROM {self.qualified(shape)} WHERE {where}"


def _sqlite_kind(declared: str) -> str:
    """SQLite's affinity rules, with date/time names kept as ISO text."""
    d = declared.upper()
    if "INT" in d or "BOOL" in d:
        return "int64"
    if any(s in d for s in ("CHAR", "CLOB", "TEXT", "DATE", "TIME")):
        return "string"
    if "BLOB" in d:
        return "binary"
    if any(s in d for s in ("REAL", "FLOA", "DOUB", "NUMERIC", "DECIMAL")):
        return "float64"
    return "string"


def sqlite_is_datetime(declared: str) -> bool:
    d = declared.upper()
    return "DATE" in d or "TIME" in d
