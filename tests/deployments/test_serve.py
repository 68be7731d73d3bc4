"""`vaultflow serve`: the deployments of prefect.yaml served by one process; a run triggered
through the API completes."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.specs import load_project
from tests.conftest import PASSPHRASE
from tests.deployments.conftest import PrefectServer, flow_key, wait_for_flow_run
from vaultflow.repository import Repository
from vaultflow.sample_data import create
from vaultflow.storage import LocalStore


def _served(server: PrefectServer) -> dict[str, dict[str, Any]]:
    """`flow/deployment` -> deployment, of the deployments registered so far."""
    deployments = httpx.post(f"{server.url}/deployments/filter", json={}).json()
    # Flows read after the deployments: serve registers each flow before its deployment, so every
    # flow id is known by now; an unknown one (should the API ever differ) waits for the next poll.
    flows = {f["id"]: f["name"] for f in httpx.post(f"{server.url}/flows/filter", json={}).json()}
    return {f"{flows[d['flow_id']]}/{d['name']}": d for d in deployments if d["flow_id"] in flows}


def test_serve_runs_a_deployment_triggered_through_the_api(prefect_server: PrefectServer, background: Any,
                                                           tmp_path: Path, repo_path: Path) -> None:
    log = tmp_path / "serve.log"
    proc = background(sys.executable, "-m", "vaultflow.cli.main", "serve", "--limit", "8", log=log,
                      PREFECT_RUNNER_POLL_FREQUENCY="2")
    project = load_project(check_parameters=False)
    expected = {flow_key(s) for s in project.deployments}
    deadline = time.monotonic() + 90
    while not expected <= set(served := _served(prefect_server)):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"served {sorted(served)}; log: {log.read_text()[-3000:]}"
        time.sleep(1)
    # Same schedules as the work-pool route: both come from prefect.yaml.
    slugs = sorted(s["slug"] for s in served["backup/postgres-app"]["schedules"])
    assert slugs == ["hourly-incremental", "monthly-full", "weekly-full"]
    assert served["backup/postgres-app"]["work_pool_name"] is None

    db = create(tmp_path / "served.db", rows=300)
    # `serve` may still be updating the deployments it registered: retry a refused request briefly.
    url = f"{prefect_server.url}/deployments/{served['backup/sqlite-app']['id']}/create_flow_run"
    parameters = {"source": f"sqlite:///{db}", "repository": str(repo_path), "kind": "full"}
    deadline = time.monotonic() + 30
    while (response := httpx.post(url, json={"parameters": parameters}, timeout=30)).status_code >= 400:
        assert time.monotonic() < deadline, f"create_flow_run: {response.status_code} {response.text[:500]}"
        time.sleep(1)
    run = response.json()
    try:
        done = wait_for_flow_run(prefect_server, run["id"], timeout=120)
    except AssertionError:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise
    assert done["state"]["type"] == "COMPLETED", (done["state"], log.read_text()[-3000:])  # type: ignore[index]
    assert len(Repository.open(LocalStore(repo_path), PASSPHRASE).snapshot_ids()) == 1


@pytest.mark.services  # starts a Prefect server of its own
def test_serve_without_an_api_url_starts_and_stops_its_own_server(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from tests.conftest import ROOT
    from tests.deployments.conftest import free_port, stop

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "home"), PREFECT_UI_ENABLED="false",
               PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vaultflow.cli.main", "serve", "--port", str(port)], env=env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                # The first registered deployment, not the last: SIGTERM must stop the server
                # while serve is still registering, before Prefect's runner takes the signal.
                if httpx.post(f"{api}/deployments/filter", json={}).json():
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)  # serve only: it must stop the server it started
        proc.wait(60)
        time.sleep(2)
        try:
            httpx.get(f"{api}/health", timeout=2)
            raise AssertionError("the embedded server still answers after serve stopped")
        except httpx.HTTPError:
            pass
    finally:
        stop(proc)
