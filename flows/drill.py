"""Restore drills: `validate-restore` proves one snapshot restores; `drill-latest` drills the
newest snapshot of every database, a limited number at a time."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import Field

from blocks.parameters import EngineChoice, RepositoryChoice
from tasks.drill import (
    DrillTarget,
    check_suites,
    drill_error_report,
    drill_snapshot,
    plan_drill_targets,
    plan_drills,
    record_drill,
)
from tasks.reporting import drill_row, publish_drill_report
from vaultflow.drill import DrillFailed, DrillReport
from vaultflow.errors import InputError, VaultflowError
from vaultflow.requests import DrillRequest

ScratchParam = Annotated[EngineChoice | None, Field(
    description="Scratch server: engine block (or its name) or server URL (postgresql://user@host:port, "
                "sqlite:///directory/); SQLite drills default to $VAULTFLOW_HOME/drills")]
ScratchPerEngineParam = Annotated[dict[str, str], Field(
    description="Scratch per engine name (postgresql, mysql, sqlite): block name or server URL; "
                "an engine listed here does not use `scratch`")]
SuitesParam = Annotated[str | None, Field(
    description="Directory of expectation suites (JSON/YAML); default: the scratch block's drill_suites")]
OptionsParam = Annotated[DrillRequest, Field(description="How to drill each snapshot")]
RepositoryParam = Annotated[RepositoryChoice | None, Field(
    description="BackupRepository block (or its name) or a local path; VAULTFLOW_REPO if empty")]


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    what = params.get("snapshot") or params.get("database") or "snapshot"
    return f"drill-{str(what)[:32]}"


def _error_line(exc: BaseException) -> str:
    return exc.line() if isinstance(exc, VaultflowError) else f"{type(exc).__name__}: {exc}"


def drill_and_report(repository: RepositoryChoice | None, snapshot_id: str, scratch: EngineChoice | None,
                     suites: str | None, options: DrillRequest) -> DrillReport:
    """Run one drill and record and publish it, also when it could not run at all."""
    try:
        report = drill_snapshot(repository, snapshot_id, scratch, suites, options)
    except VaultflowError as exc:
        report = drill_error_report(repository, snapshot_id, scratch, exc.line())
        record_drill(repository, report)
        publish_drill_report(report)
        raise
    record_drill(repository, report)
    publish_drill_report(report)
    return report


@flow(name="validate-restore", flow_run_name=_run_name, validate_parameters=True)
def validate_restore(
    snapshot: Annotated[str | None, Field(description="Snapshot id or unique prefix")] = None,
    database: Annotated[str | None, Field(description="Or: drill the newest snapshot of this database")] = None,
    repository: RepositoryParam = None,
    scratch: ScratchParam = None,
    scratch_per_engine: ScratchPerEngineParam = {},  # noqa: B006
    suites: SuitesParam = None,
    options: OptionsParam = DrillRequest(),  # noqa: B008
) -> dict[str, object]:
    """Restore a snapshot into a scratch database, check rows, checksums, schema objects and
    expectation suites, drop the scratch database; the run fails naming the failed checks."""
    if bool(snapshot) == bool(database):
        raise InputError("give either a snapshot or a database to drill",
                         "set snapshot (an id) or database (its newest snapshot); drill-latest drills all")
    (target,) = plan_drill_targets(repository, plan_drills(repository, snapshot, [database] if database else []),
                                   scratch, scratch_per_engine)
    if target.skipped:
        raise InputError(f"snapshot {target.snapshot_id[:8]} cannot be drilled: {target.skipped}",
                         "verify it instead (vaultflow verify --read-data)")
    report = drill_and_report(repository, target.snapshot_id, target.scratch, suites, options)
    if not report.passed:
        raise DrillFailed.from_report(report)
    return drill_row(report) | {"snapshot_id": report.snapshot_id}


@flow(name="drill-latest", validate_parameters=True)
def drill_latest(
    repository: RepositoryParam = None,
    scratch: ScratchParam = None,
    scratch_per_engine: ScratchPerEngineParam = {},  # noqa: B006
    suites: SuitesParam = None,
    databases: Annotated[list[str], Field(description="Only these databases; all if empty")] = [],  # noqa: B006
    max_concurrent: Annotated[int, Field(ge=1, le=16, description="Drills running at once")] = 2,
    options: OptionsParam = DrillRequest(),  # noqa: B008
) -> list[dict[str, object]]:
    """Drill the newest snapshot of every database, `max_concurrent` at a time (each one a
    `validate-restore` subflow run on the scratch of its engine); snapshots of engines that
    cannot host drills are skipped with a note; fails if any drill failed, naming them."""
    targets = plan_drill_targets(repository, plan_drills(repository, None, databases), scratch, scratch_per_engine)
    check_suites(repository, targets, suites)

    def one(target: DrillTarget) -> dict[str, object]:
        if target.skipped:
            return target.skip_row()
        try:
            return validate_restore(snapshot=target.snapshot_id, repository=repository, scratch=target.scratch,
                                    suites=suites, options=options)
        except Exception as exc:  # noqa: BLE001 - one failed drill must not stop the others
            return {"database": target.database, "snapshot": target.snapshot_id[:8], "passed": False,
                    "summary": _error_line(exc)}

    # Each thread gets a copy of this run's context, so every drill is a subflow of this run.
    with ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="vf-drill") as pool:
        futures = [pool.submit(contextvars.copy_context().run, one, target) for target in targets]
        rows = [f.result() for f in futures]
    create_table_artifact(key="vaultflow-drills", table=[
        {k: ("skipped" if k == "passed" and r.get("skipped") else r.get(k))
         for k in ("database", "snapshot", "passed", "restore_s", "checks_s", "checks_failed", "summary")}
        for r in rows] or [{"database": "-"}], description="Restore drills of the newest snapshot of each database")
    failed = [r for r in rows if r.get("passed") is False]
    if failed:
        raise DrillFailed(f"{len(failed)} of {len(rows)} drill(s) failed: " + "; ".join(
            str(r["summary"]) for r in failed[:3]), "open each validate-restore run for its checks")
    skipped = sum(1 for r in rows if r.get("skipped"))
    get_run_logger().info("%d drill(s) passed, %d skipped", len(rows) - skipped, skipped)
    return rows
