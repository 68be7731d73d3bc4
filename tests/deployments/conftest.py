"""A real `prefect server start` on loopback (own PREFECT_HOME, SQLite), one per test module.

The session's test harness (`prefect_api`) runs only the ephemeral services; deployments,
workers, serve and automations need the full server. Always stopped at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployments.specs import DeploymentSpec
from tests.conftest import PASSPHRASE, ROOT, refuse_without_services

PREFECT = [sys.executable, "-m", "prefect"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrefectServer:
    url: str
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a client, worker or `vaultflow` process talking to this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_API_URL=self.url, PREFECT_HOME=str(self.home / "client"),
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", VAULTFLOW_PASSPHRASE=PASSPHRASE,
                   PYTHONPATH=str(ROOT))
        env.update(extra)
        return env

    def run(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, env=self.env(**extra), cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process group we started: SIGTERM, then SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture(scope="module")
def prefect_server(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A module that sets `PREFECT_SCHEDULER = True` gets the scheduler on (a 5 s loop); it
    must pause the deployments whose schedules it does not want run."""
    scheduler = bool(getattr(request.module, "PREFECT_SCHEDULER", False))
    refuse_without_services("a Prefect server")
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
        # No scheduled runs by default: a schedule coming due mid-test would start runs nobody asked for.
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED=str(scheduler).lower(),
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
        # Two runs ahead per deployment, not a hundred: fifteen deployments' worth of scheduled
        # runs written, then deleted by the pauses, starved the SQLite-backed API for minutes.
        PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS="2", PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS="1",
        PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED="false",
        PREFECT_UI_URL=f"http://127.0.0.1:{port}",
    )
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield PrefectServer(url=url, home=home)
    finally:
        stop(proc)
        log.close()


@pytest.fixture
def background(prefect_server: PrefectServer) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start long-running processes (worker, serve) against the server; all stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
        out = open(log, "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(args, env=prefect_server.env(**extra), cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop(proc)


def wait_for_flow_run(server: PrefectServer, flow_run_id: str, timeout: float = 90) -> dict[str, object]:
    """Poll the API until the run reaches a final state; returns the run as JSON."""
    import json

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/flow_runs/{flow_run_id}", timeout=30) as response:
                run: dict[str, object] = json.load(response)
        except (TimeoutError, urllib.error.URLError):
            # A busy server (SQLite, four runs on two cores) can miss one answer; the deadline decides.
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
            continue
        state = run.get("state") or {}
        if isinstance(state, dict) and state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"flow run {flow_run_id} still {state} after {timeout} s")
        time.sleep(1)


def flow_key(spec: DeploymentSpec) -> str:
    """`<flow name>/<deployment name>` of a prefect.yaml deployment, as the API names it
    (a flow's name may differ from its function's: drill_latest is `drill-latest`)."""
    import importlib

    path, function = spec.entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return f"{getattr(module, function).name}/{spec.name}"
