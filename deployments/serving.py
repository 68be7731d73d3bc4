"""`vaultflow serve`: every deployment of prefect.yaml, served by one process (no work pool)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from prefect.schedules import Cron

from deployments.specs import Project, import_flow

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


def runner_deployments(project: Project) -> list[RunnerDeployment]:
    """The deployments of prefect.yaml as `flow.to_deployment(...)`: same names, schedules,
    parameters, tags and concurrency; the work pool settings do not apply to serve."""
    built: list[RunnerDeployment] = []
    for spec in project.deployments:
        flow = import_flow(spec, project.root)
        built.append(cast("RunnerDeployment", flow.to_deployment(
            name=spec.name,
            description=spec.description,
            version=spec.version,
            tags=spec.tags,
            parameters=spec.parameters,
            schedules=[Cron(s.cron, timezone=s.timezone, slug=s.slug, active=s.active, day_or=s.day_or,
                            parameters=s.parameters) for s in spec.schedules],
            concurrency_limit=spec.concurrency_limit,
            enforce_parameter_schema=spec.enforce_parameter_schema,
        )))
    return built


def serve_project(project: Project, limit: int | None = None) -> None:
    """Register the deployments and run their flow runs in subprocesses until interrupted.

    On shutdown Prefect pauses the served deployments' schedules; the next serve resumes them.
    """
    from prefect import serve

    serve(*runner_deployments(project), limit=limit, print_starting_message=True)
