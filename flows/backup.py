"""The `backup` flow: one database into one repository."""

from __future__ import annotations

from typing import Annotated, Literal

from prefect import flow
from prefect.exceptions import TerminationSignal
from pydantic import Field

from blocks.parameters import EngineChoice, RepositoryChoice
from blocks.resolve import block_label
from flows.run_states import backup_cancelled, backup_crashed
from tasks.backup import (
    dump_to_repository,
    open_backup_run,
    record_backup_failure,
    record_backup_success,
)
from tasks.reporting import (
    error_line,
    publish_backup_failure,
    publish_backup_summary,
    publish_source_failure,
    publish_stats,
    snapshot_row,
)
from vaultflow.requests import BackupRequest


def _run_name() -> str:
    """backup-<database>-<UTC time>: readable in the UI's run list, no URL noise."""
    from datetime import UTC, datetime

    from prefect.runtime import flow_run

    source = str(block_label(flow_run.parameters.get("source")) or "source")
    database = source.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or source
    return f"backup-{database}-{datetime.now(UTC):%Y%m%dT%H%M%S}"


@flow(name="backup", flow_run_name=_run_name, validate_parameters=True,
      on_cancellation=[backup_cancelled], on_crashed=[backup_crashed])
def backup(
    source: Annotated[EngineChoice, Field(description="Engine block (or its name), or postgresql://user@host:port/db, "
                                             "mysql://user@host:port/db or sqlite:///path/to/file.db")],
    repository: Annotated[RepositoryChoice | None, Field(description="BackupRepository block (or its name) or a local "
                                                        "path; VAULTFLOW_REPO if empty")] = None,
    kind: Annotated[Literal["full", "incremental", "differential"], Field(
        description="full starts a new chain; incremental stores what changed since the newest snapshot; "
                    "differential what changed since the chain's full")] = "full",
    options: Annotated[BackupRequest, Field(description="How to back up")] = BackupRequest(),  # noqa: B008
) -> dict[str, object]:
    """Take a consistent backup of one database; the snapshot exists only if it completed."""
    try:
        run = open_backup_run(source, repository, kind)
    except BaseException as exc:
        publish_source_failure(str(block_label(source)), error_line(exc))
        raise
    try:
        manifest = dump_to_repository(run, options)
    except TerminationSignal:
        raise  # cancelled or killed: the state hooks record Cancelled or Failed
    except BaseException as exc:
        line = error_line(exc)
        record_backup_failure(run, line)
        publish_backup_failure(run.engine.engine, run.engine.server_label(), run.engine.database, line)
        raise
    record_backup_success(run, manifest)
    publish_backup_summary(manifest, run.plan.parent)
    publish_stats(run.repository.catalog_url, run.repository_id)
    return snapshot_row(manifest, run.plan.parent) | {"snapshot_id": manifest.id, "parent": manifest.parent,
                                     "reused_from": manifest.reused_from, "note": run.plan.note}
