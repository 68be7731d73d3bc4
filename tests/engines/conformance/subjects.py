"""One conformance subject per registered engine: the shared nasty fixture built the engine's
way, a new target, a write, and the failures the engine can be driven into.

The nasty fixture is the same everywhere: a table whose name and column names need quoting
("Mixed Case": "Id", "Note Text", "Raw Bytes", "Big Number") holding NULLs, binary with NUL,
CR, LF, backslash and quote bytes, 4-byte UTF-8 ('😀'), quotes and backslashes in text and
decimals wider than 64 bits (12345678901234567890.123456789), plus a plain table `plain`.

SQL Server runs through its stand-in (tests/engines/sqlserver/stand_in.py): NOT A REAL SQL
SERVER. Its database is the stand-in's fixed fake .bak, so the nasty rows are not in it.
"""

from __future__ import annotations

import socket
import sqlite3
import uuid
from abc import ABC, abstractmethod
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import PG_HOST, PG_PORT, drop_my_database, drop_pg_database, my_admin, my_url, pg_admin, pg_url
from tests.engines.sqlserver.stand_in import FakeSqlServer, stand_in_engine
from vaultflow.engines import DatabaseEngine, engine_from_url
from vaultflow.engines.sqlserver.client import map_error
from vaultflow.errors import ConnectionFailed, DatabaseNotFound, ToolFailed, VaultflowError

NASTY_TABLE = "Mixed Case"
NASTY_ROWS: list[tuple[int, str | None, bytes | None, Decimal | None]] = [
    (1, 'emoji 😀, ñ, "double" \'single\' back\\slash', b"\x00\xff\n\r\\'\"",
     Decimal("12345678901234567890.123456789")),
    (2, None, None, None),
    (3, "tab\there\nnew line", b"", Decimal("-12345678901234567890.000000001")),
    (4, "", bytes(range(256)), Decimal("0.000000001")),
]
PLAIN_ROWS = [(i, f"row {i}") for i in range(1, 41)]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Failure = tuple[DatabaseEngine, type[VaultflowError]]


class EngineSubject(ABC):
    """How the conformance suite drives one engine."""

    engine_name: str  # the registry's name (EngineSpec.name)
    service_fixture: str | None = None  # the conftest fixture that checks the server is up
    tables: frozenset[str] = frozenset({NASTY_TABLE, "plain"})  # the source's tables, by name

    def expected_content(self) -> object:
        """What content() of the source must read (the fixture as the engine stores it)."""
        return NASTY_ROWS, PLAIN_ROWS

    @abstractmethod
    def create_source(self, tmp_path: Path) -> DatabaseEngine:
        """A database holding the nasty fixture."""

    @abstractmethod
    def new_target(self, tmp_path: Path) -> DatabaseEngine:
        """A database that does not exist yet (on the source's server)."""

    @abstractmethod
    def content(self, engine: DatabaseEngine) -> object:
        """Everything the fixture put in, read back value by value (for equality)."""

    @abstractmethod
    def write(self, engine: DatabaseEngine) -> None:
        """Change one row."""

    @abstractmethod
    def exists(self, engine: DatabaseEngine) -> bool:
        """Whether the database exists (read around the engine, not through it)."""

    @abstractmethod
    def failures(self, tmp_path: Path) -> dict[str, Failure]:
        """Engines that fail, each with the error a backup of it must raise."""

    def unchanged_fingerprints_agree(self, before: str, after: str) -> bool:
        """Whether two fingerprints of a database nobody wrote to agree: equal."""
        return before == after

    def scratch_server(self, tmp_path: Path) -> DatabaseEngine:
        """Where a drill may create (and drop) its scratch database."""
        return self.new_target(tmp_path)

    def nasty_table(self, engine: DatabaseEngine) -> str:
        """The nasty table's name as the engine's statistics qualify it."""
        return next(t.qualified for t in engine.table_stats() if t.name == NASTY_TABLE)

    def cleanup(self) -> None:
        """Drop what the subject created."""


class _ServerSubject(EngineSubject):
    def __init__(self) -> None:
        self.created: list[str] = []

    def _new_name(self) -> str:
        name = f"vfc_{uuid.uuid4().hex[:10]}"
        self.created.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.created:
            self._drop(name)

    @abstractmethod
    def _drop(self, name: str) -> None: ...


