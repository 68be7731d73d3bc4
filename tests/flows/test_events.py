"""Flows emit vaultflow.<thing>.<outcome> events naming the database and server as related resources."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.backup import backup
from flows.maintenance import RetentionRules, retention, verify
from vaultflow.errors import InputError
from vaultflow.sample_data import create


def _events(api: str, id_prefix: str, expected: set[str], timeout: float = 30) -> list[dict[str, Any]]:
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.post(f"{api}/events/filter", json={"filter": {
            "event": {"prefix": ["vaultflow."]}, "resource": {"id_prefix": [id_prefix]}}, "limit": 50}).json()
        events: list[dict[str, Any]] = found.get("events", [])
        if expected <= {e["event"] for e in events} or time.monotonic() > deadline:
            return events
        time.sleep(1)


def test_backup_prune_and_verify_events(prefect_api: str, tmp_path: Path, repo_path: Path) -> None:
    db = create(tmp_path / f"ev_{uuid.uuid4().hex[:6]}.db", rows=200)
    backup(source=f"sqlite:///{db}", repository=str(repo_path))
    retention(repository=str(repo_path), rules=RetentionRules(keep_last=1), dry_run=True)
    verify(repository=str(repo_path))

    (succeeded,) = _events(prefect_api, f"vaultflow.database.sqlite.{db.parent}.{db.name}",
                           {"vaultflow.backup.succeeded"})
    assert succeeded["event"] == "vaultflow.backup.succeeded"
    roles = {r["prefect.resource.role"]: r for r in succeeded["related"]}
    assert roles["database"]["prefect.resource.name"] == db.name
    assert roles["server"]["prefect.resource.id"].startswith("vaultflow.server.sqlite.")
    assert "flow-run" in roles and succeeded["payload"]["snapshot"]

    repo_events = _events(prefect_api, f"vaultflow.repository.{repo_path}",
                          {"vaultflow.prune.succeeded", "vaultflow.verify.succeeded"})
    by_name = {e["event"]: e for e in repo_events}
    assert by_name["vaultflow.prune.succeeded"]["payload"]["dry_run"] is True
    assert by_name["vaultflow.verify.succeeded"]["payload"]["snapshots"] == 1


def test_backup_naming_a_missing_block_emits_failed(prefect_api: str, repo_path: Path) -> None:
    name = f"no-such-block-{uuid.uuid4().hex[:6]}"
    with pytest.raises(InputError, match=name):
        backup(source=name, repository=str(repo_path))
    (failed,) = _events(prefect_api, f"vaultflow.source.{name}", {"vaultflow.backup.failed"})
    assert name in failed["payload"]["error"] and "block" in failed["payload"]["error"]


def test_backup_with_a_previous_snapshot_keeps_a_progress_artifact(prefect_api: str, tmp_path: Path,
                                                                   repo_path: Path) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    db = create(tmp_path / "progress.db", rows=300)
    backup(source=f"sqlite:///{db}", repository=str(repo_path))
    state = backup(source=f"sqlite:///{db}", repository=str(repo_path), return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id

    async def read() -> list[Any]:
        async with get_client() as client:
            return list(await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))))

    progress = [a for a in asyncio.run(read()) if a.type == "progress"]
    assert [a.key for a in progress] == ["vaultflow-backup-progress"]
    assert float(progress[0].data) == 100.0


def test_a_failed_restore_emits_failed_with_the_error_line_and_no_password(
        prefect_api: str, tmp_path: Path, repo_path: Path) -> None:
    from flows.restore import restore
    from vaultflow.errors import SnapshotNotFound

    target = f"sqlite:///{tmp_path / 'restored.db'}"
    with pytest.raises(SnapshotNotFound):
        restore(snapshot="deadbeef", target=target, repository=str(repo_path))
    (failed,) = _events(prefect_api, f"vaultflow.target.{target}", {"vaultflow.restore.failed"})
    assert failed["payload"]["snapshot"] == "deadbeef" and "deadbeef" in failed["payload"]["error"]

    db = create(tmp_path / "pw.db", rows=50)
    sid = str(backup(source=f"sqlite:///{db}", repository=str(repo_path))["snapshot_id"])
    secret_target = f"postgresql://postgres:hunter2@127.0.0.1:5432/vft_{uuid.uuid4().hex[:6]}"
    with pytest.raises(Exception):  # noqa: B017, PT011 - whichever refusal; the event is what is checked
        restore(snapshot=sid, target=secret_target, repository=str(repo_path))
    label = "postgresql://postgres:***@127.0.0.1:5432/" + secret_target.rsplit("/", 1)[1]
    (refused,) = _events(prefect_api, f"vaultflow.target.{label}", {"vaultflow.restore.failed"})
    assert "hunter2" not in str(refused) and refused["payload"]["error"]
