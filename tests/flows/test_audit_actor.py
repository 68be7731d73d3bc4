"""Audit records written by tasks name the Prefect flow run they belong to, in whatever thread
the task runner runs them; outside a run they name only the user and host."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prefect import flow, runtime

from flows.backup import backup
from tasks.restore import restore_into_target
from tests.conftest import PASSPHRASE
from vaultflow.audit import records
from vaultflow.catalog import Catalog
from vaultflow.operations.forget import forget
from vaultflow.repository import Repository
from vaultflow.requests import RestoreRequest
from vaultflow.sample_data import create
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")


@flow(name="restore-in-a-worker-thread")
def restore_in_a_worker_thread(snapshot: str, target: str, repository: str) -> tuple[str, bool]:
    """Submit the real restore task to the thread pool; return this run's id and whether the
    task ran off the flow's thread."""
    flow_thread = threading.get_ident()
    seen: list[int] = []

    def note_thread(*_: object) -> None:
        seen.append(threading.get_ident())

    future = restore_into_target.with_options(on_completion=[note_thread]).submit(
        snapshot, target, repository, RestoreRequest())
    future.result()
    return str(runtime.flow_run.id), bool(seen) and seen[0] != flow_thread


def test_the_actor_carries_the_flow_run_id(repo_path: Path, tmp_path: Path) -> None:
    src = create(tmp_path / "src.db", rows=200)
    result = backup(source=f"sqlite:///{src}", repository=str(repo_path))
    (row,) = Catalog().snapshots()
    run_id, off_thread = restore_in_a_worker_thread(str(result["snapshot_id"]), f"sqlite:///{tmp_path / 'r.db'}",
                                                    str(repo_path))
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    forget(repo, [str(result["snapshot_id"])])  # outside any run

    backed_up, restored, forgot = records(repo)
    assert (backed_up.action, restored.action, forgot.action) == ("backup", "restore", "forget")
    assert row.flow_run_id and backed_up.actor.flow_run == row.flow_run_id
    assert off_thread and restored.actor.flow_run == run_id != row.flow_run_id
    assert backed_up.actor.deployment is None  # run in-process, not from a deployment
    assert f"(flow run {run_id})" in restored.actor.label()
    assert forgot.actor.flow_run is None and forgot.actor.user == backed_up.actor.user