class PostgresSubject(_ServerSubject):
    engine_name = "postgresql"
    service_fixture = "pg_available"

    def _connect(self, database: str) -> psycopg.Connection[Any]:
        return psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=database, autocommit=True)

    def create_source(self, tmp_path: Path) -> DatabaseEngine:
        name = self._new_name()
        with pg_admin() as c:
            c.execute(f'CREATE DATABASE "{name}" ENCODING UTF8 TEMPLATE template0')
        with self._connect(name) as c:
            c.execute('CREATE TABLE "Mixed Case" ("Id" int PRIMARY KEY, "Note Text" text, "Raw Bytes" bytea, '
                      '"Big Number" numeric(40, 9))')
            c.execute("CREATE TABLE plain (id int PRIMARY KEY, v text)")
            with c.cursor() as cur:
                cur.executemany('INSERT INTO "Mixed Case" VALUES (%s, %s, %s, %s)', NASTY_ROWS)
                cur.executemany("INSERT INTO plain VALUES (%s, %s)", PLAIN_ROWS)
        return engine_from_url(pg_url(name))

    def new_target(self, tmp_path: Path) -> DatabaseEngine:
        return engine_from_url(pg_url(self._new_name()))

    def unchanged_fingerprints_agree(self, before: str, after: str) -> bool:
        """The same sequences digest; the transaction snapshot is cluster-wide, so other
        databases' transactions on the shared server move it forward: a false alarm the
        contract allows (the next incremental dumps again)."""
        def parts(fingerprint: str) -> tuple[int, str]:
            snapshot, _, sequences = fingerprint.removeprefix("pg:snapshot=").partition(":seq=")
            return int(snapshot.split(":")[1]), sequences  # xmax, the sequences digest

        (xmax_before, seq_before), (xmax_after, seq_after) = parts(before), parts(after)
        return seq_before == seq_after and xmax_after >= xmax_before

    def content(self, engine: DatabaseEngine) -> object:
        with self._connect(engine.database) as c:
            nasty = c.execute('SELECT "Id", "Note Text", "Raw Bytes", "Big Number" FROM "Mixed Case" '
                              'ORDER BY "Id"').fetchall()
            plain = c.execute("SELECT id, v FROM plain ORDER BY id").fetchall()
        return [tuple(r) for r in nasty], [tuple(r) for r in plain]

    def write(self, engine: DatabaseEngine) -> None:
        with self._connect(engine.database) as c:
            c.execute("UPDATE plain SET v = v || '!' WHERE id = 1")

    def exists(self, engine: DatabaseEngine) -> bool:
        with pg_admin() as c:
            return c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (engine.database,)).fetchone() is not None

    def failures(self, tmp_path: Path) -> dict[str, Failure]:
        return {
            "database missing": (engine_from_url(pg_url(f"vfc_missing_{uuid.uuid4().hex[:8]}")), DatabaseNotFound),
            "port unreachable": (engine_from_url(f"postgresql://postgres@127.0.0.1:{closed_port()}/app"),
                                 ConnectionFailed),
        }

    def _drop(self, name: str) -> None:
        drop_pg_database(name)


class MySQLSubject(_ServerSubject):
    engine_name = "mysql"
    service_fixture = "mariadb_available"

    def create_source(self, tmp_path: Path) -> DatabaseEngine:
        name = self._new_name()
        with my_admin() as c, c.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        with my_admin(name) as c, c.cursor() as cur:
            cur.execute("CREATE TABLE `Mixed Case` (`Id` int PRIMARY KEY, `Note Text` text, `Raw Bytes` blob, "
                        "`Big Number` decimal(40, 9))")
            cur.execute("CREATE TABLE plain (id int PRIMARY KEY, v varchar(64))")
            cur.executemany("INSERT INTO `Mixed Case` VALUES (%s, %s, %s, %s)", NASTY_ROWS)
            cur.executemany("INSERT INTO plain VALUES (%s, %s)", PLAIN_ROWS)
        return engine_from_url(my_url(name))

    def new_target(self, tmp_path: Path) -> DatabaseEngine:
        return engine_from_url(my_url(self._new_name()))

    def unchanged_fingerprints_agree(self, before: str, after: str) -> bool:
        """The same definitions digest; the LSN is server-wide, so other databases' writes on
        the shared server (and InnoDB's own background work) may move it forward: a false
        alarm the contract allows (the next incremental dumps again)."""
        lsn_before, _, defs_before = before.removeprefix("mysql:lsn=").partition(":defs=")
        lsn_after, _, defs_after = after.removeprefix("mysql:lsn=").partition(":defs=")
        return defs_before == defs_after and int(lsn_after) >= int(lsn_before)

    def content(self, engine: DatabaseEngine) -> object:
        with my_admin(engine.database) as c, c.cursor() as cur:
            cur.execute("SELECT `Id`, `Note Text`, `Raw Bytes`, `Big Number` FROM `Mixed Case` ORDER BY `Id`")
            nasty = cur.fetchall()
            cur.execute("SELECT id, v FROM plain ORDER BY id")
            plain = cur.fetchall()
        return [tuple(r) for r in nasty], [tuple(r) for r in plain]

    def write(self, engine: DatabaseEngine) -> None:
        with my_admin(engine.database) as c, c.cursor() as cur:
            cur.execute("UPDATE plain SET v = concat(v, '!') WHERE id = 1")

    def exists(self, engine: DatabaseEngine) -> bool:
        with my_admin() as c, c.cursor() as cur:
            cur.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (engine.database,))
            return cur.fetchone() is not None

    def failures(self, tmp_path: Path) -> dict[str, Failure]:
        return {
            "database missing": (engine_from_url(my_url(f"vfc_missing_{uuid.uuid4().hex[:8]}")), DatabaseNotFound),
            "port unreachable": (engine_from_url(f"mysql://root@127.0.0.1:{closed_port()}/app"), ConnectionFailed),
        }

    def _drop(self, name: str) -> None:
        drop_my_database(name)


