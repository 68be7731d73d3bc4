"""Catalog statuses from the backup flow's state hooks: a cancelled run ends Cancelled, a
crashed one Failed, with an event each; a run's row is Pending until its dump starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from vaultflow.catalog import Catalog, SnapshotStatus
from vaultflow.sample_data import create

pytestmark = pytest.mark.usefixtures("prefect_api")

# The runner cancels a run by committing the "cancel" intent on its control channel and then
# sending SIGTERM, which Prefect raises in the run as TerminationSignal. Here the dump does
# both once it started; without the intent the same signal is a crash (the process killed).
_INTERRUPTED_BACKUP = """
import signal, sys
from prefect._internal import control_listener
from prefect.exceptions import TerminationSignal
import tasks.backup
from flows.backup import backup
from vaultflow.catalog import Catalog

def interrupted_dump(engine, repo, request, *, snapshot_id, **kwargs):
    (rec,) = [r for r in Catalog().snapshots() if r.id == snapshot_id]
    print("status at dump:", rec.status.value, flush=True)
    if sys.argv[3] == "cancel":
        control_listener._set_intent("cancel")
    raise TerminationSignal(signal.SIGTERM)

tasks.backup.backup_database = interrupted_dump
backup(source=sys.argv[1], repository=sys.argv[2])
"""


def _interrupted_backup(prefect_api: str, source: str, repo: Path, how: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _INTERRUPTED_BACKUP, source, str(repo), how],
                          env=dict(os.environ, PREFECT_API_URL=prefect_api), cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


def _backup_events(api: str, snapshot_id: str) -> list[dict[str, object]]:
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    body = {"filter": {"event": {"prefix": ["vaultflow.backup."]}}, "limit": 50}
    for _ in range(40):
        events = httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]
        mine = [e for e in events if e["payload"].get("snapshot") == snapshot_id]
        if mine:
            return mine
        time.sleep(0.5)
    return []


Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_a_cancelled_backup_run_ends_cancelled_with_an_event_and_is_listed(
        prefect_api: str, repo_path: Path, tmp_path: Path, cli: Cli) -> None:
    src = create(tmp_path / "cancelled.db", rows=200)
    proc = _interrupted_backup(prefect_api, f"sqlite:///{src}", repo_path, "cancel")
    assert proc.returncode != 0
    assert "status at dump: Running" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    (rec,) = Catalog().snapshots()
    assert rec.status == SnapshotStatus.CANCELLED and rec.error and rec.error.startswith("cancelled")
    assert rec.finished_at is not None and rec.flow_run_id
    run = httpx.get(f"{prefect_api}/flow_runs/{rec.flow_run_id}", timeout=10).json()
    assert run["state"]["type"] == "CANCELLED"
    (event,) = _backup_events(prefect_api, rec.id)
    assert event["event"] == "vaultflow.backup.cancelled"
    assert event["resource"]["prefect.resource.name"] == "cancelled.db"

    listed = cli("snapshots", "--status", "Cancelled", "--repo", str(repo_path), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["status"] for r in json.loads(listed.stdout)] == ["Cancelled"]


def test_a_crashed_backup_run_ends_failed_not_running(prefect_api: str, repo_path: Path, tmp_path: Path) -> None:
    src = create(tmp_path / "crashed.db", rows=200)
    proc = _interrupted_backup(prefect_api, f"sqlite:///{src}", repo_path, "crash")
    assert proc.returncode != 0
    (rec,) = Catalog().snapshots()
    assert rec.status == SnapshotStatus.FAILED and rec.error and rec.error.startswith("crashed"), rec
    run = httpx.get(f"{prefect_api}/flow_runs/{rec.flow_run_id}", timeout=10).json()
    assert run["state"]["type"] == "CRASHED"
    (event,) = _backup_events(prefect_api, rec.id)
    assert event["event"] == "vaultflow.backup.failed" and "crashed" in str(event["payload"]["error"])


# backup-fleet: the runner's SIGTERM reaches the flow's main thread while a database's dump
# runs in a task thread; the dump here commits the cancel intent and sends that signal itself.
_CANCELLED_FLEET = """
import os, signal, sys, time
from prefect._internal import control_listener
import tasks.backup
from flows.fleet import backup_fleet

def cancelled_dump(*args, progress, **kwargs):
    control_listener._set_intent("cancel")
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(600):  # a dump reports progress as it goes
        progress(1, 1)
        time.sleep(0.1)
    print("the dump was not stopped", flush=True)

tasks.backup.backup_database = cancelled_dump
backup_fleet(servers=[sys.argv[1]], repository=sys.argv[2], include=sys.argv[3:], max_per_server=1)
"""


def test_a_cancelled_fleet_run_leaves_no_row_pending_or_running(
        prefect_api: str, repo_path: Path, pg_database: Callable[..., str]) -> None:
    from tests.conftest import PG_HOST, PG_PORT

    names = [pg_database(), pg_database()]
    proc = subprocess.run([sys.executable, "-c", _CANCELLED_FLEET, f"postgresql://postgres@{PG_HOST}:{PG_PORT}",
                           str(repo_path), *names], env=dict(os.environ, PREFECT_API_URL=prefect_api), cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0 and "not stopped" not in proc.stdout, proc.stdout
    rows = Catalog().snapshots()
    assert len(rows) == 1 and rows[0].database in names, rows  # the second database never started
    assert {r.status for r in rows} == {SnapshotStatus.CANCELLED}, ([(r.database, r.status, r.error) for r in rows],
                                                                     proc.stderr[-3000:])
    run = httpx.get(f"{prefect_api}/flow_runs/{rows[0].flow_run_id}", timeout=10).json()
    assert run["state"]["type"] == "CANCELLED", run["state"]
    assert {e["event"] for r in rows for e in _backup_events(prefect_api, r.id)} == {"vaultflow.backup.cancelled"}
