"""The `export` flow: a snapshot's native dump as a time-limited download link."""

from __future__ import annotations

import os
from typing import Annotated

from prefect import flow
from pydantic import Field

from tasks.reporting import publish_export_created
from tasks.restore import export_download_link
from vaultflow.operations.retention import parse_duration


# persist_result=False: the return value holds the signed URL (a bearer credential). Prefect
# persists a flow's return value only when asked (PREFECT_RESULTS_PERSIST_BY_DEFAULT, a result
# storage or a cache policy); False keeps it out of result storage, and so out of the API and
# the UI, whatever the settings. The URL reaches only the caller in this process (the CLI).
@flow(name="export", validate_parameters=True, persist_result=False)
def export(
    snapshot: Annotated[str, Field(description="Snapshot id or unique prefix")],
    repository: Annotated[str | None, Field(description="BackupRepository block name or location "
                                                        "(S3 or Azure Blob)")] = None,
    expires: Annotated[str, Field(description="How long the link works: 36h, 7d (S3 at most 7d)")] = "24h",
) -> dict[str, object]:
    """Upload the snapshot's native dump (not encrypted) next to the repository and sign a URL.

    Emits vaultflow.export.created (snapshot, object, size, expiry; never the URL). The URL is
    only in the return value, which is not persisted: a deployed run's link is lost; export from
    the CLI (`vaultflow export SNAPSHOT --url`) to receive it.
    """
    valid_for = parse_duration(expires)  # a malformed duration fails before anything is uploaded
    link = export_download_link(snapshot, repository, valid_for)
    m = link.manifest
    publish_export_created(repository or os.environ.get("VAULTFLOW_REPO") or "unset", m, link.key, link.location,
                           link.size, link.expires_at)
    return {"snapshot": m.id, "database": m.database, "format": m.streams[0].format, "object": link.location,
            "object_key": link.key, "size": link.size, "expires_at": link.expires_at.isoformat(), "url": link.url}