class SqliteSubject(EngineSubject):
    """SQLite has no server: its failures are a missing file and a file that is no database."""

    engine_name = "sqlite"

    def expected_content(self) -> object:
        return [(i, n, b, None if d is None else str(d)) for i, n, b, d in NASTY_ROWS], PLAIN_ROWS

    def create_source(self, tmp_path: Path) -> DatabaseEngine:
        path = tmp_path / f"src-{uuid.uuid4().hex[:6]}.db"
        with closing(sqlite3.connect(path)) as con:
            con.execute('CREATE TABLE "Mixed Case" ("Id" INTEGER PRIMARY KEY, "Note Text" TEXT, "Raw Bytes" BLOB, '
                        '"Big Number" TEXT)')  # TEXT: SQLite has no exact decimal type
            con.execute("CREATE TABLE plain (id INTEGER PRIMARY KEY, v TEXT)")
            con.executemany('INSERT INTO "Mixed Case" VALUES (?, ?, ?, ?)',
                            [(i, n, b, None if d is None else str(d)) for i, n, b, d in NASTY_ROWS])
            con.executemany("INSERT INTO plain VALUES (?, ?)", PLAIN_ROWS)
            con.commit()
        return engine_from_url(f"sqlite:///{path}")

    def new_target(self, tmp_path: Path) -> DatabaseEngine:
        return engine_from_url(f"sqlite:///{tmp_path / ('dst-' + uuid.uuid4().hex[:6] + '.db')}")

    def _path(self, engine: DatabaseEngine) -> Path:
        return Path(engine.server_label()) / engine.database

    def content(self, engine: DatabaseEngine) -> object:
        with closing(sqlite3.connect(self._path(engine))) as con:
            nasty = con.execute('SELECT "Id", "Note Text", "Raw Bytes", "Big Number" FROM "Mixed Case" '
                                'ORDER BY "Id"').fetchall()
            plain = con.execute("SELECT id, v FROM plain ORDER BY id").fetchall()
        return nasty, plain

    def write(self, engine: DatabaseEngine) -> None:
        with closing(sqlite3.connect(self._path(engine))) as con:
            con.execute("UPDATE plain SET v = v || '!' WHERE id = 1")
            con.commit()

    def exists(self, engine: DatabaseEngine) -> bool:
        return self._path(engine).exists()

    def failures(self, tmp_path: Path) -> dict[str, Failure]:
        not_a_database = tmp_path / "not-a-database.db"
        not_a_database.write_bytes(b"this is not an SQLite file, " * 200)
        return {
            "database missing": (engine_from_url(f"sqlite:///{tmp_path / 'missing.db'}"), DatabaseNotFound),
            "file is no database": (engine_from_url(f"sqlite:///{not_a_database}"), ToolFailed),
        }


class _MissingDatabaseServer(FakeSqlServer):
    """The stand-in, answering a login to a database it lacks as SQL Server does (error 4060)."""

    def run(self, statement: str, database: str) -> list[tuple[Any, ...]]:
        if database not in self.databases and database != "master":
            raise map_error(Exception("42000", f'[SQL Server]Cannot open database "{database}" requested by the '
                                               "login. The login failed. (4060)"), "sql1:1433", database)
        return super().run(statement, database)


class _UnreachableServer(FakeSqlServer):
    """The stand-in, answering every batch as the ODBC driver does when nothing listens."""

    def run(self, statement: str, database: str) -> list[tuple[Any, ...]]:
        raise map_error(Exception("08001", "[Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: Error code "
                                           "0x2749 (10057)"), "sql1:1433", database)


