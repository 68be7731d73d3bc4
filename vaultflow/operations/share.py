"""Download links: rebuild a snapshot's native dump, upload it as one object next to the
repository, and sign a time-limited URL for it (`vaultflow export SNAPSHOT --url`).

The exported object is NOT encrypted: it is the plain dump a DBA or an auditor can open
with pg_restore, psql or sqlite3. It lives under `exports/` in the repository's bucket or
container, outside what prune collects, until someone deletes it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from vaultflow.engines.registry import spec_for_format
from vaultflow.operations.restore import export_snapshot
from vaultflow.repository import Repository, SnapshotManifest

EXPORT_PREFIX = "exports/"


@dataclass(frozen=True)
class DownloadLink:
    manifest: SnapshotManifest
    key: str
    location: str
    url: str = field(repr=False)  # its signature is a bearer credential
    size: int
    expires_at: datetime


def export_download_link(repo: Repository, snapshot_id: str, expires: timedelta, *,
                         spool_dir: str | None = None) -> DownloadLink:
    """Upload the snapshot's native dump as `exports/<id>.<ext>` and sign a URL valid for `expires`.

    The URL is signed first (that needs no upload and fails fast where the store cannot sign),
    then the dump is rebuilt into a 0600 spool file, verified and uploaded."""
    manifest = repo.load_manifest(snapshot_id)
    found = spec_for_format(manifest.streams[0].format)
    export = found.export_format(manifest.streams[0].format) if found is not None else None
    key = f"{EXPORT_PREFIX}{snapshot_id}{export.suffix if export is not None else '.bin'}"
    signed = repo.store.download_url(key, expires)
    with tempfile.TemporaryDirectory(prefix="vaultflow-export-", dir=spool_dir) as tmp:
        path = Path(tmp) / "dump"
        export_snapshot(repo, snapshot_id, path)
        size = path.stat().st_size
        repo.store.put_file(key, path)
    return DownloadLink(manifest, key, f"{repo.store.describe().rstrip('/')}/{key}", signed.url, size,
                        signed.expires_at)
