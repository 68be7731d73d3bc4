"""Restore drill tasks: choose snapshots, run one drill, record it in the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.resolve import block_label, resolve_repository, resolve_scratch, scratch_for_engine
from tasks.backup import current_flow_run_id
from tasks.retry_policy import RETRIED
from vaultflow.catalog import Catalog
from vaultflow.drill import (
    DrillReport,
    latest_snapshots,
    load_suites,
    plan_expectations,
    run_drill,
    scratch_name,
)
from vaultflow.engines.registry import spec
from vaultflow.errors import InputError
from vaultflow.progress import ProgressMeter
from vaultflow.requests import DrillRequest

if TYPE_CHECKING:
    from blocks.parameters import EngineChoice, RepositoryChoice


@task(name="plan-drills", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def plan_drills(repository: RepositoryChoice | None, snapshot: str | None, databases: list[str]) -> list[str]:
    """The snapshot named, else the newest snapshot of each database (of the named ones)."""
    repo = resolve_repository(repository).open()
    if snapshot:
        return [repo.resolve_snapshot(snapshot)]
    manifests = latest_snapshots(repo, databases or None)
    missing = sorted(set(databases) - {m.database for m in manifests})
    if missing:
        raise InputError(f"the repository has no snapshot of database(s) {', '.join(missing)}",
                         "check the name (vaultflow snapshots lists them)")
    return [m.id for m in manifests]


@dataclass(frozen=True)
class DrillTarget:
    """One planned drill: the snapshot, the scratch it drills on (None: the engine's
    default), or why it is skipped."""

    snapshot_id: str
    database: str
    engine: str
    scratch: EngineChoice | None
    skipped: str | None = None

    def skip_row(self) -> dict[str, object]:
        """The drill report's row of a skipped snapshot (not a failure)."""
        return {"database": self.database, "snapshot": self.snapshot_id[:8], "passed": None, "skipped": True,
                "summary": f"drill of snapshot {self.snapshot_id[:8]} ({self.engine} database {self.database!r}) "
                           f"skipped: {self.skipped}"}


@task(name="plan-drill-targets", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def plan_drill_targets(repository: RepositoryChoice | None, snapshot_ids: list[str], scratch: EngineChoice | None,
                       scratch_per_engine: dict[str, str]) -> list[DrillTarget]:
    """The scratch of each snapshot's engine (`scratch_for_engine`); snapshots of engines
    that cannot host drills are skipped."""
    repo = resolve_repository(repository).open()
    targets = []
    for snapshot_id in snapshot_ids:
        manifest = repo.load_manifest(snapshot_id)
        engine = spec(manifest.engine)
        if not engine.capabilities.drills:
            targets.append(DrillTarget(manifest.id, manifest.database, manifest.engine, None,
                                       f"{engine.title} cannot host restore drills"))
            continue
        targets.append(DrillTarget(manifest.id, manifest.database, manifest.engine,
                                   cast("EngineChoice | None", scratch_for_engine(manifest.engine, scratch,
                                                                          scratch_per_engine))))
    return targets


@task(name="check-drill-suites", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def check_suites(repository: RepositoryChoice | None, targets: list[DrillTarget], suites: str | None) -> None:
    """Bind every user suite to every planned snapshot, so a suite naming a missing table or
    column stops all drills before any restore."""
    repo = resolve_repository(repository).open()
    for target in targets:
        if target.skipped:
            continue
        manifest = repo.load_manifest(target.snapshot_id)
        suites_dir = suites or resolve_scratch(target.scratch, manifest.engine).suites_dir
        if suites_dir:
            plan_expectations(manifest, load_suites(suites_dir))


@task(name="restore-drill", task_run_name="drill-{snapshot_id}", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def drill_snapshot(repository: RepositoryChoice | None, snapshot_id: str, scratch: EngineChoice | None,
                   suites: str | None, options: DrillRequest) -> DrillReport:
    """Restore into a scratch database, check, drop, as `options` says (handed to the core
    as it is); user suites are checked first."""
    repo = resolve_repository(repository).open()
    manifest = repo.load_manifest(snapshot_id)
    server = resolve_scratch(scratch, manifest.engine)
    suites_dir = suites or server.suites_dir
    user_suites = load_suites(suites_dir) if suites_dir else []
    logger = get_run_logger()
    logger.info("drill of snapshot %s (%s) on %s with %d user suite(s)", manifest.short_id, manifest.database,
                server.engine.server_label(), len(user_suites))
    meter = ProgressMeter("drill", manifest.database)
    report = run_drill(repo, snapshot_id, server.engine, options, suites=user_suites, progress=meter)
    meter.finish()
    (logger.info if report.passed else logger.error)(report.summary())
    return report


@task(name="record-drill", persist_result=False, cache_policy=NO_CACHE)
def record_drill(repository: RepositoryChoice | None, report: DrillReport) -> None:
    ref = resolve_repository(repository)
    Catalog(ref.catalog_url).record_drill(report, repository_id=ref.open().id, flow_run_id=current_flow_run_id())


@task(name="record-drill-error", persist_result=False, cache_policy=NO_CACHE)
def drill_error_report(repository: RepositoryChoice | None, snapshot_id: str, scratch: EngineChoice | None,
                       error: str) -> DrillReport:
    """A failed drill that could not run (bad suite, scratch unreachable or taken)."""
    repo = resolve_repository(repository).open()
    manifest = repo.load_manifest(snapshot_id)
    now = datetime.now(UTC)
    return DrillReport(snapshot_id=manifest.id, snapshot_taken=manifest.started_at, engine=manifest.engine,
                       server=manifest.server, database=manifest.database, scratch_server=block_label(scratch) or "-",
                       scratch_database=scratch_name(manifest), started_at=now, finished_at=now, error=error,
                       scratch_dropped=True)
