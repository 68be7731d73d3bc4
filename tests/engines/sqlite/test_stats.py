"""SQLite table statistics and schema inventory, read straight from a connection."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from vaultflow.engines.sqlite.stats import schema_inventory, table_stats


def _database(rows: list[tuple[int, str]]) -> sqlite3.Connection:
    con = sqlite3.connect(":memory:")
    con.execute('CREATE TABLE "odd ""name""" (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)')
    con.executemany('INSERT INTO "odd ""name""" VALUES (?, ?)', rows)
    return con


def test_checksums_ignore_row_order_and_see_changed_values() -> None:
    rows = [(1, "a"), (2, "b"), (3, "c")]
    with closing(_database(rows)) as forward, closing(_database(rows[::-1])) as backward, \
            closing(_database([(1, "a"), (2, "b"), (3, "x")])) as changed:
        assert table_stats(forward, True) == table_stats(backward, True)
        assert table_stats(forward, True)[0].checksum != table_stats(changed, True)[0].checksum
        (counted,) = table_stats(forward, False)
    assert (counted.table_schema, counted.name, counted.rows, counted.checksum) == ("main", 'odd "name"', 3, None)


def test_inventory_lists_keys_and_nullability() -> None:
    with closing(_database([])) as con:
        inventory = schema_inventory(con)
    (profile,) = inventory.profiles
    assert inventory.tables == ['main.odd "name"']
    assert [(c.name, c.nullable) for c in profile.columns] == [("id", False), ("v", False)]
    assert profile.unique_keys == [["id"], ["v"]]
    assert 'main.odd "name".primary key (id)' in inventory.constraints
