"""Every task of every tasks/ module either takes the one retry policy or is listed as not
talking to a server or storage."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from prefect import Task

import tasks
from tasks.retry_policy import RETRIED, is_transient, retry_transient
from vaultflow.errors import AuthenticationFailed, ConnectionFailed, DatabaseNotFound, TransientError

# Tasks that talk to neither a database server nor storage: they write the local catalog or
# publish to Prefect's API, and a failure there must surface, not repeat.
NOT_RETRIED = {
    "record-backup-failure", "record-backup-success", "record-base-backup-failure", "record-drill",
    "record-drill-error",
    "find-coverage-gaps", "check-repository-credentials",
    "publish-backup-summary", "publish-backup-failure", "publish-source-failure", "publish-repository-event",
    "publish-restore-summary", "publish-restore-failure", "publish-snapshots-deleted", "publish-stats",
    "publish-drill-report",
    "publish-archive-summary", "publish-export-created",
    "pitr-mark",  # a second try would make a second restore point
    "pitr-mark-binlog",  # a second try would find its own mark and fail on the name
}


def _all_tasks() -> list[Task]:  # type: ignore[type-arg]
    found: list[Task] = []  # type: ignore[type-arg]
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        found += [t for t in vars(module).values() if isinstance(t, Task) and t.__module__ == module.__name__]
    return found


def test_every_task_module_is_covered() -> None:
    names = {t.name for t in _all_tasks()}
    assert {"open-backup-run", "dump-to-repository", "restore-snapshot", "prune-repository", "verify-snapshots",
            "archive-table", "backup-database", "discover-server", "restore-drill"} <= names
    assert NOT_RETRIED <= names, "a task named here no longer exists"


@pytest.mark.parametrize("t", _all_tasks(), ids=lambda t: t.name)
def test_tasks_take_the_one_policy(t: Task) -> None:  # type: ignore[type-arg]
    if t.name in NOT_RETRIED:
        assert not t.retries, t.name
        return
    assert t.retries == RETRIED["retries"], t.name
    assert t.retry_condition_fn is retry_transient, t.name
    assert t.retry_delay_seconds == RETRIED["retry_delay_seconds"](t.retries), t.name
    assert t.retry_jitter_factor == RETRIED["retry_jitter_factor"], t.name


@pytest.mark.parametrize(("exc", "transient"), [
    (ConnectionFailed("db1 refused", ""), True), (TransientError("throttled", ""), True),
    (ConnectionError("reset"), True), (TimeoutError(), True),
    (AuthenticationFailed("bad password", ""), False), (DatabaseNotFound("no db", ""), False),
    (ValueError("bug"), False),
])
def test_transient_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
