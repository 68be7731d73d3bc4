"""How tasks retry, decided in this one place: transient failures only, two retries with
exponential backoff and jitter. Every task that talks to a database server or to storage takes
its retry settings from `RETRIED`; the guard test in tests/tasks/test_retry_policy.py checks
every task module against it."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from vaultflow.errors import VaultflowError

RETRIES = 2
BACKOFF_SECONDS = 10
JITTER = 0.3


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, VaultflowError):
        return exc.transient
    return isinstance(exc, (ConnectionError, TimeoutError))


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn` for tasks: retry only if the failure is transient."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we classify, not handle
        return is_transient(exc)
    return False


RETRIED: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=BACKOFF_SECONDS),
    "retry_jitter_factor": JITTER,
    "retry_condition_fn": retry_transient,
}
"""Keyword arguments for `@task(...)`: `@task(name="x", **RETRIED, ...)`."""
