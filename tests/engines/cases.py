"""Engine test cases: build a rich database, write concurrently, describe the schema.

Every engine test is parametrized over ENGINE_CASES, so a new engine adds one class here.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import psycopg

from tests.conftest import PG_HOST, PG_PORT, drop_my_database, drop_pg_database, my_admin, my_url, pg_admin, pg_url
from vaultflow.engines import DatabaseEngine, engine_from_url

PG_SCHEMA = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE invoice_no START 1000;
CREATE TABLE customers (
    id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE, balance numeric(12, 2),
    photo bytea, prefs jsonb, raw json, mood mood, born date, seen timestamptz,
    name_upper text GENERATED ALWAYS AS (upper(name)) STORED);
COMMENT ON TABLE customers IS 'people who pay';
CREATE TABLE orders (
    id serial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id),
    invoice int DEFAULT nextval('invoice_no'), amount numeric, note text);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 500;
CREATE MATERIALIZED VIEW order_totals AS
    SELECT customer_id, sum(amount) AS total FROM orders GROUP BY customer_id;
CREATE TABLE events (id int, at date NOT NULL, payload text) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE ledger_a (id bigserial PRIMARY KEY, v int);
CREATE TABLE ledger_b (id bigserial PRIMARY KEY, v int);
CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT i + 1';
INSERT INTO customers (name, email, balance, photo, prefs, raw, mood, born, seen)
SELECT 'name ' || g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'c' || g || '@x.org' END,
       (g * 3.17)::numeric(12, 2), CASE WHEN g % 3 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
       jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 5)),
       CASE WHEN g % 4 = 0 THEN NULL ELSE json_build_object('k', g) END,
       (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, date '1980-01-01' + g,
       timestamptz '2025-01-01 00:00+00' + g * interval '1 minute'
FROM generate_series(1, 3000) g;
INSERT INTO orders (customer_id, amount, note)
SELECT 1 + g % 3000, (g % 1000) + 0.5, repeat('ñ', g % 7) FROM generate_series(1, 12000) g;
INSERT INTO events SELECT g, date '2025-06-01' + (g % 400), md5(g::text) FROM generate_series(1, 5000) g;
REFRESH MATERIALIZED VIEW order_totals;
SELECT lo_from_bytea(0, decode(repeat('cafe', 5000), 'hex'));
"""


class EngineCase(ABC):
    name: str

    @abstractmethod
    def create_source(self, tmp_path: Path) -> str:
        """Create a populated database; return its URL."""

    @abstractmethod
    def new_target(self, tmp_path: Path) -> str:
        """A URL for a database that does not exist yet."""

    @abstractmethod
    def schema(self, url: str) -> str:
        """A normalised description of the database's schema."""

    @abstractmethod
    def extra_state(self, url: str) -> object:
        """State the table checksums do not cover (sequences, large objects)."""

    @abstractmethod
    def bulk(self, url: str, mib: int) -> None:
        """Add about `mib` MiB of rows so a dump takes a moment."""

    @abstractmethod
    def paired_writer(self, url: str, stop: threading.Event) -> Callable[[], int]:
        """A writer inserting one row into ledger_a and ledger_b per transaction."""

    @abstractmethod
    def ledger_counts(self, url: str) -> tuple[int, int]: ...

    @abstractmethod
    def change_a_little(self, url: str, n: int) -> None:
        """Update the notes of `n` orders and add one ledger row."""

    def engine(self, url: str) -> DatabaseEngine:
        return engine_from_url(url)

    def cleanup(self) -> None:
        """Drop what the case created."""


