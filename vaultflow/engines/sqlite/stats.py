"""SQLite table statistics and schema inventory, read through an open connection (the
spooled copy of a dump, or the source itself)."""

from __future__ import annotations

import hashlib
import sqlite3

from vaultflow.repository.manifest import ColumnProfile, SchemaInventory, TableProfile, TableStats


def table_stats(con: sqlite3.Connection, checksums: bool) -> list[TableStats]:
    """Row counts and order-independent checksums (sum of 64-bit BLAKE2b prefixes of rows)."""
    names = [r[0] for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    out: list[TableStats] = []
    for name in names:
        quoted = _quote(name)
        if not checksums:
            (rows,) = con.execute(f"SELECT count(*) FROM {quoted}").fetchone()
            out.append(TableStats(schema="main", name=name, rows=rows))
            continue
        rows, total = 0, 0
        for row in con.execute(f"SELECT * FROM {quoted}"):
            digest = hashlib.blake2b(repr(row).encode(), digest_size=8).digest()
            total = (total + int.from_bytes(digest, "big")) % (1 << 64)
            rows += 1
        out.append(TableStats(schema="main", name=name, rows=rows, checksum=f"b2x64:{total}"))
    return out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def schema_inventory(con: sqlite3.Connection) -> SchemaInventory:
    """Tables, views, indexes, constraints (SQLite names none: primary key, unique, foreign
    key and check clauses are listed per table), AUTOINCREMENT sequences and column profiles."""
    objects = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                          "ORDER BY name").fetchall()
    found: dict[str, list[str]] = {"table": [], "view": [], "index": []}
    constraints: list[str] = []
    profiles: list[TableProfile] = []
    for type_, name, _tbl, ddl in objects:
        if type_ in found:
            found[type_].append(f"main.{name}")
        if type_ != "table":
            continue
        info = con.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
        # An INTEGER PRIMARY KEY is the rowid: never NULL, declared or not.
        columns = [ColumnProfile(name=c[1], type=c[2] or "",
                                 nullable=not c[3] and not (c[5] and (c[2] or "").upper() == "INTEGER"))
                   for c in info]
        pk = [c[1] for c in sorted((c for c in info if c[5]), key=lambda c: c[5])]
        keys = [pk] if pk else []
        if pk:
            constraints.append(f"main.{name}.primary key ({','.join(pk)})")
        for idx in con.execute(f"PRAGMA index_list({_quote(name)})").fetchall():
            _seq, idx_name, unique, origin, partial = idx[:5]
            cols = [r[2] for r in con.execute(f"PRAGMA index_info({_quote(idx_name)})").fetchall()]
            if unique and not partial and None not in cols and cols not in keys:
                keys.append(cols)
            if origin == "u":
                constraints.append(f"main.{name}.unique ({','.join(str(c) for c in cols)})")
        for fk in con.execute(f"PRAGMA foreign_key_list({_quote(name)})").fetchall():
            constraints.append(f"main.{name}.foreign key ({fk[3]}) -> {fk[2]}({fk[4]})")
        if ddl and "check" in ddl.lower():
            constraints.append(f"main.{name}.check clauses ({hashlib.sha256(ddl.encode()).hexdigest()[:12]})")
        profiles.append(TableProfile(schema="main", name=name, columns=columns, unique_keys=keys))
    sequences: list[str] = []
    if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        sequences = [f"main.{r[0]}" for r in con.execute("SELECT name FROM sqlite_sequence ORDER BY name")]
    return SchemaInventory(tables=found["table"], views=found["view"], indexes=found["index"],
                           constraints=sorted(constraints), sequences=sequences, profiles=profiles)
