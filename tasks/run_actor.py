"""Who acts inside a Prefect run, for the audit trail: the OS user and host, the flow run, and
the deployment (as flow/deployment) when the run came from one.

Registered once, when the tasks package is imported (tasks/__init__.py), with
`vaultflow.audit.attribute_runs_with`: every core action a task runs, in whatever thread the
task runner gives it, records the run it belongs to, without a line in any task.
"""

from __future__ import annotations

from prefect import runtime

from vaultflow.audit import Actor


def prefect_run_actor() -> Actor | None:
    """The actor of the flow run in progress; None outside a flow run."""
    run_id = runtime.flow_run.id
    if not run_id:
        return None
    try:
        name = runtime.deployment.name
    except Exception:  # noqa: BLE001 - the API is unreachable: the flow run id still says which run
        name = None
    deployment = f"{runtime.flow_run.flow_name}/{name}" if name else None
    return Actor.here(deployment=deployment, flow_run=str(run_id))
