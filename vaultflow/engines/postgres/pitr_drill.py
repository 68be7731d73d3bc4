"""A PITR drill: recover the cluster to a mark (pitr_mark.py) in a scratch data directory on a free
port, compare every table of every database with the mark's statistics, tear the scratch cluster down.

The scratch server recovers with `recovery_target_name = <mark>`, `recovery_target_timeline = <the
mark's timeline>` (not 'latest': a later promotion's timeline may branch before the mark) and
`recovery_target_action = pause` (hot standby): it stops replay exactly at the restore point and
serves reads without promoting, so no timeline is created, no history file exists and nothing
could be archived (archive_mode is off too). The scratch directory (`vaultflow-pitr-drill-*`: the
data directory, its socket and, when the passphrase is handed over in memory, a 0600 passphrase
file) is removed whatever happens.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from vaultflow.audit import audited
from vaultflow.drill.report import CheckResult, DrillReport
from vaultflow.engines.postgres.basebackup import parse_lsn
from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.pitr import CLUSTER_DATABASE, plan_recovery, resolve_cluster, restore_to_point
from vaultflow.engines.postgres.pitr_mark import MarkedTable, PitrMark, load_mark, newest_mark
from vaultflow.engines.postgres.recovery import RecoveryTarget, restore_command
from vaultflow.engines.postgres.segments import ORDER_BY_PK_MAX_BYTES, TableInfo, user_tables
from vaultflow.engines.postgres.started_cluster import StartedCluster, free_port, owner_of, server_binaries
from vaultflow.engines.postgres.stats import SnapshotReaders
from vaultflow.errors import InputError
from vaultflow.repository.manifest import TableStats
from vaultflow.repository.repository import Repository

_log = logging.getLogger("vaultflow.drill")
SCRATCH_PREFIX = "vaultflow-pitr-drill-"


def pick_mark(repo: Repository, cluster: str, mark: str | None) -> PitrMark:
    """The named mark of the cluster (system identifier, server or base backup id), else its newest."""
    sysid = resolve_cluster(repo, list(repo.manifests()), cluster)
    return load_mark(repo, sysid, mark) if mark else newest_mark(repo, sysid)


def run_pitr_drill(repo: Repository, mark: PitrMark, *, wal_command: Path, repository_location: str,
                   passphrase: str | None = None, passphrase_file: Path | None = None,
                   scratch_parent: Path | None = None, bin_dir: Path | None = None,
                   login: PostgresConnection | None = None, jobs: int = 2, timeout: float = 3600.0) -> DrillReport:
    """Drill `mark`, recorded in the audit trail (failed unless the report passed). The restore_command
    reads the passphrase from `passphrase_file`, or from a 0600 file written into the scratch directory
    when `passphrase` is given. Raises before anything is laid out on bad input (no base backup before
    the mark, server binaries of another major version); a recovery that cannot reach the mark (a WAL
    gap), a failed check or a scratch directory that cannot be removed is a failed report."""
    if (passphrase is None) == (passphrase_file is None):
        raise InputError("a PITR drill needs the repository passphrase for the scratch server's restore_command",
                         "give exactly one of a passphrase file and the passphrase")
    with audited(repo, "drill", object=f"mark {mark.name}", database=CLUSTER_DATABASE) as note:
        report = _drill(repo, mark, wal_command, repository_location, passphrase, passphrase_file, scratch_parent,
                        bin_dir, login, jobs, timeout)
        note.detail, note.failed = report.summary(), not report.passed
    return report


def _drill(repo: Repository, mark: PitrMark, wal_command: Path, location: str, passphrase: str | None,
           passphrase_file: Path | None, scratch_parent: Path | None, bin_dir: Path | None,
           login: PostgresConnection | None, jobs: int, timeout: float) -> DrillReport:
    began = time.monotonic()
    started = datetime.now(UTC)
    report = DrillReport(snapshot_id="-", snapshot_taken=mark.created_at, engine="postgresql", server=mark.server,
                         database=CLUSTER_DATABASE, scratch_server="-", scratch_database="-", started_at=started,
                         mark=mark.name, scratch_dropped=True)
    try:
        plan = plan_recovery(repo, str(mark.system_identifier), RecoveryTarget(lsn=parse_lsn(mark.lsn)))
    except InputError as exc:  # the WAL does not reach the mark: a drill that failed, not bad input
        report.error = f"restore point {mark.name!r} at {mark.lsn} cannot be reached: {exc.what}"
        report.finished_at = datetime.now(UTC)
        return report
    info = plan.manifest.base_backup
    assert info is not None
    binaries = server_binaries(info.server_version, bin_dir)
    report.snapshot_id, report.snapshot_taken = plan.manifest.id, info.stop_time
    root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_parent))
    pgdata = root / "data"
    port = free_port()
    report.scratch_server, report.scratch_database = f"127.0.0.1:{port}", str(pgdata)
    report.scratch_dropped = False
    cluster = StartedCluster(pgdata, port, binaries, login=login)
    _log.info("PITR drill of mark %r: recovering base backup %s in %s on port %d", mark.name, plan.manifest.short_id,
              pgdata, port)
    try:
        try:
            if passphrase is not None:
                passphrase_file = root / "passphrase"
                fd = os.open(passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(passphrase + "\n")
            assert passphrase_file is not None
            command = restore_command(wal_command, location, passphrase_file)
            server = {"port": str(port), "listen_addresses": "127.0.0.1", "unix_socket_directories": str(root)}
            restore_to_point(repo, plan, pgdata, RecoveryTarget(name=mark.name), command=command, archive=False,
                             action="pause", timeline=mark.timeline, settings=server)
            _give_to_server(root, pgdata, passphrase_file if passphrase is not None else None)
            cluster.start(min(timeout, 300.0))
            outcome = cluster.wait_for_target("paused", timeout)
            report.restore_seconds = round(time.monotonic() - began, 3)
            _log.info("scratch cluster %s", outcome.describe())
            checked = time.monotonic()
            report.checks = compare_with_mark(mark, cluster.engine, jobs)
            report.checks_seconds = round(time.monotonic() - checked, 3)
            report.rto_seconds = round(time.monotonic() - began, 3)
        except Exception as exc:  # noqa: BLE001 - a driver error still ends as a failed drill
            report.record_error(exc, f"in {pgdata}")
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
            report.scratch_dropped = not root.exists()
            report.finished_at = datetime.now(UTC)
    return report


def _give_to_server(root: Path, pgdata: Path, written: Path | None) -> None:
    """As root: the scratch directory (socket) and a passphrase file written here belong to the server's user."""
    if os.geteuid() != 0:
        return
    st = (pgdata / "PG_VERSION").stat()
    if owner_of(pgdata) == "root":
        return  # StartedCluster refuses to start it, in one line
    for path in (root, *([written] if written else [])):
        os.chown(path, st.st_uid, st.st_gid)


