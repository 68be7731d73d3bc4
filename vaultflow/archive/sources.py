"""Tables rows are archived from: one dialect per engine (PostgreSQL, MariaDB/MySQL, SQLite).

A dialect knows how to connect, describe a table (columns, archive kinds, key), and spell
the few statements archival needs: a locked batch select, a delete by key, an insert that
skips rows already present. Everything else (Parquet, checksums, the protocol) is shared.
"""

from __future__ import annotations

import os
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from vaultflow.errors import ConnectionFailed, DatabaseNotFound, InputError, VaultflowError

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Column:
    """One column: its name, the database's type, and how it is archived.

    `kind` is the archive type: int8/int16/int32/int64/uint64, float32/float64,
    decimal:P:S, string, binary, bool, timestamp (naive), timestamptz (UTC), date, time.
    `as_text` columns (json, uuid, enums, arrays, ...) are read as text and written back
    with a cast to `source_type`. `generated` columns are archived but never inserted.
    """

    name: str
    source_type: str
    kind: str
    as_text: bool = False
    generated: bool = False


@dataclass(frozen=True)
class TableShape:
    schema: str | None
    name: str
    columns: list[Column]
    key: list[str]

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def key_positions(self) -> list[int]:
        names = [c.name for c in self.columns]
        return [names.index(k) for k in self.key]


DATE_KINDS = ("timestamp", "timestamptz", "date")


class SourceConnection:
    """A DB-API connection with explicit transactions (begin, commit, rollback)."""

    def __init__(self, raw: Any, dialect: ArchiveSource) -> None:
        self.raw = raw
        self.dialect = dialect

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self.raw.cursor()
        try:
            cur.execute(sql, tuple(params))
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            cur.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.raw.cursor()
        try:
            cur.execute(sql, tuple(params))
            return int(cur.rowcount or 0)
        finally:
            cur.close()

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        cur = self.raw.cursor()
        try:
            cur.executemany(sql, [tuple(r) for r in rows])
            return int(cur.rowcount or 0)
        finally:
            cur.close()

    def begin(self) -> None:
        self.dialect.begin(self)

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        try:
            self.raw.rollback()
        except Exception:  # noqa: BLE001 - a dead connection has nothing to roll back
            pass

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:  # noqa: BLE001
            pass


class ArchiveSource(ABC):
    """One database whose tables can be archived; connects only in `connect()`."""

    engine: str
    placeholder = "%s"
    lock_clause = " FOR UPDATE"

    @property
    @abstractmethod
    def database(self) -> str: ...

    @abstractmethod
    def server_label(self) -> str: ...

    @abstractmethod
    def connect(self) -> SourceConnection: ...

    def quote(self, ident: str) -> str:
        """An identifier in SQL standard double quotes (MySQL overrides with backquotes)."""
        return '"' + ident.replace('"', '""') + '"'

    @abstractmethod
    def describe(self, conn: SourceConnection, table: str) -> TableShape | None:
        """The table's shape, or None if it does not exist."""

    @abstractmethod
    def unique_keys(self, conn: SourceConnection, shape: TableShape) -> list[list[str]]:
        """Column lists of the table's unique indexes (primary key included)."""

    def insert_sql(self, shape: TableShape, columns: list[Column]) -> str:
        """INSERT of `columns` that skips rows whose key is already present."""
        names = ", ".join(self.quote(c.name) for c in columns)
        values = ", ".join(self.value_expr(c) for c in columns)
        return f"INSERT INTO {self.qualified(shape)} ({names}) VALUES ({values}) {self.skip_present(shape, columns)}"

    def skip_present(self, shape: TableShape, columns: list[Column]) -> str:
        """The clause that makes an INSERT skip rows whose key is already present."""
        return "ON CONFLICT DO NOTHING"

    @abstractmethod
    def estimate_bytes_sql(self, shape: TableShape, where: str) -> str:
        """SELECT count(*), approximate bytes of the rows matching `where`."""

    def begin(self, conn: SourceConnection) -> None:
        """Start a transaction (drivers start one implicitly unless told otherwise)."""

    def describe_target(self) -> str:
        return f"{self.engine} database {self.database!r} on {self.server_label()}"

    def qualified(self, shape: TableShape) -> str:
        if shape.schema:
            return f"{self.quote(shape.schema)}.{self.quote(shape.name)}"
        return self.quote(shape.name)

    def select_expr(self, col: Column) -> str:
        return self.quote(col.name)

    def value_expr(self, col: Column) -> str:
        return self.placeholder

    def age_condition(self, age: Column) -> str:
        q = self.quote(age.name)
        return f"{q} IS NOT NULL AND {q} < {self.placeholder}"

    def cutoff_param(self, age: Column, cutoff: datetime) -> Any:
        if age.kind == "date":
            return cutoff.astimezone(UTC).date()
        if age.kind == "timestamp":
            return cutoff.astimezone(UTC).replace(tzinfo=None)
        return cutoff.astimezone(UTC)

    def converts(self, col: Column) -> bool:
        """Whether `fetch_value` may change this column's values (most columns are left alone)."""
        return col.kind == "binary"

    def fetch_value(self, col: Column, value: Any) -> Any:
        """A value as the driver returned it, in the form it is archived and hashed."""
        if isinstance(value, memoryview):
            return bytes(value)
        return value

    def store_value(self, col: Column, value: Any) -> Any:
        """An archived value in the form the driver writes it."""
        return value

    def key_condition(self, key: list[str]) -> str:
        p = self.placeholder
        if len(key) == 1:
            return f"{self.quote(key[0])} > {p}"
        return f"({', '.join(self.quote(k) for k in key)}) > ({', '.join(p for _ in key)})"

    def key_in(self, key: list[str], count: int) -> str:
        p = self.placeholder
        if len(key) == 1:
            return f"{self.quote(key[0])} IN ({', '.join(p for _ in range(count))})"
        one = "(" + ", ".join(p for _ in key) + ")"
        return f"({', '.join(self.quote(k) for k in key)}) IN ({', '.join(one for _ in range(count))})"