class SqlServerStandInSubject(EngineSubject):
    """SQL Server through its stand-in: NOT A REAL SQL SERVER (see the module doc)."""

    engine_name = "sqlserver"
    tables = frozenset({"customers", "orders"})

    def expected_content(self) -> object:
        from tests.engines.sqlserver.stand_in import fake_bak

        return fake_bak("sales")

    def __init__(self) -> None:
        self.server: FakeSqlServer | None = None
        self.shared: Path | None = None

    def create_source(self, tmp_path: Path) -> DatabaseEngine:
        self.shared = tmp_path / "shared"
        engine, self.server = stand_in_engine(self.shared)
        return engine

    def new_target(self, tmp_path: Path) -> DatabaseEngine:
        if self.server is None:
            self.create_source(tmp_path)
        assert self.shared is not None
        engine, _ = stand_in_engine(self.shared, self.server)
        return engine.with_database(f"sales_{uuid.uuid4().hex[:6]}")

    def content(self, engine: DatabaseEngine) -> object:
        assert self.server is not None
        return self.server.databases[engine.database]

    def write(self, engine: DatabaseEngine) -> None:
        assert self.server is not None
        self.server.databases[engine.database] += b"one more page"

    def exists(self, engine: DatabaseEngine) -> bool:
        assert self.server is not None
        return engine.database in self.server.databases

    def nasty_table(self, engine: DatabaseEngine) -> str:
        return "dbo.orders"  # the stand-in's fixed tables hold no nasty rows

    def failures(self, tmp_path: Path) -> dict[str, Failure]:
        missing, _ = stand_in_engine(tmp_path / "missing", _MissingDatabaseServer())
        unreachable, _ = stand_in_engine(tmp_path / "unreachable", _UnreachableServer())
        return {
            "database missing": (missing.with_database("nope"), DatabaseNotFound),
            "server unreachable (ODBC 08001)": (unreachable, ConnectionFailed),
        }


SUBJECTS: dict[str, type[EngineSubject]] = {
    "postgresql": PostgresSubject,
    "mysql": MySQLSubject,
    "sqlite": SqliteSubject,
    "sqlserver-stand-in-not-a-real-server": SqlServerStandInSubject,
}
"""Test id -> subject. Every engine of the registry must be here (test_every_engine_is_covered)."""


class FileTreeSubject(EngineSubject):
    """A directory tree: its "tables" are its top-level directories, its rows their entries.
    The nasty fixture as files: a directory "Mixed Case" whose file names need quoting in any
    shell and whose contents are the nasty rows' bytes, and a directory `plain`."""

    engine_name = "files"

    def expected_content(self) -> object:
        return self._files_of(NASTY_ROWS), {f"plain/row {i}": v.encode() for i, v in PLAIN_ROWS}

    @staticmethod
    def _files_of(rows: list[tuple[int, str | None, bytes | None, Decimal | None]]) -> dict[str, bytes]:
        def name(i: int, note: str | None) -> str:  # quotes, spaces, emoji; no control characters
            return f"{i} {str(note)[:20]}".replace("\n", " ").replace("\t", " ")

        return {f"{NASTY_TABLE}/{name(i, note)}.bin": (raw or b"") + str(number).encode()
                for i, note, raw, number in rows}

    def create_source(self, tmp_path: Path) -> DatabaseEngine:
        root = tmp_path / f"src-{uuid.uuid4().hex[:6]}"
        for name, data in {**self._files_of(NASTY_ROWS),
                           **{f"plain/row {i}": v.encode() for i, v in PLAIN_ROWS}}.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return engine_from_url(f"file://{root}")

    def new_target(self, tmp_path: Path) -> DatabaseEngine:
        return engine_from_url(f"file://{tmp_path / ('dst-' + uuid.uuid4().hex[:6])}")

    def _root(self, engine: DatabaseEngine) -> Path:
        return Path(str(engine.path))

    def content(self, engine: DatabaseEngine) -> object:
        root = self._root(engine)
        files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        nasty = {k: v for k, v in files.items() if k.startswith(NASTY_TABLE + "/")}
        plain = {k: v for k, v in files.items() if k.startswith("plain/")}
        return nasty, plain

    def write(self, engine: DatabaseEngine) -> None:
        target = self._root(engine) / "plain" / "row 1"
        target.write_bytes(target.read_bytes() + b"!")

    def exists(self, engine: DatabaseEngine) -> bool:
        return self._root(engine).exists()

    def failures(self, tmp_path: Path) -> dict[str, Failure]:
        a_file = tmp_path / "a-file"
        a_file.write_bytes(b"not a directory")
        return {
            "directory missing": (engine_from_url(f"file://{tmp_path / 'missing'}"), DatabaseNotFound),
            "a file, not a directory": (engine_from_url(f"file://{a_file}"), DatabaseNotFound),
        }


SUBJECTS["files"] = FileTreeSubject
