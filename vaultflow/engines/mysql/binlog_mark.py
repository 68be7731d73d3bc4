"""PITR marks and drills for MySQL/MariaDB, on the design of PostgreSQL's (docs/design.md section 13):
a mark records a database's table statistics and the binlog position they hold, a drill restores to
that position in a scratch database, compares every table and drops it.

    marks/<server>/<name>    sealed JSON BinlogMark (server: host-port, as binlog/<server>/)

Exactness while clients write: the statistics are read from `mariadb-dump --single-transaction
--master-data=2` of the database (the dump itself is discarded), whose transaction snapshot and
recorded binlog position are taken together, as for a snapshot (R98). So writers never pause; the
mark's position is where its transaction snapshot stands in the binlog. The drill replays the
archived binlogs from the newest snapshot before that position up to it (`restore_to_position`)
into `vaultflow_drill_<db>_<hex>` on the scratch server (by default the marked server), reads its
statistics with the same dump, and drops it whatever happens.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime

from pydantic import BaseModel

from vaultflow.audit import audited
from vaultflow.drill.report import CheckResult, DrillReport
from vaultflow.drill.run import SCRATCH_PREFIX
from vaultflow.engines.mysql.binlog import binlog_file_number, binlog_key, binlog_sources, is_partial_key
from vaultflow.engines.mysql.binlog_replay import archived_binlogs, plan_to_position, restore_to_position
from vaultflow.engines.mysql.dump import DumpStatsTap, dump_stream
from vaultflow.engines.mysql.engine import MySQLEngine
from vaultflow.engines.pitr_marks import (
    MarkFailed,
    check_mark_name,
    load_sealed_mark,
    refuse_taken,
    save_sealed_mark,
    sealed_marks,
)
from vaultflow.errors import InputError, VaultflowError
from vaultflow.repository.manifest import BinlogPosition, TableStats
from vaultflow.repository.repository import Repository

_log = logging.getLogger("vaultflow.drill")


class BinlogMark(BaseModel):
    """A database's table statistics and the binlog position (and GTID position) they hold."""

    version: int = 1
    name: str
    server: str
    database: str
    server_version: str
    created_at: datetime
    binlog: BinlogPosition
    tables: list[TableStats]


def mark_source(server: str) -> str:
    """The `<server>` of marks/<server>/<name>: the binlog archive's directory name (host-port)."""
    return binlog_key(server, "x.000001").split("/")[1]


def create_binlog_mark(engine: MySQLEngine, repo: Repository, name: str | None = None, *,
                       archive_check: bool = True) -> BinlogMark:
    """Record mark `name` (default `vaultflow-<UTC time>`) of the engine's database. Refuses, before
    anything is read, a bad or taken name, a server without log_bin and (with `archive_check`) one whose
    binlog is not archived into this repository (binlog-stream)."""
    now = datetime.now(UTC)
    name = check_mark_name(name or f"vaultflow-{now:%Y%m%dt%H%M%S}")
    server, database = engine.server_label(), engine.conn.database
    source = mark_source(server)
    refuse_taken(repo, source, name, f"server {server}")
    with engine.connect() as c, c.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.log_bin, VERSION()")
        row = cur.fetchone()
    assert row is not None
    if not int(row[0]):
        raise InputError(f"{server} writes no binary log, so no moment of {database!r} can be restored to",
                         "turn on log_bin (vaultflow pitr check)")
    if archive_check and not binlog_sources(repo, server):
        raise InputError(f"no binlog of {server} is archived in the repository at {repo.store.describe()}, so no "
                         "drill could reach a mark", "run vaultflow binlog-stream for the server (or "
                                                     "--no-archive-check)")
    with audited(repo, "mark", object=name, database=database) as note:
        tap = DumpStatsTap()
        with dump_stream(engine, None, record_binlog=True) as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                tap(block)
        position = tap.binlog_position()
        if position is None:
            raise VaultflowError(f"the dump of {engine.describe()} wrote no binlog position",
                                 "check the mariadb-dump version (--master-data=2)")
        mark = BinlogMark(name=name, server=server, database=database, server_version=str(row[1]),
                          created_at=datetime.now(UTC), binlog=position, tables=tap.stats())
        save_sealed_mark(repo, source, name, mark, f"server {server}")
        note.detail = (f"mark {name!r} of {database!r} at {position.file}:{position.position} (GTID "
                       f"{position.gtid or '-'}), {len(mark.tables)} tables")
    return mark


