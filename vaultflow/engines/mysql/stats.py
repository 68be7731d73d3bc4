"""MySQL/MariaDB table statistics (row counts and checksums, read from the backup's own
dump) and the schema inventory drills compare against."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaultflow.engines.mysql.dump import DumpStatsTap, dump_stream
from vaultflow.repository.manifest import ColumnProfile, SchemaInventory, TableProfile, TableStats

if TYPE_CHECKING:
    from vaultflow.engines.mysql.engine import MySQLEngine


def table_stats(
    engine: MySQLEngine, *, like: list[TableStats] | None = None, checksums: bool = True,
) -> list[TableStats]:
    """Row count and checksum of every base table, read by running the backup's own dump.

    The checksum is the BLAKE3 of the table's row tuples as the dump tool writes them
    (primary key order), so a restored copy matches its snapshot's statistics.
    """
    tap = DumpStatsTap()
    with dump_stream(engine, timeout=None) as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            tap(block)
    return tap.stats()


def schema_inventory(engine: MySQLEngine) -> SchemaInventory:
    """Tables, views, sequences, indexes (table.index), constraints and column profiles
    from information_schema; names without the database, as table statistics have them."""
    db = engine.conn.database
    found: dict[str, list[str]] = {"tables": [], "views": [], "sequences": []}
    kinds = {"BASE TABLE": "tables", "SYSTEM VERSIONED": "tables", "VIEW": "views", "SEQUENCE": "sequences"}
    with engine.connect() as c, c.cursor() as cur:
        cur.execute("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (db,))
        for name, kind in cur.fetchall():
            if kind in kinds:
                found[kinds[kind]].append(str(name))
        cur.execute("SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART FROM "
                    "information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
                    "ORDER BY TABLE_NAME, INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX", (db,))
        indexes: dict[tuple[str, str], list[str]] = {}
        partial: set[tuple[str, str]] = set()
        unique: set[tuple[str, str]] = set()
        for table, index, non_unique, column, sub_part in cur.fetchall():
            key = (str(table), str(index))
            indexes.setdefault(key, []).append(str(column))
            if not int(non_unique):
                unique.add(key)
            if sub_part is not None:
                partial.add(key)  # a prefix index does not make the whole column unique
        cur.execute("SELECT TABLE_NAME, CONSTRAINT_NAME, CONSTRAINT_TYPE FROM "
                    "information_schema.TABLE_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s", (db,))
        constraints = sorted(f"{t}.{n} ({k})" for t, n, k in cur.fetchall())
        cur.execute("SELECT c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE FROM "
                    "information_schema.COLUMNS c JOIN information_schema.TABLES t ON "
                    "t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
                    "WHERE c.TABLE_SCHEMA = %s AND t.TABLE_TYPE = 'BASE TABLE' "
                    "ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION", (db,))
        columns: dict[str, list[ColumnProfile]] = {}
        for table, column, type_, nullable in cur.fetchall():
            columns.setdefault(str(table), []).append(
                ColumnProfile(name=str(column), type=str(type_), nullable=nullable == "YES"))
    profiles = [TableProfile(schema="", name=table, columns=cols,
                             unique_keys=[cols_ for (t, _), cols_ in indexes.items()
                                          if t == table and (t, _) in unique and (t, _) not in partial])
                for table, cols in sorted(columns.items())]
    return SchemaInventory(tables=sorted(found["tables"]), views=sorted(found["views"]),
                           sequences=sorted(found["sequences"]),
                           indexes=sorted(f"{t}.{i}" for t, i in indexes), constraints=constraints,
                           profiles=profiles)
