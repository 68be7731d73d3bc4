"""`vaultflow deploy` (`prefect deploy --all`) of prefect.yaml against a real server, then runs through a
process worker."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx

from deployments.specs import load_project
from tests.conftest import PASSPHRASE
from tests.deployments.conftest import PREFECT, PrefectServer, flow_key, wait_for_flow_run
from vaultflow.repository import Repository
from vaultflow.sample_data import create
from vaultflow.storage import LocalStore


def _deployments(server: PrefectServer) -> dict[str, dict[str, Any]]:
    flows = {f["id"]: f["name"] for f in httpx.post(f"{server.url}/flows/filter", json={}).json()}
    return {f"{flows[d['flow_id']]}/{d['name']}": d
            for d in httpx.post(f"{server.url}/deployments/filter", json={}).json()}


def _run(server: PrefectServer, deployment_id: str, parameters: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/deployments/{deployment_id}/create_flow_run",
                      json={"parameters": parameters}, timeout=30)


def test_deploy_all_then_a_worker_runs_a_backup(prefect_server: PrefectServer, background: Any,
                                                tmp_path: Path, repo_path: Path) -> None:
    # `vaultflow deploy` = check prefect.yaml, create the process pool, `prefect --no-prompt deploy --all`.
    deployed = prefect_server.run(sys.executable, "-m", "vaultflow.cli.main", "deploy", timeout=240)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert "created process work pool vaultflow" in deployed.stdout
    assert "warning: deployment 'postgres-app' parameter source: no database URL and no saved engine block " \
        "named 'pg-prod'" in deployed.stderr
    pool = httpx.get(f"{prefect_server.url}/work_pools/vaultflow").json()
    assert pool["type"] == "process"

    # Read back: every deployment of prefect.yaml, with its schedules, parameters, tags and pool.
    project = load_project(check_parameters=False)
    found = _deployments(prefect_server)
    expected = {flow_key(s) for s in project.deployments}
    assert set(found) == expected
    for spec in project.deployments:
        d = found[flow_key(spec)]
        assert d["parameters"] == spec.parameters
        assert d["work_pool_name"] == "vaultflow" and set(d["tags"]) == set(spec.tags)
        assert d["enforce_parameter_schema"] is True
        got = sorted((s["slug"], s["schedule"]["cron"], s["schedule"]["timezone"], s["parameters"])
                     for s in d["schedules"])
        assert got == sorted((s.slug, s.cron, s.timezone, s.parameters) for s in spec.schedules)
    sqlite_app = found["backup/sqlite-app"]
    assert sqlite_app["parameter_openapi_schema"]["properties"]["kind"]["enum"] == \
        ["full", "incremental", "differential"]
    assert sqlite_app["global_concurrency_limit"]["limit"] == 1

    # A parameter the form would refuse is refused by the server when the run is created.
    bad = _run(prefect_server, sqlite_app["id"], {"kind": "weekly"})
    assert bad.status_code in (409, 422) and "kind" in bad.text and "weekly" in bad.text, bad.text
    bad_option = _run(prefect_server, sqlite_app["id"], {"options": {"jobs": 0}})
    assert bad_option.status_code in (409, 422) and "jobs" in bad_option.text, bad_option.text

    # One good run (an SQLite sample into a local repository) and one naming a missing block.
    db = create(tmp_path / "app.db", rows=500)
    good = _run(prefect_server, sqlite_app["id"],
                {"source": f"sqlite:///{db}", "repository": str(repo_path), "kind": "full",
                 "options": {"jobs": 2, "table_checksums": False}}).json()
    missing = _run(prefect_server, sqlite_app["id"], {"repository": str(repo_path)}).json()
    background(*PREFECT, "worker", "start", "--pool", "vaultflow", "--limit", "2", log=tmp_path / "worker.log",
               PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5")
    try:
        done = wait_for_flow_run(prefect_server, good["id"], timeout=120)
        assert done["state"]["type"] == "COMPLETED", done["state"]  # type: ignore[index]
        failed = wait_for_flow_run(prefect_server, missing["id"], timeout=60)
    except AssertionError:
        print((tmp_path / "worker.log").read_text()[-4000:], file=sys.stderr)
        raise
    assert len(Repository.open(LocalStore(repo_path), PASSPHRASE).snapshot_ids()) == 1
    message = str(failed["state"]["message"])  # type: ignore[index]
    assert failed["state"]["type"] == "FAILED", failed["state"]  # type: ignore[index]
    assert "app-sqlite" in message and "block" in message, message
    # Failed once, not retried: a missing block is not transient.
    tasks = httpx.post(f"{prefect_server.url}/task_runs/filter",
                       json={"flow_runs": {"id": {"any_": [missing["id"]]}}}).json()
    assert [t["run_count"] for t in tasks if t["name"].startswith("open-backup-run")] == [1], json.dumps(tasks)[:500]