def archive_mark_binlog(engine: MySQLEngine, repo: Repository, mark: BinlogMark, wait: float = 120.0) -> None:
    """Wait until the repository holds the mark's binlog up to its position (a later file, the finished
    file, or a partial of it that long), rotating the server's binlog once (FLUSH BINARY LOGS) so
    binlog-stream finishes the file, and a drill can replay to the mark right away. MarkFailed naming the
    file when it does not arrive within `wait` seconds (is binlog-stream running?)."""
    deadline = time.monotonic() + wait
    flushed = False
    while not _archive_reaches(repo, mark):
        if not flushed:
            flushed = True
            try:
                with engine.connect() as c, c.cursor() as cur:
                    cur.execute("FLUSH BINARY LOGS")
            except Exception as exc:  # noqa: BLE001 - without RELOAD a pushed partial still reaches it
                _log.warning("FLUSH BINARY LOGS on %s failed (%s); waiting for binlog-stream's next push",
                             engine.server_label(), str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        if time.monotonic() >= deadline:
            raise MarkFailed(f"binlog {mark.binlog.file} of mark {mark.name!r} did not reach the repository at "
                             f"{repo.store.describe()} up to position {mark.binlog.position} within {wait:.0f} s",
                             f"check that vaultflow binlog-stream runs for {mark.server}")
        time.sleep(0.25)


def _archive_reaches(repo: Repository, mark: BinlogMark) -> bool:
    wanted = mark.binlog.file
    for name, key in binlog_sources(repo, mark.server):
        if name == wanted:
            return not is_partial_key(key) or int(key.rsplit(".", 1)[1]) >= mark.binlog.position
        if binlog_file_number(name) > binlog_file_number(wanted):
            return True
    return False


def binlog_marks(repo: Repository, server: str, database: str | None = None) -> list[BinlogMark]:
    """The server's marks (of `database`, when given), oldest first."""
    found = sealed_marks(repo, mark_source(server), BinlogMark)
    return sorted((m for m in found if database is None or m.database == database),
                  key=lambda m: (m.created_at, m.name))


def pick_binlog_mark(repo: Repository, server: str, database: str, name: str | None) -> BinlogMark:
    """The named mark of `database` on `server`, else its newest; InputError (one line) for none."""
    if name is not None:
        mark = load_sealed_mark(repo, mark_source(server), name, BinlogMark, f"server {server}",
                                "vaultflow pitr mark mysql://.../DB")
        if mark.database != database:
            raise InputError(f"mark {name!r} of {server} is of database {mark.database!r}, not {database!r}",
                             f"drill mysql://.../{mark.database}, or another mark (vaultflow pitr marks)")
        return mark
    found = binlog_marks(repo, server, database)
    if not found:
        raise InputError(f"database {database!r} on {server} has no mark in the repository at "
                         f"{repo.store.describe()}", "make one with: vaultflow pitr mark mysql://.../DB")
    return found[-1]


def run_binlog_drill(repo: Repository, mark: BinlogMark, scratch_server: MySQLEngine) -> DrillReport:
    """Drill `mark` on `scratch_server`'s server, recorded in the audit trail (failed unless the
    report passed). A scratch database that exists already is refused before anything is made; an
    archive that cannot reach the mark (a gap, a file not archived yet), a failed replay or check, or
    a scratch database that cannot be dropped is a failed report."""
    repo.require("restore", "a PITR drill")
    scratch = scratch_server.with_database(_scratch_name(mark))
    if scratch.database_exists():
        raise InputError(f"scratch database {scratch.database!r} already exists on {scratch.server_label()}",
                         "drop it if it is a leftover of a killed drill")
    with audited(repo, "drill", object=f"mark {mark.name}", database=mark.database) as note:
        report = _drill(repo, mark, scratch)
        note.detail, note.failed = report.summary(), not report.passed
    return report


def _scratch_name(mark: BinlogMark) -> str:
    db = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in mark.database.lower())
    return f"{SCRATCH_PREFIX}{db.strip('_')[:32] or 'db'}_pitr_{secrets.token_hex(4)}"


