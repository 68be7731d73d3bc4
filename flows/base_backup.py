"""The `base-backup` flow: a physical base backup of one whole PostgreSQL cluster into one repository,
recorded like logical backups (catalog row of kind `physical`, `vaultflow.backup.*` events on the
cluster's resource `vaultflow.database.postgresql.<server>.(cluster)`, summary, stats and progress
artifacts)."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.exceptions import TerminationSignal
from pydantic import Field

from blocks.parameters import RepositoryChoice
from flows.run_states import backup_cancelled, backup_crashed
from tasks.base_backup import (
    open_base_backup_run,
    record_base_backup_failure,
    record_base_backup_success,
    stream_base_backup,
)
from tasks.reporting import (
    base_backup_fields,
    error_line,
    publish_backup_failure,
    publish_backup_summary,
    publish_source_failure,
    publish_stats,
    snapshot_row,
)
from vaultflow.engines.postgres.pitr import CLUSTER_DATABASE


def _run_name() -> str:
    """base-backup-<server>-<UTC time>."""
    from datetime import UTC, datetime

    from prefect.runtime import flow_run

    source = str(flow_run.parameters.get("source") or "server")
    server = source.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0].split("?")[0] or source
    return f"base-backup-{server}-{datetime.now(UTC):%Y%m%dT%H%M%S}"


@flow(name="base-backup", flow_run_name=_run_name, validate_parameters=True,
      on_cancellation=[backup_cancelled], on_crashed=[backup_crashed])
def base_backup(
    source: Annotated[str, Field(description="PostgresServer block name, or postgresql://user@host:port")],
    repository: Annotated[RepositoryChoice | None, Field(description="BackupRepository block (or its name) or a "
                                                        "local path; VAULTFLOW_REPO if empty")] = None,
    new_chain: Annotated[bool, Field(description="Start a chain of its own (kind full) instead of joining the "
                                                 "newest base backup's chain (incremental)")] = False,
    archive_check: Annotated[bool, Field(description="Refuse unless the server archives its WAL into this "
                                                     "repository; wait there for the backup history file")] = True,
    archive_wait_seconds: Annotated[float, Field(gt=0, le=3600, description="Seconds to wait for the backup "
                                                                            "history file")] = 60.0,
    timeout_minutes: Annotated[int, Field(ge=1, le=10080, description="pg_basebackup is killed after this "
                                                                      "long")] = 360,
) -> dict[str, object]:
    """Stream `pg_basebackup` (tar, WAL fetched) of the whole cluster into the repository as one snapshot
    that `vaultflow pitr restore` recovers to any moment after it; the snapshot exists only if it
    completed and its backup history file reached the repository."""
    try:
        run = open_base_backup_run(source, repository)
    except BaseException as exc:
        publish_source_failure(source, error_line(exc))
        raise
    server = run.engine.server_label()
    try:
        manifest = stream_base_backup(run, new_chain, archive_check, archive_wait_seconds, timeout_minutes)
    except TerminationSignal:
        raise  # cancelled or killed: the state hooks record Cancelled or Failed
    except BaseException as exc:
        line = error_line(exc)
        record_base_backup_failure(run, line)
        publish_backup_failure(run.engine.engine, server, CLUSTER_DATABASE, line)
        raise
    parent = record_base_backup_success(run, manifest)
    publish_backup_summary(manifest, parent)
    publish_stats(run.repository.catalog_url, run.repository_id)
    return snapshot_row(manifest, parent) | base_backup_fields(manifest) | {
        "snapshot_id": manifest.id, "parent": manifest.parent}
