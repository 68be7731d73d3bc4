"""State hooks of the backup flows: a run cancelled or crashed (on this or another machine)
leaves no catalog row Pending or Running.

Prefect runs these hooks in the run's process when the engine handles the cancellation or
crash, or in the runner's process when a runner cancelled the run; both know only the flow
run, so rows are found by its id in the catalog its `repository` parameter names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect.events import emit_event
from prefect.logging import get_logger

from blocks.resolve import resolve_repository
from tasks.reporting import database_resource, related_resources
from vaultflow.catalog import Catalog, SnapshotStatus
from vaultflow.errors import VaultflowError

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.objects import FlowRun, State

_OUTCOMES = {SnapshotStatus.CANCELLED: "cancelled", SnapshotStatus.FAILED: "failed"}


def end_backup_rows(flow_run_id: str, repository: object, status: SnapshotStatus, error: str) -> int:
    """Give the unfinished catalog rows of a flow run (in the catalog of its `repository`
    parameter) `status` and emit vaultflow.backup.<outcome> for each; returns how many ended."""
    ref = resolve_repository(str(repository) if repository else None)
    ended = Catalog(ref.catalog_url).end_flow_run(flow_run_id, status, error)
    for rec in ended:
        emit_event(event=f"vaultflow.backup.{_OUTCOMES[status]}",
                   resource=database_resource(rec.engine, rec.server, rec.database),
                   related=related_resources([(rec.engine, rec.server, rec.database)]),
                   payload={"snapshot": rec.id, "error": error, "flow_run": flow_run_id})
    if ended:  # a crashing or cancelled process ends right after its hooks: send the events now
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=30)
    return len(ended)


def _end(flow_run: FlowRun, state: State, status: SnapshotStatus, what: str) -> None:
    error = f"{what}: {state.message}" if state.message else what
    try:
        n = end_backup_rows(str(flow_run.id), flow_run.parameters.get("repository"), status, error)
    except VaultflowError as exc:  # a bad repository parameter: the run failed before any row
        get_logger("vaultflow").warning("backup run %s %s; catalog not updated: %s", flow_run.id, what, exc.line())
        return
    get_logger("vaultflow").info("backup run %s %s: %d catalog row(s) now %s", flow_run.id, what, n, status.value)


def backup_cancelled(flow: Flow[..., object], flow_run: FlowRun, state: State) -> None:
    """on_cancellation: the run's rows become Cancelled."""
    _end(flow_run, state, SnapshotStatus.CANCELLED, "cancelled")


def backup_crashed(flow: Flow[..., object], flow_run: FlowRun, state: State) -> None:
    """on_crashed: the run's rows become Failed (the process died or was killed)."""
    _end(flow_run, state, SnapshotStatus.FAILED, "crashed")