def _drill(repo: Repository, mark: BinlogMark, scratch: MySQLEngine) -> DrillReport:
    from vaultflow.operations.restore import restore_snapshot
    from vaultflow.requests import RestoreRequest

    began = time.monotonic()
    report = DrillReport(snapshot_id="-", snapshot_taken=mark.created_at, engine="mysql", server=mark.server,
                         database=mark.database, scratch_server=scratch.server_label(),
                         scratch_database=scratch.database, started_at=datetime.now(UTC), mark=mark.name,
                         scratch_dropped=True)
    where = f"{mark.binlog.file}:{mark.binlog.position}"
    with archived_binlogs(repo, mark.server) as archive:
        try:
            plan = plan_to_position(archive, mark.database, mark.binlog.file.lower(), mark.binlog.position)
        except InputError as exc:  # the archive does not reach the mark: a drill that failed, not bad input
            report.error = f"mark {mark.name!r} at {where} cannot be reached: {exc.what}"
            report.finished_at = datetime.now(UTC)
            return report
        snapshot = plan.snapshot
        report.snapshot_id, report.snapshot_taken = snapshot.id, snapshot.started_at
        report.scratch_dropped = False
        _log.info("PITR drill of mark %r: snapshot %s and the binlogs up to %s into %s", mark.name,
                  snapshot.short_id, where, scratch.describe())
        try:
            try:
                restore_to_position(archive, plan, scratch, lambda: restore_snapshot(
                    repo, snapshot.id, scratch, RestoreRequest(owner=False)))
                report.restore_seconds = round(time.monotonic() - began, 3)
                checked = time.monotonic()
                report.checks = compare_with_binlog_mark(mark, scratch.table_stats())
                report.checks_seconds = round(time.monotonic() - checked, 3)
                report.rto_seconds = round(time.monotonic() - began, 3)
            except Exception as exc:  # noqa: BLE001 - a driver error still ends as a failed drill
                report.record_error(exc, f"into {scratch.describe()}")
        finally:
            try:
                scratch.drop_database()
                report.scratch_dropped = True
            except VaultflowError as exc:
                line = f"could not drop scratch database {scratch.database!r}: {exc.line()}"
                _log.error(line)
                report.error = report.error or line
            report.finished_at = datetime.now(UTC)
    return report


def compare_with_binlog_mark(mark: BinlogMark, got: list[TableStats]) -> list[CheckResult]:
    """Rows and checksum of every table of the mark, and a failed check for each table the copy has
    that the mark does not."""
    observed = {t.name: t for t in got}
    results: list[CheckResult] = []
    for want in mark.tables:
        name = f"{mark.database}.{want.name}"
        found = observed.pop(want.name, None)
        if found is None:
            results.append(CheckResult(check="rows", object=name, name="row count", status="failed",
                                       expected=str(want.rows), observed="table missing"))
            continue
        results.append(CheckResult(check="rows", object=name, name="row count",
                                   status="passed" if found.rows == want.rows else "failed",
                                   expected=str(want.rows), observed=str(found.rows)))
        results.append(CheckResult(check="checksum", object=name, name="content checksum",
                                   status="passed" if found.checksum == want.checksum else "failed",
                                   expected=want.checksum, observed=found.checksum))
    for extra in sorted(observed):
        results.append(CheckResult(check="rows", object=f"{mark.database}.{extra}", name="table", status="failed",
                                   expected="no such table at the mark", observed=f"{observed[extra].rows} rows"))
    return results
