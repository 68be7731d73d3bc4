"""`vaultflow serve`: every deployment of prefect.yaml, served by one process (no work pool)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

from prefect.schedules import Cron

from deployments.specs import Project, import_flow
from vaultflow.errors import InputError, TransientError

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


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _exit_on_sigterm() -> None:
    """Make SIGTERM unwind the stack (SystemExit) instead of killing the process outright.

    Prefect's runner installs such a handler only once `Runner.start()` runs, after the
    deployments are registered; a SIGTERM before that would skip our `finally` and leave the
    server child (in its own session) running."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@contextmanager
def embedded_server(host: str = "127.0.0.1", port: int = 4200, startup_timeout: float = 120) -> Iterator[str]:
    """A `prefect server start` child with every service (scheduler, triggers, UI); yields its
    API URL and stops it on exit. A server already answering there is reused, not stopped.

    Its database is $PREFECT_HOME/prefect.db (SQLite); see docs/deploying.md, "Scaling", for PostgreSQL.
    """
    api_url = f"http://{host}:{port}/api"
    if _healthy(api_url):
        yield api_url
        return
    _exit_on_sigterm()
    env = dict(os.environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_UI_URL", f"http://{host}:{port}")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                            env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(api_url):
            if proc.poll() is not None:
                raise InputError(f"the Prefect server on {host}:{port} exited at start (code {proc.returncode})",
                                 "is the port taken? pass --port, or set PREFECT_API_URL to a running server")
            if time.monotonic() > deadline:
                raise TransientError(f"the Prefect server on {host}:{port} did not answer within "
                                     f"{startup_timeout:.0f} s", "try again; the first start migrates its database")
            time.sleep(0.5)
        yield api_url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
