"""A sample SQLite database for the demo, and a table-by-table comparison of two copies.

    python -m vaultflow.sample_data create PATH [--rows N]
    python -m vaultflow.sample_data compare PATH_A PATH_B
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

from vaultflow.engines.sqlite.engine import SqliteEngine

_SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE,
                        balance NUMERIC, created_at TEXT NOT NULL, notes TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT,
                     customer_id INTEGER NOT NULL REFERENCES customers(id),
                     amount REAL NOT NULL, status TEXT CHECK (status IN ('new','paid','shipped')),
                     payload BLOB, meta TEXT);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE VIEW paid_orders AS SELECT * FROM orders WHERE status = 'paid';
"""


def create(path: str | Path, rows: int = 20_000, seed: int = 7) -> Path:
    """Create (or overwrite) a sample database with customers and orders."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    rnd = random.Random(seed)
    with closing(sqlite3.connect(target)) as con:
        con.executescript(_SCHEMA)
        customers = max(rows // 10, 1)
        con.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)",
            [(i, f"Customer {i}", f"c{i}@example.com", round(rnd.uniform(-500, 5000), 2),
              f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T10:00:00Z",
              None if i % 7 == 0 else "préféré ✓" * (i % 3)) for i in range(1, customers + 1)])
        con.executemany(
            "INSERT INTO orders (customer_id, amount, status, payload, meta) VALUES (?, ?, ?, ?, ?)",
            [(rnd.randint(1, customers), round(rnd.uniform(1, 900), 2),
              rnd.choice(["new", "paid", "shipped"]), rnd.randbytes(rnd.randint(0, 64)) or None,
              json.dumps({"n": i, "tags": ["a", "b"][: i % 3]})) for i in range(rows)])
        con.commit()
    return target


def compare(a: str | Path, b: str | Path) -> list[str]:
    """Differences between two databases' tables (row counts and content checksums)."""
    left = {t.qualified: t for t in SqliteEngine(a).table_stats()}
    right = {t.qualified: t for t in SqliteEngine(b).table_stats()}
    problems = [f"table {n} missing in {b}" for n in left.keys() - right.keys()]
    problems += [f"table {n} only in {b}" for n in right.keys() - left.keys()]
    for name in sorted(left.keys() & right.keys()):
        if (left[name].rows, left[name].checksum) != (right[name].rows, right[name].checksum):
            problems.append(f"table {name}: {left[name].rows} rows vs {right[name].rows}, "
                            "or content differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaultflow.sample_data")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create")
    c.add_argument("path")
    c.add_argument("--rows", type=int, default=20_000)
    k = sub.add_parser("compare")
    k.add_argument("a")
    k.add_argument("b")
    args = parser.parse_args(argv)
    if args.command == "create":
        print(f"created sample database {create(args.path, args.rows)}")
        return 0
    problems = compare(args.a, args.b)
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        stats = SqliteEngine(args.b).table_stats()
        print("restored copy equals the source: " +
              ", ".join(f"{t.name} {t.rows} rows" for t in stats))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
