"""One archive test case per engine: a table of typed rows, half of them aged, and a second database."""

from __future__ import annotations

import sqlite3
import uuid
from abc import ABC, abstractmethod
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from tests.conftest import drop_pg_database, pg_admin, pg_url
from vaultflow.archive import ArchiveSource, source_from_url
from vaultflow.archive.archiver import _fetch
from vaultflow.archive.sources import Row

MYSQL_HOST, MYSQL_PORT = "127.0.0.1", 3306
OLD_BASE = datetime(2021, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def mysql_admin() -> Any:
    return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", autocommit=True)


def sample_rows(n_old: int, n_new: int, start: int = 1) -> list[dict[str, Any]]:
    """Typed rows: ids start..; the first n_old are years old, the rest an hour old."""
    now = datetime.now(UTC).replace(microsecond=0)
    rows = []
    for i in range(start, start + n_old + n_new):
        old = i - start < n_old
        rows.append({
            "id": i,
            "created_at": OLD_BASE + timedelta(hours=i, microseconds=i) if old else now - timedelta(hours=1),
            "amount": None if i % 7 == 0 else Decimal(i * 317) / 100,
            "note": None if i % 5 == 0 else f"note {i} ñ 'q' \"d\"",
            "payload": None if i % 3 == 0 else bytes([i % 256, 0, 255, (i * 7) % 256]),
            "flag": None if i % 11 == 0 else i % 2 == 0,
            "meta": None if i % 4 == 0 else f'{{"n": {i}, "tags": ["a", "b"]}}',
            "small": i % 30000,
            "ratio": i / 3,
            "day": date(2020, 1, 1) + timedelta(days=i % 900),
        })
    return rows


class ArchiveCase(ABC):
    engine: str
    url: str
    other_url: str

    @property
    def source(self) -> ArchiveSource:
        return source_from_url(self.url)

    @abstractmethod
    def execute(self, sql: str, params: tuple[Any, ...] = (), *, url: str | None = None) -> int:
        """Run one statement in its own transaction; returns the rows it changed."""

    @abstractmethod
    def create_table(self, name: str = "events", *, url: str | None = None, key: bool = True) -> None: ...

    @abstractmethod
    def insert_sql(self, name: str = "events") -> str: ...

    def insert(self, rows: list[dict[str, Any]], name: str = "events", *, url: str | None = None) -> None:
        for r in rows:
            self.execute(self.insert_sql(name), self.values(r), url=url)

    def values(self, r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(r.values())

    def rows(self, name: str = "events", *, url: str | None = None) -> list[Row]:
        """Every row, as the archive reads them (driver values converted by the source)."""
        source = source_from_url(url or self.url)
        conn = source.connect()
        try:
            shape = source.describe(conn, name)
            assert shape is not None
            cols = ", ".join(source.select_expr(c) for c in shape.columns)
            raw = conn.query(f"SELECT {cols} FROM {source.qualified(shape)} ORDER BY 1")
            conn.rollback()
            return _fetch(source, shape, raw)
        finally:
            conn.close()

    def cleanup(self) -> None:
        pass


class PostgresCase(ArchiveCase):
    engine = "postgresql"

    def __init__(self) -> None:
        self.names = [f"vfa_{uuid.uuid4().hex[:10]}" for _ in range(2)]
        with pg_admin() as c:
            for n in self.names:
                c.execute(f'CREATE DATABASE "{n}"')
        self.url, self.other_url = pg_url(self.names[0]), pg_url(self.names[1])

    def execute(self, sql: str, params: tuple[Any, ...] = (), *, url: str | None = None) -> int:
        with psycopg.connect(url or self.url, autocommit=True) as c:
            return c.execute(sql, params).rowcount  # type: ignore[arg-type]

    def create_table(self, name: str = "events", *, url: str | None = None, key: bool = True) -> None:
        self.execute(f"""CREATE TABLE {name} (id bigint {'PRIMARY KEY' if key else 'NOT NULL'},
            created_at timestamptz NOT NULL, amount numeric(12, 2), note text, payload bytea, flag boolean,
            meta jsonb, small smallint, ratio double precision, day date)""", url=url)

    def insert_sql(self, name: str = "events") -> str:
        return f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)"

    def cleanup(self) -> None:
        for n in self.names:
            drop_pg_database(n)


class MySQLCase(ArchiveCase):
    engine = "mysql"

    def __init__(self) -> None:
        self.names = [f"vfa_{uuid.uuid4().hex[:10]}" for _ in range(2)]
        with mysql_admin() as c, c.cursor() as cur:
            for n in self.names:
                cur.execute(f"CREATE DATABASE `{n}`")
        self.url, self.other_url = (f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/{n}" for n in self.names)

    def execute(self, sql: str, params: tuple[Any, ...] = (), *, url: str | None = None) -> int:
        db = (url or self.url).rsplit("/", 1)[1]
        with pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", database=db,
                             autocommit=True, init_command="SET time_zone = '+00:00'") as c, c.cursor() as cur:
            return int(cur.execute(sql, params))

    def create_table(self, name: str = "events", *, url: str | None = None, key: bool = True) -> None:
        self.execute(f"""CREATE TABLE {name} (id bigint {'PRIMARY KEY' if key else 'NOT NULL'},
            created_at datetime(6) NOT NULL, amount decimal(12, 2), note text, payload blob, flag tinyint(1),
            meta json, small smallint, ratio double, day date) ENGINE=InnoDB""", url=url)

    def insert_sql(self, name: str = "events") -> str:
        return f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"

    def values(self, r: dict[str, Any]) -> tuple[Any, ...]:
        v = dict(r)
        v["created_at"] = v["created_at"].astimezone(UTC).replace(tzinfo=None)
        return tuple(v.values())

    def cleanup(self) -> None:
        with mysql_admin() as c, c.cursor() as cur:
            for n in self.names:
                cur.execute(f"DROP DATABASE IF EXISTS `{n}`")


class SqliteCase(ArchiveCase):
    engine = "sqlite"

    def __init__(self, tmp: Path) -> None:
        self.paths = [tmp / "source.db", tmp / "other.db"]
        for p in self.paths:
            sqlite3.connect(p).close()
        self.url, self.other_url = (f"sqlite:///{p}" for p in self.paths)

    def execute(self, sql: str, params: tuple[Any, ...] = (), *, url: str | None = None) -> int:
        path = (url or self.url)[len("sqlite:///"):]
        con = sqlite3.connect(path, timeout=60)
        try:
            changed = con.execute(sql, params).rowcount
            con.commit()
            return changed
        finally:
            con.close()

    def create_table(self, name: str = "events", *, url: str | None = None, key: bool = True) -> None:
        self.execute(f"""CREATE TABLE {name} (id INTEGER {'PRIMARY KEY' if key else 'NOT NULL'},
            created_at TIMESTAMP NOT NULL, amount REAL, note TEXT, payload BLOB, flag INTEGER, meta TEXT,
            small INTEGER, ratio REAL, day DATE)""", url=url)

    def insert_sql(self, name: str = "events") -> str:
        return f"INSERT INTO {name} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

    def values(self, r: dict[str, Any]) -> tuple[Any, ...]:
        v = dict(r)
        v["created_at"] = v["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        v["amount"] = None if v["amount"] is None else float(v["amount"])
        v["flag"] = None if v["flag"] is None else int(v["flag"])
        v["day"] = v["day"].isoformat()
        return tuple(v.values())


def make_case(engine: str, tmp: Path) -> ArchiveCase:
    if engine == "postgresql":
        return PostgresCase()
    if engine == "mysql":
        return MySQLCase()
    return SqliteCase(tmp)


__all__ = ["ArchiveCase", "make_case", "sample_rows"]
