"""A restore drill: restore a snapshot into a scratch database, check it, drop it.

The scratch database is `vaultflow_drill_<db>_<short id>` on the scratch server. It must
not exist beforehand (a drill never touches a database it did not create) and it is
dropped afterwards whatever happens: success, failed checks, a failed restore, an
interrupt. User suites are checked against the snapshot before anything is restored.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from vaultflow.audit import audited
from vaultflow.drill.report import CheckResult, DrillReport
from vaultflow.drill.suites import (
    DEFAULT_SUITE,
    ExpectationSpec,
    UserSuite,
    default_expectations,
    user_expectations,
)
from vaultflow.engines.base import DatabaseEngine, RestoreObserver, droppable
from vaultflow.engines.registry import spec
from vaultflow.errors import InputError, VaultflowError
from vaultflow.operations.restore import check_target_engine
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.manifest import (
    SCHEMA_OBJECT_KINDS,
    SchemaInventory,
    SnapshotManifest,
    StreamManifest,
    TableStats,
)
from vaultflow.repository.repository import ByteSink, ProgressCallback, Repository
from vaultflow.requests import DrillRequest

_log = logging.getLogger("vaultflow.drill")
SCRATCH_PREFIX = "vaultflow_drill_"
_MAX_NAME = 63  # PostgreSQL's identifier limit, the tightest of the engines

AfterRestore = Callable[[DatabaseEngine], None]


def scratch_name(manifest: SnapshotManifest) -> str:
    """`vaultflow_drill_<db>_<short id>`: lower-case letters, digits and underscores, <= 63."""
    db = re.sub(r"[^a-z0-9_]+", "_", manifest.database.lower()).strip("_") or "db"
    room = _MAX_NAME - len(SCRATCH_PREFIX) - len(manifest.short_id) - 1
    return f"{SCRATCH_PREFIX}{db[:room]}_{manifest.short_id}"


def latest_snapshots(repo: Repository, databases: list[str] | None = None) -> list[SnapshotManifest]:
    """The newest logical snapshot of every database (engine, server, name), optionally only of
    the named databases, in database name order."""
    newest: dict[tuple[str, str, str], SnapshotManifest] = {}
    for m in repo.manifests():
        if m.base_backup is not None:  # a physical base backup is drilled by PITR drills (planned)
            continue
        if databases and m.database not in databases:
            continue
        key = (m.engine, m.server, m.database)
        if key not in newest or (m.started_at, m.id) > (newest[key].started_at, newest[key].id):
            newest[key] = m
    return sorted(newest.values(), key=lambda m: (m.database, m.server, m.engine))


def plan_expectations(manifest: SnapshotManifest, suites: list[UserSuite]) -> list[ExpectationSpec]:
    """The default suite plus the user suites for this snapshot; InputError on a bad one."""
    return default_expectations(manifest) + user_expectations(manifest, suites)


def run_drill(
    repo: Repository,
    snapshot_id: str,
    scratch_server: DatabaseEngine,
    request: DrillRequest = DrillRequest(),  # noqa: B008 - frozen, never changed
    *,
    suites: list[UserSuite] | None = None,
    progress: ProgressCallback | None = None,
    after_restore: AfterRestore | None = None,
) -> DrillReport:
    """`_drill`, recorded in the audit trail: failed unless the report passed."""
    repo.require("restore", "a restore drill")
    with audited(repo, "drill", object=snapshot_id) as note:
        report = _drill(repo, snapshot_id, scratch_server, request, suites=suites, progress=progress,
                        after_restore=after_restore)
        note.database, note.detail, note.failed = report.database, report.summary(), not report.passed
    return report


def _drill(
    repo: Repository,
    snapshot_id: str,
    scratch_server: DatabaseEngine,
    request: DrillRequest,
    *,
    suites: list[UserSuite] | None,
    progress: ProgressCallback | None,
    after_restore: AfterRestore | None,
) -> DrillReport:
    """Restore `snapshot_id` into a new scratch database on `scratch_server`'s server, run
    every check, drop the scratch database, and return the report.

    Raises before restoring (nothing created) on a bad suite, an unreachable scratch
    server, an engine mismatch or an existing scratch name. A failed restore, failed checks
    or a failed drop are in the report (`passed` is false), except transient errors, which
    are raised after the drop so that the caller may retry. `after_restore` runs on the
    restored copy before the checks (a test hook; with it, every table is read after it).
    Tables are read back for their checksums as soon as the restore has loaded them, while
    it goes on (engines that can; the others after it), `request.jobs` (at least two) at
    a time. The report's restore time leaves out the time the restore waited for those
    reads before renaming the scratch database; the checks' time counts it.

    `request` holds the user's options, each declared once (vaultflow/requests.py): the
    timeout and `jobs` of the restore; default-suite expectations that the restored schema
    enforces (NOT NULL columns, keys with a unique index) are settled from the schema
    unless `scan_constraints`, which has Great Expectations scan for them too;
    `server_locale` creates the scratch database with the server's default encoding and
    locale instead of the snapshot's (a scratch server that lacks the source's locale).
    """
    scratch_engine = spec(scratch_server.engine)
    scratch_engine.require("drills", "drill on a scratch server of an engine that hosts drills, or restore the "
                                     "snapshot by hand")
    if request.server_locale:
        scratch_engine.require("server_locale", "drop --server-locale")
    manifest = repo.load_manifest(snapshot_id)
    scratch = scratch_server.with_database(scratch_name(manifest))
    check_target_engine(manifest, scratch)
    specs = plan_expectations(manifest, suites or [])
    if scratch.server_label() == manifest.server and scratch.database == manifest.database:
        raise InputError(f"the scratch database would be the source database {manifest.database!r}",
                         "choose another scratch server")
    if scratch.database_exists():
        raise InputError(f"scratch database {scratch.database!r} already exists on {scratch.server_label()}",
                         "a drill never reuses a database it did not create: drop it if it is a leftover "
                         "of a killed drill, or drill on another scratch server")
    report = DrillReport(
        snapshot_id=manifest.id, snapshot_taken=manifest.started_at, engine=manifest.engine,
        server=manifest.server, database=manifest.database, scratch_server=scratch.server_label(),
        scratch_database=scratch.database, started_at=datetime.now(UTC))
    _log.info("drill of snapshot %s: restoring into %s", manifest.short_id, scratch.describe())
    read_back = TableReadBack(max(request.jobs, 2))
    try:
        try:
            began = time.monotonic()
            with RepositoryLock(repo, "shared", f"restore drill into {scratch.describe()}", wait=60):
                scratch.restore(manifest.streams, _naming_reader(repo, manifest, progress),
                                timeout=request.timeout_seconds, jobs=request.jobs, observer=read_back,
                                server_locale=request.server_locale)
            report.restore_seconds = round(time.monotonic() - began - read_back.waited, 3)
            if after_restore is not None:
                after_restore(scratch)
            began = time.monotonic()
            report.checks = check_restored(manifest, scratch, specs, report.check_seconds, jobs=request.jobs,
                                           scan_constraints=request.scan_constraints,
                                           read_back=None if after_restore is not None else read_back.results())
            report.checks_seconds = round(time.monotonic() - began + read_back.waited, 3)
        except VaultflowError as exc:
            if exc.transient:
                raise
            report.record_error(exc, f"into {scratch.describe()}")
        except Exception as exc:  # noqa: BLE001 - a driver or GX error still ends as a failed drill
            report.record_error(exc, f"into {scratch.describe()}")
    finally:
        report.scratch_dropped = _drop(scratch, report)
        report.finished_at = datetime.now(UTC)
    return report


class TableReadBack(RestoreObserver):
    """Reads each table's statistics back as soon as the restore has loaded it, up to
    `readers` tables at once, while the restore goes on with the other tables and the
    indexes. A read that fails only means the table is read again after the restore."""

    def __init__(self, readers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="vf-readback")
        self._reads: dict[str, Future[TableStats | None]] = {}
        self.waited = 0.0  # seconds the restore waited for reads before it could finish

    def table_loaded(self, loaded: DatabaseEngine, table: str, streams: list[StreamManifest]) -> None:
        self._reads[table] = self._pool.submit(loaded.loaded_table_stats, table, streams)

    def finishing(self, failed: bool) -> None:
        began = time.monotonic()
        self._pool.shutdown(wait=True, cancel_futures=failed)
        self.waited += time.monotonic() - began

    def results(self) -> dict[str, TableStats]:
        """schema.table (as the snapshot names it) -> statistics, for the reads that worked."""
        out: dict[str, TableStats] = {}
        for table, read in self._reads.items():
            if read.cancelled() or read.exception() is not None:
                _log.info("reading %s back during the restore failed; it is read again", table)
                continue
            if (stats := read.result()) is not None:
                out[table] = stats
        return out


def _drop(scratch: DatabaseEngine, report: DrillReport) -> bool:
    try:
        droppable(scratch).drop_database()
    except VaultflowError as exc:
        line = f"could not drop scratch database {scratch.database!r}: {exc.line()}"
        _log.error(line)
        report.error = report.error or line
        return False
    return True


def _naming_reader(repo: Repository, manifest: SnapshotManifest, progress: ProgressCallback | None
                   ) -> Callable[[StreamManifest, ByteSink], None]:
    """Read a stream; a failure names the table (or stream) whose bytes could not be read."""

    def read(stream: StreamManifest, sink: ByteSink) -> None:
        try:
            repo.read_stream(manifest.id, stream, sink, manifest.chain, progress=progress)
        except VaultflowError as exc:
            what = (f"table {stream.meta['schema']}.{stream.meta['table']}" if "table" in stream.meta
                    else f"stream {stream.name!r}")
            raise type(exc)(f"restoring {what}: {exc.what}", exc.fix) from None

    return read


def check_restored(manifest: SnapshotManifest, scratch: DatabaseEngine, specs: list[ExpectationSpec],
                   timings: dict[str, float] | None = None, *, jobs: int = 1,
                   scan_constraints: bool = False, read_back: dict[str, TableStats] | None = None) -> list[CheckResult]:
    """Row counts and checksums, schema objects, then the expectations; `timings` receives
    the seconds each phase took. `read_back`: statistics read while the restore ran
    (TableReadBack); a table they match is not read again."""
    timings = {} if timings is None else timings
    began = time.monotonic()
    # Reading back is read-only and mostly waits on the server: two readers even at jobs=1.
    results = _table_checks(manifest, scratch, max(jobs, 2), read_back or {})
    timings["tables"] = round(time.monotonic() - began, 3)
    began = time.monotonic()
    observed = scratch.schema_inventory()
    results += _schema_checks(manifest, scratch, observed)
    timings["schema"] = round(time.monotonic() - began, 3)
    began = time.monotonic()
    if not scan_constraints and observed is not None:
        settled = [(spec, _enforced_by_schema(spec, observed, manifest.database, scratch.database)) for spec in specs]
        results += [_settled(spec, why) for spec, why in settled if why]
        specs = [spec for spec, why in settled if not why]
    results += _expectation_checks(manifest, scratch, specs)
    timings["expectations"] = round(time.monotonic() - began, 3)
    return results


def _enforced_by_schema(spec: ExpectationSpec, observed: SchemaInventory, source_db: str,
                        scratch_db: str) -> str | None:
    """Why the restored schema itself guarantees a default-suite expectation, or None."""
    if spec.suite != DEFAULT_SUITE:
        return None
    profiles = {_local(p.qualified, scratch_db): p for p in observed.profiles}
    profile = profiles.get(_local(spec.table, source_db))
    if profile is None:
        return None
    if spec.type == "expect_column_values_to_not_be_null":
        column = next((c for c in profile.columns if c.name == spec.kwargs["column"]), None)
        return "enforced: the restored column is NOT NULL" if column and not column.nullable else None
    key = [spec.kwargs["column"]] if spec.type == "expect_column_values_to_be_unique" else (
        list(spec.kwargs["column_list"]) if spec.type == "expect_compound_columns_to_be_unique" else None)
    if key and key in profile.unique_keys:
        return f"enforced: the restored table has a unique index on ({', '.join(key)})"
    return None


def _settled(spec: ExpectationSpec, why: str) -> CheckResult:
    return CheckResult(check="expectation", object=spec.table, name=spec.label(), status="passed", expected="true",
                       observed=why, suite=spec.suite)


def _expectation_checks(manifest: SnapshotManifest, scratch: DatabaseEngine,
                        specs: list[ExpectationSpec]) -> list[CheckResult]:
    results: list[CheckResult] = []
    if specs:
        target = scratch.sqlalchemy_target()
        if target is None:
            results.append(CheckResult(check="expectation", object="*", name="expectation suites",
                                       status="skipped",
                                       observed=f"the {scratch.engine} engine offers no SQL access for them"))
        else:
            from vaultflow.drill.validation import run_expectations

            results += run_expectations(target, specs, (manifest.database, scratch.database))
    return results


def _scratch_name(name: str, source_db: str, scratch_db: str) -> str:
    """A table's schema.table in the scratch database (MySQL-like engines: the database)."""
    return scratch_db + name[len(source_db):] if name.startswith(source_db + ".") else name


