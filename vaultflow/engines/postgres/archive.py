"""PostgreSQL as an archival source: its dialect of the archive protocol (vaultflow/archive)."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from vaultflow.archive.sources import ArchiveSource, Column, SourceConnection, TableShape
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.errors import VaultflowError

_PG_KINDS = {
    "int2": "int16", "int4": "int32", "int8": "int64", "float4": "float32", "float8": "float64",
    "bool": "bool", "text": "string", "varchar": "string", "bpchar": "string", "name": "string",
    "bytea": "binary", "timestamp": "timestamp", "timestamptz": "timestamptz", "date": "date", "time": "time",
}


class PostgresSource(ArchiveSource):
    """A PostgreSQL database, reached with its engine's connection settings; the session
    runs in UTC (zoned values come back in UTC, naive ones written into timestamptz mean UTC)."""

    database_engine: PostgresEngine

    def __init__(self, database_engine: PostgresEngine) -> None:
        super().__init__(database_engine)

    def connect(self) -> SourceConnection:
        c = self.database_engine.conn
        kwargs: dict[str, Any] = {"host": c.host, "port": c.port, "user": c.user, "dbname": c.database,
                                  "connect_timeout": c.connect_timeout, "autocommit": False,
                                  "application_name": "vaultflow-archive", "options": "-c TimeZone=UTC"}
        if c.password is not None:
            kwargs["password"] = c.password.get_secret_value()
        if c.sslmode:
            kwargs["sslmode"] = c.sslmode
        try:
            raw = psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            raise self.database_engine.map_error(exc, c.database) from None
        return SourceConnection(raw, self)

    def map_error(self, exc: BaseException) -> VaultflowError | None:
        if not isinstance(exc, psycopg.Error):
            return None
        return self.database_engine.map_error(exc, self.database)

    def _split(self, table: str) -> tuple[str, str]:
        schema, _, name = table.rpartition(".")
        return (schema or "public", name)

    def describe(self, conn: SourceConnection, table: str) -> TableShape | None:
        schema, name = self._split(table)
        found = conn.query("SELECT to_regclass(%s)::oid", [f"{self.quote(schema)}.{self.quote(name)}"])
        conn.rollback()
        if not found or found[0][0] is None:
            return None
        oid = found[0][0]
        cols = conn.query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, t.typtype, a.attgenerated "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", [oid])
        key = [r[0] for r in conn.query(
            "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord", [oid])]
        conn.rollback()
        columns = []
        for attname, fmt, typname, typtype, generated in cols:
            kind = _PG_KINDS.get(typname) if typtype == "b" else None
            if typname == "numeric":
                m = re.fullmatch(r"numeric\((\d+),(\d+)\)", fmt)
                kind = f"decimal:{m.group(1)}:{m.group(2)}" if m else None
            columns.append(Column(attname, fmt, kind or "string", as_text=kind is None, generated=bool(generated)))
        return TableShape(schema, name, columns, key)

    def unique_keys(self, conn: SourceConnection, shape: TableShape) -> list[list[str]]:
        rows = conn.query(
            "SELECT i.indexrelid, a.attname FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL ORDER BY 1, k.ord",
            [self.qualified(shape)])
        conn.rollback()
        out: dict[int, list[str]] = {}
        for idx, col in rows:
            out.setdefault(idx, []).append(col)
        return list(out.values())

    def select_expr(self, col: Column) -> str:
        return f"{self.quote(col.name)}::text" if col.as_text else self.quote(col.name)

    def store_value(self, col: Column, value: Any) -> Any:
        if col.kind == "bool" and isinstance(value, int) and not isinstance(value, bool):
            return bool(value)  # a 0/1 flag archived from MySQL or SQLite
        return value

    def value_expr(self, col: Column) -> str:
        # Always cast: text columns go back to json/uuid/enum, and rows archived from another
        # engine (0/1 flags, ISO date text) become this column's type.
        return f"CAST(%s AS {col.source_type})"

    def estimate_bytes_sql(self, shape: TableShape, where: str) -> str:
        return f"SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM {self.qualified(shape)} t WHERE {where}"
