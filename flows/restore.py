"""The `restore` flow: one snapshot into a database on the same or another server."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from tasks.reporting import publish_restore_summary, snapshot_row
from tasks.restore import restore_into_target


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    target = str(params.get("target", "target")).rstrip("/").rsplit("/", 1)[-1]
    return f"restore-{params.get('snapshot', '')}-into-{target}"


@flow(name="restore", flow_run_name=_run_name, validate_parameters=True)
def restore(
    snapshot: Annotated[str, Field(description="Snapshot id or unique prefix (vaultflow snapshots)")],
    target: Annotated[str, Field(description="Engine block name (name/database) or database URL")],
    repository: Annotated[str | None, Field(description="BackupRepository block name or a local "
                                                        "path; VAULTFLOW_REPO if empty")] = None,
    replace: Annotated[bool, Field(description="Swap out a target that already has tables")] = False,
    no_owner: Annotated[bool, Field(description="Skip ownership and grants (roles missing on "
                                                "the target server)")] = False,
    timeout_minutes: Annotated[int, Field(ge=1, description="Kill the restore after this long")] = 360,
    jobs: Annotated[int, Field(ge=1, le=64, description="Tables loaded at once (PostgreSQL)")] = 1,
    tables: Annotated[list[str], Field(description="Restore only these tables' rows (schema.name); "
                                                   "all if empty")] = [],  # noqa: B006
    include_globals: Annotated[bool, Field(description="First create the roles/users stored with the "
                                                       "snapshot that the target server lacks")] = False,
    server_locale: Annotated[bool, Field(description="Create the database with the target server's default "
                                                     "encoding and locale instead of the snapshot's")] = False,
) -> dict[str, object]:
    """Restore a snapshot; the target is changed only once every chunk has been verified."""
    manifest = restore_into_target(snapshot, target, repository, replace, no_owner,
                                   timeout_minutes * 60.0, jobs, tables, include_globals, server_locale)
    publish_restore_summary(manifest, target)
    return snapshot_row(manifest) | {"snapshot_id": manifest.id, "restored_into": target}