def compare_with_mark(mark: PitrMark, engine: PostgresEngine, jobs: int) -> list[CheckResult]:
    """Rows and checksum of every table of every database of the mark, read on the paused scratch server
    in the mark's order, and a failed check for each database or table it has that the mark does not."""
    results: list[CheckResult] = []
    restored = set(engine.list_databases())
    for db in sorted(mark.databases):
        want = mark.databases[db]
        if db not in restored:
            results.append(CheckResult(check="rows", object=db, name="database", status="failed",
                                       expected=f"{len(want)} tables", observed="database missing"))
            continue
        target = engine.with_database(db)
        with target._connect() as c:
            found = user_tables(c, db, None, None, ORDER_BY_PK_MAX_BYTES)
        orders = {t.qualified: t.order for t in want}
        tables = [_in_order(t, orders.get(t.qualified)) for t in found]
        with SnapshotReaders(target, None, min(jobs, len(tables)) or 1) as readers:
            got = {s.qualified: s for s in readers.read(tables)}
        for table in want:
            results += _table_checks(db, table, got.pop(table.qualified, None))
        for extra in sorted(got):
            results.append(CheckResult(check="rows", object=f"{db}.{extra}", name="table", status="failed",
                                       expected="no such table at the mark", observed=f"{got[extra].rows} rows"))
    for db in sorted(restored - set(mark.databases)):
        results.append(CheckResult(check="rows", object=db, name="database", status="failed",
                                   expected="no such database at the mark", observed="database present"))
    return results


def _in_order(t: TableInfo, order: str | None) -> TableInfo:
    if order is None or order == t.order:
        return t
    return TableInfo(schema=t.schema, name=t.name, columns=t.columns, pk=t.pk, order=order, size=t.size,
                     heap_bytes=t.heap_bytes, key_type=t.key_type, signature=t.signature)


def _table_checks(db: str, want: MarkedTable, got: TableStats | None) -> list[CheckResult]:
    name = f"{db}.{want.qualified}"
    if got is None:
        return [CheckResult(check="rows", object=name, name="row count", status="failed", expected=str(want.rows),
                            observed="table missing")]
    return [CheckResult(check="rows", object=name, name="row count",
                        status="passed" if got.rows == want.rows else "failed",
                        expected=str(want.rows), observed=str(got.rows)),
            CheckResult(check="checksum", object=name, name="content checksum",
                        status="passed" if got.checksum == want.checksum else "failed",
                        expected=want.checksum, observed=got.checksum)]