def _local(name: str, *databases: str) -> str:
    """schema.table with a schema that is the database itself (MySQL-like engines) removed,
    so that the source and the scratch copy name their tables alike."""
    for db in databases:
        if name.startswith(db + "."):
            return name[len(db) + 1:]
    return name


def _table_checks(manifest: SnapshotManifest, scratch: DatabaseEngine, jobs: int,
                  read_back: dict[str, TableStats]) -> list[CheckResult]:
    observed = {_local(want.qualified, manifest.database): got for want in manifest.tables
                if (got := read_back.get(want.qualified)) is not None
                and (got.rows, got.checksum) == (want.rows, want.checksum)}
    again = [want for want in manifest.tables if _local(want.qualified, manifest.database) not in observed]
    for want in again:
        if want.qualified in read_back:
            _log.info("%s read back during the restore differs from the snapshot; reading it again in backup "
                      "order", want.qualified)
    if again:
        # Tables are named here as the scratch database names them.
        names = None if not observed else [_scratch_name(w.qualified, manifest.database, scratch.database)
                                           for w in again]
        observed |= {_local(t.qualified, scratch.database): t
                     for t in scratch.table_stats_parallel(jobs, like=manifest.tables, tables=names)}
    results: list[CheckResult] = []
    for want in manifest.tables:
        name = _local(want.qualified, manifest.database)
        got = observed.get(name)
        if got is None:
            results.append(CheckResult(check="rows", object=want.qualified, name="row count", status="failed",
                                       expected=str(want.rows), observed="table missing"))
            continue
        results.append(CheckResult(check="rows", object=want.qualified, name="row count",
                                   status="passed" if got.rows == want.rows else "failed",
                                   expected=str(want.rows), observed=str(got.rows)))
        if want.checksum is None:
            results.append(CheckResult(check="checksum", object=want.qualified, name="content checksum",
                                       status="skipped", observed="no checksum recorded at backup time"))
        else:
            results.append(CheckResult(check="checksum", object=want.qualified, name="content checksum",
                                       status="passed" if got.checksum == want.checksum else "failed",
                                       expected=want.checksum, observed=got.checksum))
    return results


