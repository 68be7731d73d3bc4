"""Fleet tasks: one database's backup inside its server's global concurrency limit."""

from __future__ import annotations

import re
import threading

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from tasks.backup import dump_to_repository, open_backup_run, record_backup_failure, record_backup_success
from tasks.reporting import publish_backup_failure, snapshot_row
from tasks.retry_policy import RETRIED
from vaultflow.engines import DatabaseEngine
from vaultflow.errors import OperationStopped, VaultflowError
from vaultflow.repository.manifest import SnapshotKind
from vaultflow.requests import BackupRequest


def server_limit_name(engine: DatabaseEngine) -> str:
    """The global concurrency limit of one server, e.g. vaultflow-server-mysql-db1.example-3306."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", engine.server_label()).strip("-").lower()
    return f"vaultflow-server-{engine.engine}-{label}"


def ensure_server_limit(name: str, limit: int) -> None:
    """Create the server's limit, or set it to `limit`."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit)


@task(name="backup-database", task_run_name="backup-{source}", **RETRIED, persist_result=False, cache_policy=NO_CACHE,
      cache_result_in_memory=False)
def backup_one(source: str, repository: str | None, kind: SnapshotKind, limit_name: str,
               options: BackupRequest, stop: threading.Event | None = None) -> dict[str, object]:
    """Back up one database while holding one slot of its server's limit; `stop` set (the
    fleet run cancelled) ends the dump with OperationStopped, the row left to the flow."""
    with concurrency(limit_name, occupy=1, strict=True):
        run = open_backup_run.fn(source, repository, kind)
        try:
            manifest = dump_to_repository.fn(run, options, stop)
        except OperationStopped:
            raise
        except BaseException as exc:
            line = exc.line() if isinstance(exc, VaultflowError) else f"{type(exc).__name__}: {exc}"
            record_backup_failure.fn(run, line)
            publish_backup_failure.fn(run.engine.engine, run.engine.server_label(), run.engine.database, line)
            raise
        record_backup_success.fn(run, manifest)
    get_run_logger().info("%s: snapshot %s", source, manifest.short_id)
    return snapshot_row(manifest, run.plan.parent) | {"snapshot_id": manifest.id}
