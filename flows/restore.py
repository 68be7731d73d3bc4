"""The `restore` flow: one snapshot into a database on the same or another server."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.exceptions import TerminationSignal
from pydantic import Field

from blocks.parameters import EngineChoice, FileTreeChoice, RepositoryChoice
from blocks.resolve import block_label
from tasks.reporting import (
    error_line,
    publish_restore_failure,
    publish_restore_summary,
    snapshot_row,
    without_password,
)
from tasks.restore import check_backup_set_restore, file_tree_restore_request, restore_into_target
from vaultflow.requests import RestoreRequest


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    target = str(block_label(params.get("target")) or "target").rstrip("/").rsplit("/", 1)[-1]
    return f"restore-{params.get('snapshot', '')}-into-{target}"


@flow(name="restore", flow_run_name=_run_name, validate_parameters=True)
def restore(
    snapshot: Annotated[str, Field(description="Snapshot id or unique prefix (vaultflow snapshots)")],
    target: Annotated[EngineChoice, Field(description="Engine block, its name (name/database) or database URL")],
    repository: Annotated[RepositoryChoice | None, Field(description="BackupRepository block (or its name) or a local "
                                                        "path; VAULTFLOW_REPO if empty")] = None,
    options: Annotated[RestoreRequest, Field(description="How to restore")] = RestoreRequest(),  # noqa: B008
    files_to: Annotated[list[FileTreeChoice], Field(
        description="Where the file trees of the snapshot's backup set go (file:///dir or FileTree blocks), one "
                    "per tree in the set's order; empty restores the database alone")] = [],  # noqa: B006
) -> dict[str, object]:
    """Restore a snapshot, then the file trees of its backup set; each target is changed only
    once its snapshot has been verified, and every files target is checked before any."""
    restored: list[dict[str, object]] = []
    try:
        trees = check_backup_set_restore(snapshot, files_to, repository, options.replace) if files_to else []
        manifest = restore_into_target(snapshot, target, repository, options)
        for tree, dest in zip(trees, files_to, strict=True):
            done = restore_into_target(tree, dest, repository, file_tree_restore_request(options))
            publish_restore_summary(done, str(block_label(dest)))
            restored.append(snapshot_row(done) | {"snapshot_id": done.id, "restored_into": block_label(dest)})
    except TerminationSignal:
        raise
    except BaseException as exc:
        publish_restore_failure(snapshot, str(block_label(target)), without_password(error_line(exc)))
        raise
    publish_restore_summary(manifest, str(block_label(target)))
    return snapshot_row(manifest) | {"snapshot_id": manifest.id, "restored_into": block_label(target),
                                     "files": restored}
