"""Running the project's deployments: `deploy`, `serve`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from vaultflow.cli.app import (
    handles_errors,
    quiet_prefect,
)
from vaultflow.cli.output import stderr, stdout

ProjectFileOpt = Annotated[Path | None, typer.Option("--file", "-f", help="prefect.yaml (default: the project's).")]


@handles_errors
def deploy(
    file: ProjectFileOpt = None,
    check: Annotated[bool, typer.Option("--check", help="Only validate prefect.yaml.")] = False,
) -> None:
    """Validate prefect.yaml, create missing process work pools, then `prefect deploy --all`."""
    import subprocess

    from deployments.specs import load_project

    project = load_project(file)
    if check:
        stdout.print(f"{project.path}: {len(project.deployments)} deployment(s) valid", highlight=False)
        return
    quiet_prefect(False)
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    async def ensure_pools() -> None:
        async with get_client() as client:
            for name in sorted({d.work_pool.name for d in project.deployments if d.work_pool}):
                try:
                    await client.read_work_pool(name)
                except ObjectNotFound:
                    await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                    stdout.print(f"created process work pool {name}", highlight=False)

    asyncio.run(ensure_pools())
    from deployments.specs import missing_blocks

    for problem in missing_blocks(project):
        stderr.print(f"warning: {problem}; its runs fail until the block exists "
                     "(prefect block register -m blocks, then Prefect UI > Blocks > +)", highlight=False)
    done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
                           "--prefect-file", str(project.path)], cwd=project.root, check=False)
    if done.returncode:
        raise typer.Exit(1)


@handles_errors
def serve(
    file: ProjectFileOpt = None,
    limit: Annotated[int | None, typer.Option(help="Most flow runs at once.")] = None,
    port: Annotated[int, typer.Option(help="Port of the embedded Prefect server (UI and API).")] = 4200,
) -> None:
    """Serve every deployment of prefect.yaml from this process (no work pool or worker).

    With PREFECT_API_URL set, serves against that server; otherwise starts an embedded
    `prefect server start` on 127.0.0.1 (scheduler, automations, UI) and stops it on exit.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.serving import embedded_server, serve_project
    from deployments.specs import load_project

    project = load_project(file)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if PREFECT_API_URL.value():
        serve_project(project, limit=limit)
        return
    with embedded_server(port=port) as api_url:
        stderr.print(f"Prefect server and UI on {api_url.removesuffix('/api')}", highlight=False)
        os.environ["PREFECT_API_URL"] = api_url  # the flow-run subprocesses read it too
        with temporary_settings({PREFECT_API_URL: api_url}):
            serve_project(project, limit=limit)
