"""Tables rows are archived from: the dialect contract every archival engine implements.

A dialect (one per engine, in `vaultflow/engines/<name>/archive.py`, named by the engine's
`EngineSpec.archive_source`) wraps a `DatabaseEngine`: it connects with that engine's
connection settings, maps driver errors with the engine's own mapping (a rejected password
is permanent, an unreachable server transient), describes a table (columns, archive kinds,
key), and spells the few statements archival needs: a locked batch select, a delete by key,
an insert that skips rows already present. Everything else (Parquet, checksums, the
protocol) is shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from vaultflow.errors import VaultflowError

if TYPE_CHECKING:
    from vaultflow.engines.base import DatabaseEngine

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
    """A DB-API connection with explicit transactions (begin, commit, rollback); a driver
    error from any statement is raised as the dialect's VaultflowError for it."""

    def __init__(self, raw: Any, dialect: ArchiveSource) -> None:
        self.raw = raw
        self.dialect = dialect

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            mapped = self.dialect.map_error(exc)
            if mapped is None:
                raise
            raise mapped from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._mapped_errors():
            cur = self.raw.cursor()
            try:
                cur.execute(sql, tuple(params))
                return [tuple(r) for r in cur.fetchall()] if cur.description else []
            finally:
                cur.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._mapped_errors():
            cur = self.raw.cursor()
            try:
                cur.execute(sql, tuple(params))
                return int(cur.rowcount or 0)
            finally:
                cur.close()

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        with self._mapped_errors():
            cur = self.raw.cursor()
            try:
                cur.executemany(sql, [tuple(r) for r in rows])
                return int(cur.rowcount or 0)
            finally:
                cur.close()

    def begin(self) -> None:
        with self._mapped_errors():
            self.dialect.begin(self)

    def commit(self) -> None:
        with self._mapped_errors():
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
    """One database whose tables can be archived, wrapping its engine; connects only in
    `connect()`. Subclasses narrow `database_engine` to their engine's class."""

    placeholder: ClassVar[str] = "%s"
    lock_clause: ClassVar[str] = " FOR UPDATE"
    database_engine: DatabaseEngine

    def __init__(self, database_engine: DatabaseEngine) -> None:
        self.database_engine = database_engine

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe_target()})"

    @property
    def engine(self) -> str:
        """The engine's name, as batch records and the catalog store it."""
        return self.database_engine.engine

    @property
    def database(self) -> str:
        return self.database_engine.database

    def server_label(self) -> str:
        return self.database_engine.server_label()

    @abstractmethod
    def connect(self) -> SourceConnection:
        """A new connection in a transaction of its own; a failure is the engine's error
        for it (AuthenticationFailed, DatabaseNotFound, ConnectionFailed...)."""

    @abstractmethod
    def map_error(self, exc: BaseException) -> VaultflowError | None:
        """The engine's VaultflowError for a driver error; None for any other exception."""

    def is_age_column(self, col: Column) -> bool:
        """Whether rows can be aged by this column (a date or timestamp)."""
        return col.kind in DATE_KINDS

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




# -- from what a user typed -------------------------------------------------------------

def source_from_url(url: str) -> ArchiveSource:
    """postgresql://user@host:port/db, mysql:// or mariadb://user@host:port/db, sqlite:///file.db.

    The URL is the engine's (`vaultflow.engines.engine_from_url`): passwords never come in
    it, but from PGPASSWORD/~/.pgpass for PostgreSQL and MYSQL_PWD for MySQL. A scheme
    whose engine does not archive is refused before its engine is built.
    """
    from urllib.parse import urlsplit

    from vaultflow.engines.capabilities import CapabilityMissing
    from vaultflow.engines.registry import engine_from_url, engines, spec_for_scheme

    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""  # engine_from_url below refuses the malformed URL in its own words
    if scheme:
        found = spec_for_scheme(scheme)
        if not found.capabilities.archival:
            schemes = [f"{s}://" for e in engines() if e.capabilities.archival for s in e.schemes]
            raise CapabilityMissing(f"unsupported database URL scheme {scheme!r} for archival "
                                    f"({found.title} does not support row archival)", "use " + ", ".join(schemes))
    return source_from_engine(engine_from_url(url))


def source_from_engine(engine: DatabaseEngine) -> ArchiveSource:
    """The archive dialect of `engine` (built from a URL or a block), as its spec names it;
    an engine without archival is refused in one line."""
    from vaultflow.engines.registry import spec

    return spec(engine.engine).archive_dialect(engine)
