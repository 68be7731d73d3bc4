"""PITR marks: a named restore point on a PostgreSQL cluster and the statistics of every table of
every database at exactly that point, stored in the repository for a later PITR drill.

    marks/<sysid>/<name>    sealed JSON PitrMark, AAD = "mark:" + <key>

How the statistics are made exact while clients write (docs/design.md section 13, "PITR drills"):
in every database a REPEATABLE READ transaction takes `LOCK TABLE <every user table> IN SHARE MODE`
(with a lock timeout; SHARE waits for every writer of the table to finish, and no write starts until
the lock is released). With all databases' locks held, `pg_create_restore_point(name)`; then each
transaction's first query exports its snapshot, which therefore sees every commit before the restore
point and none after it on those tables. Readers import the snapshots, the locking transactions end,
writers go on, and the tables are read in the imported snapshots. Writers wait from the lock to the
import, not for the reading.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel, Field

from vaultflow.audit import audited
from vaultflow.engines.pitr_marks import (
    MARK_PREFIX,
    MarkFailed,
    check_mark_name,
    load_sealed_mark,
    refuse_taken,
    save_sealed_mark,
    sealed_marks,
)
from vaultflow.engines.postgres import basebackup
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.segments import ORDER_BY_PK_MAX_BYTES, TableInfo, user_tables
from vaultflow.engines.postgres.stats import SnapshotReaders
from vaultflow.errors import InputError
from vaultflow.repository.repository import Repository

__all__ = ["MARK_PREFIX", "MarkFailed", "MarkedTable", "PitrMark", "check_mark_name", "create_mark", "load_mark",
           "marks", "newest_mark", "save_mark"]


class MarkedTable(BaseModel):
    """One table's statistics at the mark, and the order they were read in (`pk` or `heap`), which
    the drill reads it in again."""

    table_schema: str = Field(alias="schema")
    name: str
    rows: int
    checksum: str
    order: Literal["pk", "heap"]

    model_config = {"populate_by_name": True}

    @property
    def qualified(self) -> str:
        return f"{self.table_schema}.{self.name}"


class PitrMark(BaseModel):
    """A restore point and the statistics of every user table of every database at it."""

    version: int = 1
    name: str
    system_identifier: int
    server: str
    server_version: str
    created_at: datetime
    lsn: str = Field(description="what pg_create_restore_point returned")
    timeline: int
    wal_file: str
    writers_paused_seconds: float
    databases: dict[str, list[MarkedTable]]

    @property
    def table_count(self) -> int:
        return sum(len(tables) for tables in self.databases.values())


def save_mark(repo: Repository, mark: PitrMark) -> None:
    """Write the mark once (synced put); an existing name is refused."""
    save_sealed_mark(repo, str(mark.system_identifier), mark.name, mark, f"cluster {mark.system_identifier}")


def load_mark(repo: Repository, system_identifier: int, name: str) -> PitrMark:
    """The named mark; InputError (one line) when the repository has none of that name."""
    return load_sealed_mark(repo, str(system_identifier), name, PitrMark, f"cluster {system_identifier}",
                            "vaultflow pitr mark SERVER")


def marks(repo: Repository, system_identifier: int) -> list[PitrMark]:
    """Every mark of the cluster, oldest first."""
    return sorted(sealed_marks(repo, str(system_identifier), PitrMark), key=lambda m: (m.created_at, m.name))


def newest_mark(repo: Repository, system_identifier: int) -> PitrMark:
    found = marks(repo, system_identifier)
    if not found:
        raise InputError(f"cluster {system_identifier} has no mark in the repository at {repo.store.describe()}",
                         "make one with: vaultflow pitr mark SERVER")
    return found[-1]


def create_mark(engine: PostgresEngine, repo: Repository, name: str | None = None, *, lock_timeout: float = 10.0,
                jobs: int = 2, archive_check: bool = True) -> PitrMark:
    """Create restore point `name` (default `vaultflow-<UTC time>`) on the cluster and store, as a sealed
    record, the statistics of every user table of every database at it (see the module's docstring).
    Refuses, before touching anything, a bad or taken name and (with `archive_check`) a server that does
    not archive into this repository. MarkFailed when a table lock is not granted within `lock_timeout`
    seconds or the tables changed while marking; no record is written then (the restore point, a WAL
    record only, stays unused)."""
    from vaultflow.engines.postgres.pitr import check_archiving

    now = datetime.now(UTC)
    name = check_mark_name(name or f"vaultflow-{now:%Y%m%dt%H%M%S}")
    facts = basebackup.cluster_facts(engine)
    refuse_taken(repo, str(facts.system_identifier), name, f"cluster {facts.system_identifier}")
    if archive_check:
        check_archiving(engine, repo, facts)
    with audited(repo, "mark", object=name, database="(cluster)") as note:
        mark = _mark(engine, name, facts, lock_timeout, jobs)
        save_mark(repo, mark)
        note.detail = (f"restore point {name!r} at {mark.lsn} (timeline {mark.timeline}), {mark.table_count} "
                       f"tables in {len(mark.databases)} databases, writers paused {mark.writers_paused_seconds} s")
    return mark


def _mark(engine: PostgresEngine, name: str, facts: basebackup.ClusterFacts, lock_timeout: float,
          jobs: int) -> PitrMark:
    sessions: dict[str, tuple[psycopg.Connection[Any], list[TableInfo]]] = {}
    readers: dict[str, tuple[SnapshotReaders, list[TableInfo]]] = {}
    try:
        paused_at = time.monotonic()  # from the first lock on, writers of a locked table wait
        for db in engine.list_databases():
            c = engine.with_database(db)._connect()
            sessions[db] = (c, [])
            tables = user_tables(c, db, None, None, ORDER_BY_PK_MAX_BYTES)
            sessions[db] = (c, tables)
            c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            c.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))
            if tables:
                _lock(c, db, tables, lock_timeout)
        with engine._connect() as c:
            row = c.execute("SELECT p::text, pg_walfile_name(p) FROM pg_create_restore_point(%s) p",
                            (name,)).fetchone()
        assert row is not None
        lsn, wal_file = str(row[0]), str(row[1])
        for db, (c, tables) in sessions.items():
            exported = c.execute("SELECT pg_export_snapshot()").fetchone()  # fixes the snapshot: after the point
            assert exported is not None
            seen = user_tables(c, db, None, None, ORDER_BY_PK_MAX_BYTES)
            _same_tables(db, tables, seen)
            readers[db] = (SnapshotReaders(engine.with_database(db), str(exported[0]), min(jobs, len(seen)) or 1),
                           [_with_order(t, tables) for t in seen])
        for c, _ in sessions.values():
            c.execute("COMMIT")  # writers go on; the readers hold the snapshots
        paused = round(time.monotonic() - paused_at, 3)
        databases: dict[str, list[MarkedTable]] = {}
        for db, (reader, tables) in readers.items():
            order = {t.qualified: t.order for t in tables}
            databases[db] = [MarkedTable(schema=s.table_schema, name=s.name, rows=s.rows, checksum=s.checksum or "",
                                         order="pk" if order[s.qualified] == "pk" else "heap")
                             for s in reader.read(tables)]
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MarkFailed(f"marking cluster {facts.system_identifier} at {engine.server_label()} failed: {first[:300]}",
                         "mark again") from None
    finally:
        for reader, _ in readers.values():
            reader.close()
        for c, _ in sessions.values():
            c.close()
    return PitrMark(name=name, system_identifier=facts.system_identifier, server=engine.server_label(),
                    server_version=facts.server_version, created_at=datetime.now(UTC), lsn=lsn,
                    timeline=int(wal_file[:8], 16), wal_file=wal_file, writers_paused_seconds=paused,
                    databases=databases)


def _lock(c: psycopg.Connection[Any], db: str, tables: list[TableInfo], lock_timeout: float) -> None:
    statement = sql.SQL("LOCK TABLE {} IN SHARE MODE").format(
        sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in tables))
    try:
        c.execute(statement)
    except psycopg.errors.LockNotAvailable:
        raise MarkFailed(f"the tables of database {db!r} could not be locked within {lock_timeout:g} s (a long "
                         "write transaction holds one); no mark was recorded",
                         "mark again when it ended, or raise --lock-timeout") from None


def _same_tables(db: str, locked: list[TableInfo], seen: list[TableInfo]) -> None:
    """A table created while marking was not locked, so its rows could differ from the restore point."""
    new = sorted({t.qualified for t in seen} - {t.qualified for t in locked})
    if new:
        raise MarkFailed(f"table(s) {', '.join(new[:5])} of database {db!r} appeared while marking; no mark was "
                         "recorded", "mark again")


def _with_order(t: TableInfo, locked: list[TableInfo]) -> TableInfo:
    """The table as listed before the lock (sizes, so the read order, from then)."""
    return next((x for x in locked if x.qualified == t.qualified), t)


def archive_mark_wal(engine: PostgresEngine, repo: Repository, mark: PitrMark, wait: float = 120.0) -> None:
    """Switch the server to a new WAL segment and wait until the mark's segment (which holds its
    restore point) is in the repository, so a drill can recover to the mark right away; MarkFailed
    naming the segment when it does not arrive within `wait` seconds."""
    from vaultflow.engines.postgres.wal import WalName

    key = WalName.parse(mark.wal_file).key(mark.system_identifier)
    with engine._connect() as c:
        c.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + wait
    while repo.store.stat(key) is None:
        if time.monotonic() >= deadline:
            raise MarkFailed(f"WAL segment {mark.wal_file} of mark {mark.name!r} did not reach the repository at "
                             f"{repo.store.describe()} within {wait:.0f} s",
                             "check pg_stat_archiver and the server log for archive_command errors")
        time.sleep(0.25)