class ServerCase(EngineCase):
    """A case on a shared database server: every database it creates is dropped at cleanup."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def _new_name(self) -> str:
        name = f"vft_{uuid.uuid4().hex[:10]}"
        self.created.append(name)
        return name

    @abstractmethod
    def _drop(self, name: str) -> None: ...

    def cleanup(self) -> None:
        for name in self.created:
            self._drop(name)


class PostgresCase(ServerCase):
    name = "postgresql"

    def create_source(self, tmp_path: Path) -> str:
        name = self._new_name()
        with pg_admin() as c:
            c.execute(f'CREATE DATABASE "{name}"')
            c.execute("DO $$ BEGIN CREATE ROLE vft_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=name, autocommit=True) as c:
            c.execute(PG_SCHEMA)
            c.execute("GRANT SELECT ON customers TO vft_reader")
            c.execute("SELECT setval('invoice_no', 54321)")
        return pg_url(name)

    def new_target(self, tmp_path: Path) -> str:
        return pg_url(self._new_name())

    def _connect(self, url: str) -> psycopg.Connection:  # type: ignore[type-arg]
        return psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres",
                               dbname=url.rsplit("/", 1)[1], autocommit=True)

    def schema(self, url: str) -> str:
        out = subprocess.run(["pg_dump", "--schema-only", "-h", PG_HOST, "-p", str(PG_PORT), "-U", "postgres",
                              "-d", url.rsplit("/", 1)[1]], capture_output=True, text=True, check=True)
        keep = [ln for ln in out.stdout.splitlines()
                if ln.strip() and not ln.startswith(("--", "\\restrict", "\\unrestrict", "SET ",
                                                      "SELECT pg_catalog.set_config"))]
        return "\n".join(keep)

    def extra_state(self, url: str) -> object:
        with self._connect(url) as c:
            seq = c.execute("SELECT last_value FROM invoice_no").fetchone()
            lo = c.execute("SELECT string_agg(md5(lo_get(oid)), ',' ORDER BY oid) "
                           "FROM pg_largeobject_metadata").fetchone()
            mat = c.execute("SELECT count(*), sum(total) FROM order_totals").fetchone()
        return seq, lo, mat

    def bulk(self, url: str, mib: int) -> None:
        with self._connect(url) as c:
            c.execute("CREATE TABLE bulk (id int PRIMARY KEY, t text)")
            rows = mib * 1024 * 1024 // 140
            c.execute(f"INSERT INTO bulk SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {rows}) g")

    def paired_writer(self, url: str, stop: threading.Event) -> Callable[[], int]:
        def run() -> int:
            n = 0
            with self._connect(url) as c:
                c.autocommit = False
                while not stop.is_set():
                    c.execute("INSERT INTO ledger_a (v) VALUES (%s)", (n,))
                    c.execute("INSERT INTO ledger_b (v) VALUES (%s)", (n,))
                    c.commit()
                    n += 1
            return n
        return run

    def ledger_counts(self, url: str) -> tuple[int, int]:
        with self._connect(url) as c:
            a = c.execute("SELECT count(*) FROM ledger_a").fetchone()
            b = c.execute("SELECT count(*) FROM ledger_b").fetchone()
        assert a and b
        return int(a[0]), int(b[0])

    def change_a_little(self, url: str, n: int) -> None:
        with self._connect(url) as c:
            c.execute("UPDATE orders SET note = note || '!' WHERE id <= %s", (n,))
            c.execute("INSERT INTO ledger_a (v) VALUES (1)")

    def _drop(self, name: str) -> None:
        drop_pg_database(name)


class SqliteCase(EngineCase):
    name = "sqlite"

    def create_source(self, tmp_path: Path) -> str:
        from vaultflow.sample_data import create

        path = tmp_path / f"src-{uuid.uuid4().hex[:6]}.db"
        create(path, rows=5000)
        with closing(sqlite3.connect(path)) as con:
            con.executescript("""
                PRAGMA journal_mode=WAL;
                CREATE TABLE ledger_a (id INTEGER PRIMARY KEY, v INT);
                CREATE TABLE ledger_b (id INTEGER PRIMARY KEY, v INT);
                CREATE TRIGGER orders_touch AFTER UPDATE ON orders BEGIN SELECT 1; END;
                INSERT INTO customers (id, name, email, balance, created_at, notes)
                VALUES (999999, 'nulls', NULL, NULL, '2025-01-01', NULL);
            """)
        return f"sqlite:///{path}"

    def new_target(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / ('dst-' + uuid.uuid4().hex[:6] + '.db')}"

    def _path(self, url: str) -> str:
        return url[len("sqlite:///"):]

    def schema(self, url: str) -> str:
        with closing(sqlite3.connect(self._path(url))) as con:
            rows = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        return "\n".join(map(str, rows))

    def extra_state(self, url: str) -> object:
        with closing(sqlite3.connect(self._path(url))) as con:
            return con.execute("SELECT * FROM sqlite_sequence ORDER BY name").fetchall()

    def bulk(self, url: str, mib: int) -> None:
        with closing(sqlite3.connect(self._path(url))) as con:
            con.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, t TEXT)")
            rows = mib * 1024 * 1024 // 140
            con.execute(f"WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {rows}) "
                        "INSERT INTO bulk SELECT x, hex(randomblob(64)) FROM g")
            con.commit()

    def paired_writer(self, url: str, stop: threading.Event) -> Callable[[], int]:
        def run() -> int:
            n = 0
            with closing(sqlite3.connect(self._path(url), timeout=30)) as con:
                while not stop.is_set():
                    with con:
                        con.execute("INSERT INTO ledger_a (v) VALUES (?)", (n,))
                        con.execute("INSERT INTO ledger_b (v) VALUES (?)", (n,))
                    n += 1
            return n
        return run

    def change_a_little(self, url: str, n: int) -> None:
        with closing(sqlite3.connect(self._path(url))) as con:
            con.execute("UPDATE orders SET meta = meta || ' ' WHERE id <= ?", (n,))
            con.execute("INSERT INTO ledger_a (v) VALUES (1)")
            con.commit()

    def ledger_counts(self, url: str) -> tuple[int, int]:
        with closing(sqlite3.connect(self._path(url))) as con:
            a = con.execute("SELECT count(*) FROM ledger_a").fetchone()[0]
            b = con.execute("SELECT count(*) FROM ledger_b").fetchone()[0]
        return int(a), int(b)


MARIADB_SCHEMA = [
    """CREATE TABLE customers (
        id bigint AUTO_INCREMENT PRIMARY KEY, name varchar(100) NOT NULL, email varchar(200) UNIQUE,
        balance decimal(12, 2), ratio double, small tinyint, flags bit(3), photo blob, prefs json,
        born date, seen datetime(6), mood enum('sad', 'ok', 'happy'),
        name_upper varchar(100) AS (upper(name)) VIRTUAL) COMMENT 'people who pay'""",
    """CREATE TABLE orders (
        id int AUTO_INCREMENT PRIMARY KEY, customer_id bigint NOT NULL, amount decimal(10, 2), note text,
        KEY orders_customer (customer_id),
        CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id))""",
    "CREATE TABLE audit (id int AUTO_INCREMENT PRIMARY KEY, order_id int, at_amount decimal(10, 2))",
    "CREATE TABLE nokey (a int, b varchar(10))",
    "CREATE TABLE ledger_a (id bigint AUTO_INCREMENT PRIMARY KEY, v int)",
    "CREATE TABLE ledger_b (id bigint AUTO_INCREMENT PRIMARY KEY, v int)",
    "CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 500",
    """CREATE TRIGGER orders_audit AFTER UPDATE ON orders FOR EACH ROW
        INSERT INTO audit (order_id, at_amount) VALUES (NEW.id, NEW.amount)""",
    "CREATE FUNCTION add_one(i int) RETURNS int DETERMINISTIC RETURN i + 1",
    """INSERT INTO customers (name, email, balance, ratio, small, flags, photo, prefs, born, seen, mood)
       SELECT concat('name ', seq, CASE WHEN seq % 7 = 0 THEN ' it''s \\ (ñ), "q"\n' ELSE '' END),
              CASE WHEN seq % 10 = 0 THEN NULL ELSE concat('c', seq, '@x.org') END,
              seq * 3.17, CASE WHEN seq % 5 = 0 THEN NULL ELSE seq / 7 END, CAST(seq % 128 AS SIGNED) - 64, seq % 8,
              CASE WHEN seq % 3 = 0 THEN NULL ELSE unhex(concat(md5(seq), '00ff0a0d5c27')) END,
              CASE WHEN seq % 4 = 0 THEN NULL ELSE json_object('n', seq, 'tags', json_array('a', seq % 5)) END,
              date '1980-01-01' + INTERVAL seq DAY, timestamp '2025-01-01 00:00:00' + INTERVAL seq SECOND,
              elt(1 + seq % 3, 'sad', 'ok', 'happy')
       FROM seq_1_to_3000""",
    """INSERT INTO orders (customer_id, amount, note)
       SELECT 1 + seq % 3000, (seq % 1000) + 0.5, repeat('ñ', seq % 7) FROM seq_1_to_12000""",
    "INSERT INTO nokey VALUES (3, 'c'), (1, 'a'), (2, NULL), (1, 'a')",
    "UPDATE orders SET amount = amount + 1 WHERE id <= 10",
]


class MariaDBCase(ServerCase):
    name = "mariadb"

    def _db(self, url: str) -> str:
        return url.rsplit("/", 1)[1]

    def execute(self, url: str, *statements: str) -> None:
        with my_admin(self._db(url)) as c, c.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def create_source(self, tmp_path: Path) -> str:
        name = self._new_name()
        with my_admin() as c, c.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        self.execute(my_url(name), *MARIADB_SCHEMA)
        return my_url(name)

    def new_target(self, tmp_path: Path) -> str:
        return my_url(self._new_name())

    def schema(self, url: str) -> str:
        out = subprocess.run(["mariadb-dump", "-h", "127.0.0.1", "-u", "root", "--no-data", "--routines",
                              "--triggers", "--events", "--skip-dump-date", self._db(url)],
                             capture_output=True, text=True, check=True)
        return "\n".join(ln for ln in out.stdout.splitlines() if ln.strip() and not ln.startswith("--"))

    def extra_state(self, url: str) -> object:
        with my_admin(self._db(url)) as c, c.cursor() as cur:
            cur.execute("SELECT TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1")
            auto = cur.fetchall()
            cur.execute("SELECT add_one(41), count(*), sum(amount) FROM big_orders")
            view = cur.fetchone()
            cur.execute("SELECT md5(group_concat(concat_ws(',', id, name, hex(photo), prefs, flags + 0) "
                        "ORDER BY id)) FROM customers")
            values = cur.fetchone()
        return auto, view, values

    def bulk(self, url: str, mib: int) -> None:
        rows = mib * 1024 * 1024 // 140
        self.execute(url, "CREATE TABLE bulk (id int PRIMARY KEY, t text)",
                     f"INSERT INTO bulk SELECT seq, repeat(md5(seq), 4) FROM seq_1_to_{rows}")

    def paired_writer(self, url: str, stop: threading.Event) -> Callable[[], int]:
        def run() -> int:
            n = 0
            with my_admin(self._db(url)) as c, c.cursor() as cur:
                c.autocommit(False)
                while not stop.is_set():
                    cur.execute("INSERT INTO ledger_a (v) VALUES (%s)", (n,))
                    cur.execute("INSERT INTO ledger_b (v) VALUES (%s)", (n,))
                    c.commit()
                    n += 1
            return n
        return run

    def ledger_counts(self, url: str) -> tuple[int, int]:
        with my_admin(self._db(url)) as c, c.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM ledger_a), (SELECT count(*) FROM ledger_b)")
            row = cur.fetchone()
        return int(row[0]), int(row[1])

    def change_a_little(self, url: str, n: int) -> None:
        self.execute(url, f"UPDATE orders SET note = concat(note, '!') WHERE id <= {int(n)}",
                     "INSERT INTO ledger_a (v) VALUES (1)")

    def _drop(self, name: str) -> None:
        drop_my_database(name)


ENGINE_CASES: dict[str, type[EngineCase]] = {"postgresql": PostgresCase, "mariadb": MariaDBCase,
                                             "sqlite": SqliteCase}
