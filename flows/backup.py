"""The `backup` flow: one database into one repository."""

from __future__ import annotations

from typing import Annotated, Literal

from prefect import flow
from pydantic import Field

from tasks.backup import (
    DumpOptions,
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


def _run_name() -> str:
    """backup-<database>-<UTC time>: readable in the UI's run list, no URL noise."""
    from datetime import UTC, datetime

    from prefect.runtime import flow_run

    source = str(flow_run.parameters.get("source", "source"))
    database = source.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or source
    return f"backup-{database}-{datetime.now(UTC):%Y%m%dT%H%M%S}"


@flow(name="backup", flow_run_name=_run_name, validate_parameters=True)
def backup(
    source: Annotated[str, Field(description="Engine block name, or postgresql://user@host:port/db, "
                                             "mysql://user@host:port/db or sqlite:///path/to/file.db")],
    repository: Annotated[str | None, Field(description="BackupRepository block name or a local "
                                                        "path; VAULTFLOW_REPO if empty")] = None,
    kind: Annotated[Literal["full", "incremental", "differential"], Field(
        description="full starts a new chain; incremental stores what changed since the newest snapshot; "
                    "differential what changed since the chain's full")] = "full",
    table_checksums: Annotated[bool, Field(description="Record a content checksum per table "
                                                       "(costs one extra read of each table)")] = True,
    timeout_minutes: Annotated[int, Field(ge=1, description="Kill the dump after this long")] = 360,
    jobs: Annotated[int, Field(ge=1, le=64, description="Tables dumped at once (PostgreSQL)")] = 1,
    include_tables: Annotated[list[str], Field(description="Globs (schema.table or table) whose rows are "
                                                           "backed up; all if empty")] = [],  # noqa: B006
    exclude_tables: Annotated[list[str], Field(description="Globs of tables whose rows are skipped; the "
                                                           "schema is always complete")] = [],  # noqa: B006
    repair: Annotated[bool, Field(description="Dump everything and rewrite every chunk, replacing ones "
                                              "verify found missing or damaged in the chain")] = False,
    include_globals: Annotated[bool, Field(description="Also store the server's roles/users and grants "
                                                       "(pg_dumpall --globals-only; MySQL SHOW GRANTS)")] = False,
    globals_passwords: Annotated[bool, Field(description="Keep password hashes in those (off: roles are "
                                                         "restored without passwords)")] = False,
) -> dict[str, object]:
    """Take a consistent backup of one database; the snapshot exists only if it completed."""
    try:
        run = open_backup_run(source, repository, kind)
    except BaseException as exc:
        publish_source_failure(source, error_line(exc))
        raise
    try:
        manifest = dump_to_repository(run, DumpOptions(table_checksums, timeout_minutes * 60.0, jobs,
                                                       include_tables, exclude_tables, repair, include_globals,
                                                       globals_passwords))
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