@dataclass(frozen=True)
class ServerSource(ArchiveSource):
    """A database on a host:port server; the password is left out of repr."""

    host: str = "127.0.0.1"
    port: int = 0
    user: str = ""
    dbname: str = ""
    password: str | None = field(default=None, repr=False)

    @property
    def database(self) -> str:
        return self.dbname

    def server_label(self) -> str:
        return f"{self.host}:{self.port}"


# -- PostgreSQL -------------------------------------------------------------------------

_PG_KINDS = {
    "int2": "int16", "int4": "int32", "int8": "int64", "float4": "float32", "float8": "float64",
    "bool": "bool", "text": "string", "varchar": "string", "bpchar": "string", "name": "string",
    "bytea": "binary", "timestamp": "timestamp", "timestamptz": "timestamptz", "date": "date", "time": "time",
}


@dataclass(frozen=True)
class PostgresSource(ServerSource):
    port: int = 5432
    user: str = "postgres"
    dbname: str = "postgres"
    sslmode: str | None = None
    engine = "postgresql"

    def connect(self) -> SourceConnection:
        import psycopg

        # UTC session: zoned values come back in UTC, naive ones written into timestamptz mean UTC.
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname,
                                  "connect_timeout": 10, "autocommit": False, "application_name": "vaultflow-archive",
                                  "options": "-c TimeZone=UTC"}
        if self.password:
            kwargs["password"] = self.password
        if self.sslmode:
            kwargs["sslmode"] = self.sslmode
        try:
            raw = psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            text = str(exc).lower()
            if "does not exist" in text and "database" in text:
                raise DatabaseNotFound(f"database {self.dbname!r} does not exist on PostgreSQL at "
                                       f"{self.server_label()}", "check the name (psql -l lists them)") from None
            raise ConnectionFailed(f"cannot connect to PostgreSQL at {self.server_label()}/{self.dbname}",
                                   "check that the server runs and the URL or block is right") from None
        return SourceConnection(raw, self)

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


# -- MariaDB / MySQL --------------------------------------------------------------------

_MYSQL_INTS = {"tinyint": ("int8", "int16"), "smallint": ("int16", "int32"), "mediumint": ("int32", "int32"),
               "int": ("int32", "int64"), "integer": ("int32", "int64"), "bigint": ("int64", "uint64"),
               "year": ("int16", "int16")}
_MYSQL_KINDS = {"float": "float32", "double": "float64", "real": "float64", "date": "date", "datetime": "timestamp",
                "timestamp": "timestamptz", "char": "string", "varchar": "string", "tinytext": "string",
                "text": "string", "mediumtext": "string", "longtext": "string", "enum": "string", "set": "string",
                "json": "string", "binary": "binary", "varbinary": "binary", "tinyblob": "binary", "blob": "binary",
                "mediumblob": "binary", "longblob": "binary", "bit": "binary"}


