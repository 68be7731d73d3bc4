"""Which failures a task retries: transient ones only, decided in this one place."""

from __future__ import annotations

from typing import Any

from vaultflow.errors import VaultflowError


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