def _schema_checks(manifest: SnapshotManifest, scratch: DatabaseEngine,
                   observed: SchemaInventory | None) -> list[CheckResult]:
    expected = manifest.schema_inventory
    if expected is None:
        return [CheckResult(check="schema", object="*", name="schema objects", status="skipped",
                            observed="the snapshot records no schema inventory (taken before drills existed)")]
    if observed is None:
        return [CheckResult(check="schema", object="*", name="schema objects", status="skipped",
                            observed=f"the {scratch.engine} engine cannot list schema objects")]
    return [_compare_kind(kind, expected, observed, manifest.database, scratch.database)
            for kind in SCHEMA_OBJECT_KINDS]


def _compare_kind(kind: str, expected: SchemaInventory, observed: SchemaInventory, source_db: str,
                  scratch_db: str) -> CheckResult:
    want = {_local(n, source_db) for n in expected.objects(kind)}
    got = {_local(n, scratch_db) for n in observed.objects(kind)}
    missing, extra = sorted(want - got), sorted(got - want)
    if not missing and not extra:
        return CheckResult(check="schema", object=kind, name=f"{kind} match", status="passed",
                           expected=str(len(want)), observed=str(len(got)))
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if extra:
        parts.append(f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    return CheckResult(check="schema", object=kind, name=f"{kind} match", status="failed",
                       expected=f"{len(want)} {kind}", observed="; ".join(parts))