@dataclass(frozen=True)
class MySQLSource(ServerSource):
    """MariaDB or MySQL through pymysql; the session runs in UTC with READ COMMITTED."""

    port: int = 3306
    user: str = "root"
    engine = "mysql"

    def connect(self) -> SourceConnection:
        import pymysql

        from vaultflow.engines.mysql.engine import MySQLClientConnection

        try:
            raw = MySQLClientConnection(host=self.host, port=self.port, user=self.user,
                                        password=self.password or "", database=self.dbname, autocommit=False,
                                        connect_timeout=10, charset="utf8mb4",
                                        init_command="SET SESSION time_zone = '+00:00'")
            with raw.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else 0
            if code == 1049:
                raise DatabaseNotFound(f"database {self.dbname!r} does not exist on MySQL at {self.server_label()}",
                                       "check the name (SHOW DATABASES lists them)") from None
            if code in (1044, 1045):
                raise VaultflowError(f"MySQL at {self.server_label()} rejected the credentials of user "
                                     f"{self.user!r}", "set MYSQL_PWD or fix the user") from None
            raise ConnectionFailed(f"cannot connect to MySQL at {self.server_label()}/{self.dbname}",
                                   "check that the server runs and the URL is right") from None
        return SourceConnection(raw, self)

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


# -- SQLite -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SqliteSource(ArchiveSource):
    """An SQLite file; a batch holds the database's write lock (BEGIN IMMEDIATE)."""

    path: str = ""
    engine = "sqlite"
    placeholder = "?"
    lock_clause = ""

    @property
    def database(self) -> str:
        return os.path.basename(self.path)

    def server_label(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def connect(self) -> SourceConnection:
        if not os.path.exists(self.path):
            raise DatabaseNotFound(f"SQLite database {self.path} does not exist", "check the path")
        raw = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        return SourceConnection(raw, self)

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


# -- from what a user typed -------------------------------------------------------------

def source_from_url(url: str) -> ArchiveSource:
    """postgresql://user@host:port/db, mysql:// or mariadb://user@host:port/db, sqlite:///file.db.

    Passwords never come in the URL: PGPASSWORD/~/.pgpass for PostgreSQL, MYSQL_PWD for MySQL.
    """
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise InputError("the database URL contains a password",
                             "remove it; use a saved engine block, PGPASSWORD, ~/.pgpass or MYSQL_PWD")
        if scheme in ("mysql", "mariadb"):
            database = unquote(parts.path.lstrip("/"))
            if not database:
                raise InputError(f"MySQL URL for {parts.hostname} names no database", "append /DBNAME to the URL")
            return MySQLSource(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                               user=unquote(parts.username) if parts.username else "root", dbname=database,
                               password=os.environ.get("MYSQL_PWD"))
    except ValueError:
        raise InputError("the database URL is malformed",
                         "write it as postgresql://user@host:port/db, mysql://user@host:port/db "
                         "or sqlite:///file.db") from None
    from vaultflow.engines import engine_from_url

    if scheme not in ("postgresql", "postgres", "sqlite"):
        raise InputError(f"unsupported database URL scheme {scheme!r} for archival",
                         "use postgresql://, mysql://, mariadb:// or sqlite:///")
    return source_from_engine(engine_from_url(url))


def source_from_engine(engine: object) -> ArchiveSource:
    """The archive source for a core engine (PostgreSQL or SQLite) built from a URL or block."""
    from vaultflow.engines.postgres.engine import PostgresEngine
    from vaultflow.engines.sqlite.engine import SqliteEngine

    if isinstance(engine, PostgresEngine):
        c = engine.conn
        password = c.password.get_secret_value() if c.password is not None else os.environ.get("PGPASSWORD")
        return PostgresSource(host=c.host, port=c.port, user=c.user, dbname=c.database, password=password,
                              sslmode=c.sslmode)
    if isinstance(engine, SqliteEngine):
        return SqliteSource(path=str(engine.path))
    conn = getattr(engine, "conn", None)
    if getattr(engine, "engine", "") == "mysql" and conn is not None:
        secret = getattr(conn, "password", None)
        return MySQLSource(host=conn.host, port=conn.port, user=conn.user, dbname=conn.database,
                           password=secret.get_secret_value() if secret is not None else None)
    raise InputError(f"archival does not support {getattr(engine, 'engine', type(engine).__name__)} databases",
                     "archive from PostgreSQL, MariaDB/MySQL or SQLite")
