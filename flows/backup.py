"""The `backup` flow: one database into one repository."""

from __future__ import annotations

from typing import Annotated, Literal

from prefect import flow
from prefect.exceptions import TerminationSignal
from pydantic import Field

from blocks.parameters import EngineChoice, FileTreeChoice, RepositoryChoice
from blocks.resolve import block_label
from flows.run_states import backup_cancelled, backup_crashed
from tasks.backup import (
    BackupRun,
    dump_to_repository,
    file_tree_request,
    open_backup_run,
    open_file_tree_run,
    record_backup_failure,
    record_backup_success,
    source_request,
)
from tasks.reporting import (
    error_line,
    publish_backup_failure,
    publish_backup_summary,
    publish_source_failure,
    publish_stats,
    snapshot_row,
)
from vaultflow.errors import BackupSetIncomplete
from vaultflow.repository import SnapshotManifest
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
    files: Annotated[list[FileTreeChoice], Field(
        description="File trees (file:///dir or FileTree blocks) backed up after the source in the same run, "
                    "each its own snapshot, all tied together as one backup set")] = [],  # noqa: B006
) -> dict[str, object]:
    """Take a consistent backup of one database, then of its file trees; each snapshot exists
    only if it completed, and the set is complete only when every member exists."""
    opened: list[BackupRun] = []
    try:
        opened.append(open_backup_run(source, repository, kind))
        opened += [open_file_tree_run(tree, repository, kind) for tree in files]
    except BaseException as exc:
        line = error_line(exc)
        for pending in opened:
            record_backup_failure(pending, f"not run: {line}")
        publish_source_failure(str(block_label(source)), line)
        raise
    if files:
        members = [r.snapshot_id for r in opened]
        opened = [r.in_set(members) for r in opened]
    run, trees = opened[0], opened[1:]
    manifest = _dump(run, source_request(run, options, bool(trees)), later=trees)
    written = [manifest]
    for n, tree in enumerate(trees):
        try:
            written.append(_dump(tree, file_tree_request(options), later=trees[n + 1:]))
        except TerminationSignal:
            raise
        except BaseException as exc:
            ids = ", ".join(m.short_id for m in written)
            raise BackupSetIncomplete(
                f"backup set {run.snapshot_id[:8]} is incomplete: the backup of {tree.engine.describe()} failed "
                f"({error_line(exc)}); written: {ids}",
                "fix the tree and run the backup again; the written snapshots restore on their own") from exc
    publish_stats(run.repository.catalog_url, run.repository_id)
    return snapshot_row(manifest, run.plan.parent) | {
        "snapshot_id": manifest.id, "parent": manifest.parent, "reused_from": manifest.reused_from,
        "note": run.plan.note, "skipped": manifest.skipped.count if manifest.skipped else 0,
        "files": [snapshot_row(m, t.plan.parent) | {"snapshot_id": m.id, "reused_from": m.reused_from,
                                                    "skipped": m.skipped.count if m.skipped else 0}
                  for m, t in zip(written[1:], trees, strict=True)]}


def _dump(run: BackupRun, options: BackupRequest, later: list[BackupRun]) -> SnapshotManifest:
    """Dump one member and record it; on failure record it and the members after it as Failed."""
    try:
        manifest = dump_to_repository(run, options)
    except TerminationSignal:
        raise  # cancelled or killed: the state hooks record Cancelled or Failed
    except BaseException as exc:
        line = error_line(exc)
        record_backup_failure(run, line)
        for pending in later:
            record_backup_failure(pending, f"not run: the backup of {run.engine.describe()} failed")
        publish_backup_failure(run.engine.engine, run.engine.server_label(), run.engine.database, line)
        raise
    record_backup_success(run, manifest)
    publish_backup_summary(manifest, run.plan.parent)
    return manifest
