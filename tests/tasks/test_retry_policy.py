"""Every retrying task retries only transient errors, with exponential backoff and jitter."""

from __future__ import annotations

import importlib

import pytest
from prefect import Task

from tasks.retry_policy import is_transient, retry_transient
from vaultflow.errors import AuthenticationFailed, ConnectionFailed, DatabaseNotFound, TransientError

MODULES = ["tasks.backup", "tasks.restore", "tasks.maintenance", "tasks.reporting"]


def _retrying_tasks() -> list[Task]:  # type: ignore[type-arg]
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        found += [t for t in vars(module).values() if isinstance(t, Task) and t.retries]
    return found


def test_retrying_tasks_use_the_one_policy() -> None:
    tasks = _retrying_tasks()
    assert {t.name for t in tasks} >= {"open-backup-run", "dump-to-repository", "restore-snapshot",
                                       "prune-repository", "verify-snapshots"}
    for t in tasks:
        assert t.retry_condition_fn is retry_transient, t.name
        delays = t.retry_delay_seconds
        assert isinstance(delays, list) and len(delays) == t.retries, t.name
        assert all(b == 2 * a for a, b in zip(delays, delays[1:], strict=False)), (t.name, delays)
        assert t.retry_jitter_factor and t.retry_jitter_factor > 0, t.name


@pytest.mark.parametrize(("exc", "transient"), [
    (ConnectionFailed("db1 refused", ""), True), (TransientError("throttled", ""), True),
    (ConnectionError("reset"), True), (TimeoutError(), True),
    (AuthenticationFailed("bad password", ""), False), (DatabaseNotFound("no db", ""), False),
    (ValueError("bug"), False),
])
def test_transient_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
