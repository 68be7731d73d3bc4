"""MariaDB/MySQL as an archival source: its dialect of the archive protocol (vaultflow/archive)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pymysql

from vaultflow.archive.sources import ArchiveSource, Column, SourceConnection, TableShape
from vaultflow.engines.mysql.engine import MySQLClientConnection, MySQLEngine
from vaultflow.errors import VaultflowError

_MYSQL_INTS = {"tinyint": ("int8", "int16"), "smallint": ("int16", "int32"), "mediumint": ("int32", "int32"),
               "int": ("int32", "int64"), "integer": ("int32", "int64"), "bigint": ("int64", "uint64"),
               "year": ("int16", "int16")}
_MYSQL_KINDS = {"float": "float32", "double": "float64", "real": "float64", "date": "date", "datetime": "timestamp",
                "timestamp": "timestamptz", "char": "string", "varchar": "string", "tinytext": "string",
                "text": "string", "mediumtext": "string", "longtext": "string", "enum": "string", "set": "string",
                "json": "string", "binary": "binary", "varbinary": "binary", "tinyblob": "binary", "blob": "binary",
                "mediumblob": "binary", "longblob": "binary", "bit": "binary"}


class MySQLSource(ArchiveSource):
    """MariaDB or MySQL through pymysql, reached with its engine's connection settings; the
    session runs in UTC with READ COMMITTED."""

    database_engine: MySQLEngine

    def __init__(self, database_engine: MySQLEngine) -> None:
        super().__init__(database_engine)

    def connect(self) -> SourceConnection:
        c = self.database_engine.conn
        try:
            raw = MySQLClientConnection(host=c.host, port=c.port, user=c.user,
                                        password=c.password.get_secret_value() if c.password is not None else "",
                                        database=c.database, autocommit=False, connect_timeout=c.connect_timeout,
                                        charset="utf8mb4", init_command="SET SESSION time_zone = '+00:00'")
        except pymysql.MySQLError as exc:
            raise self.database_engine.map_error(exc, c.database) from None
        conn = SourceConnection(raw, self)
        try:
            conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        except BaseException:
            conn.close()
            raise
        return conn

    def map_error(self, exc: BaseException) -> VaultflowError | None:
        if not isinstance(exc, pymysql.MySQLError):
            return None
        return self.database_engine.map_error(exc, self.database)

    def begin(self, conn: SourceConnection) -> None:
        conn.raw.begin()

    def quote(self, ident: str) -> str:
        return "`" + ident.replace("`", "``") + "`"

    def describe(self, conn: SourceConnection, table: str) -> TableShape | None:
        rows = conn.query(
            "SELECT column_name, column_type, data_type, numeric_precision, numeric_scale, extra "
            "FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = %s "
            "ORDER BY ordinal_position", [table])
        if not rows:
            conn.rollback()
            return None
        key = [r[0] for r in conn.query(
            "SELECT column_name FROM information_schema.statistics WHERE table_schema = DATABASE() "
            "AND table_name = %s AND index_name = 'PRIMARY' ORDER BY seq_in_index", [table])]
        conn.rollback()
        columns = []
        for name, column_type, data_type, precision, scale, extra in rows:
            data_type = str(data_type).lower()
            ctype = str(column_type).lower()
            if data_type in _MYSQL_INTS:
                kind = _MYSQL_INTS[data_type][1 if "unsigned" in ctype else 0]
            elif data_type == "decimal":
                kind = f"decimal:{precision}:{scale}"
            else:
                kind = _MYSQL_KINDS.get(data_type, "")
            generated = "generated" in str(extra).lower() or "virtual" in str(extra).lower() or (
                "persistent" in str(extra).lower() or "stored" in str(extra).lower())
            columns.append(Column(str(name), ctype, kind or "string", as_text=not kind, generated=generated))
        return TableShape(None, table, columns, key)

    def unique_keys(self, conn: SourceConnection, shape: TableShape) -> list[list[str]]:
        rows = conn.query(
            "SELECT index_name, column_name FROM information_schema.statistics WHERE table_schema = DATABASE() "
            "AND table_name = %s AND non_unique = 0 ORDER BY index_name, seq_in_index", [shape.name])
        conn.rollback()
        out: dict[str, list[str]] = {}
        for idx, col in rows:
            out.setdefault(str(idx), []).append(str(col))
        return list(out.values())

    def select_expr(self, col: Column) -> str:
        return f"CAST({self.quote(col.name)} AS CHAR)" if col.as_text else self.quote(col.name)

    def converts(self, col: Column) -> bool:
        return col.kind in ("timestamptz", "string", "binary")

    def fetch_value(self, col: Column, value: Any) -> Any:
        if col.kind == "timestamptz" and isinstance(value, datetime):
            return value.replace(tzinfo=UTC)
        if col.kind == "string" and isinstance(value, bytes):
            return value.decode("utf-8")
        return super().fetch_value(col, value)

    def store_value(self, col: Column, value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def cutoff_param(self, age: Column, cutoff: datetime) -> Any:
        if age.kind == "date":
            return cutoff.astimezone(UTC).date()
        return cutoff.astimezone(UTC).replace(tzinfo=None)

    def skip_present(self, shape: TableShape, columns: list[Column]) -> str:
        first = self.quote(shape.key[0] if shape.key else columns[0].name)
        # A no-op update, unlike INSERT IGNORE, skips only duplicate keys, not other errors.
        return f"ON DUPLICATE KEY UPDATE {first} = {first}"

    def estimate_bytes_sql(self, shape: TableShape, where: str) -> str:
        return (f"SELECT count(*), count(*) * coalesce((SELECT avg_row_length FROM information_schema.tables "
                f"WHERE table_schema = DATABASE() AND table_name = '{shape.name.replace(chr(39), '')}'), 0) "
                f"FROM {self.qualified(shape)} WHERE {where}")
