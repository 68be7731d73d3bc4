"""Download links: rebuild a snapshot's native dump, upload it as one object next to the
repository, and sign a time-limited URL for it (`vaultflow export SNAPSHOT --url`).

The exported object is NOT encrypted: it is the plain dump a DBA or an auditor can open
with pg_restore, psql or sqlite3. It lives under `exports/` in the repository's bucket or
container. Each link handed out is recorded, sealed, as `links/<id>` (object, size, expiry;
never the URL, whose signature is a bearer credential); `list_links` reads them back with
their status, and prune removes an exported object once every link to it has expired.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from vaultflow.audit import audited
from vaultflow.engines.registry import spec_for_format
from vaultflow.errors import IntegrityError
from vaultflow.operations.restore import export_snapshot
from vaultflow.repository import Repository, SnapshotManifest
from vaultflow.repository.crypto import SealError

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
    """Upload the snapshot's native dump as `exports/<id>-<token>.<ext>` and sign a URL valid for `expires`.

    The URL is signed first (that needs no upload and fails fast where the store cannot sign),
    then the dump is rebuilt into a 0600 spool file, verified and uploaded."""
    repo.require("restore", "a download link")
    with audited(repo, "link", object=snapshot_id) as note:
        link = _export_download_link(repo, snapshot_id, expires, spool_dir=spool_dir)
        note.database = link.manifest.database
        note.detail = f"{link.key}, {link.size} bytes, expires {link.expires_at:%Y-%m-%dT%H:%M:%SZ}"
    return link


def _export_download_link(repo: Repository, snapshot_id: str, expires: timedelta, *,
                          spool_dir: str | None) -> DownloadLink:
    manifest = repo.load_manifest(snapshot_id)
    found = spec_for_format(manifest.streams[0].format)
    export = found.export_format(manifest.streams[0].format) if found is not None else None
    token = secrets.token_hex(6)
    # A key of its own per link: a second export never replaces an object a first link may be reading.
    key = f"{EXPORT_PREFIX}{snapshot_id}-{token}{export.suffix if export is not None else '.bin'}"
    signed = repo.store.download_url(key, expires)
    with tempfile.TemporaryDirectory(prefix="vaultflow-export-", dir=spool_dir) as tmp:
        path = Path(tmp) / "dump"
        export_snapshot(repo, snapshot_id, path)
        size = path.stat().st_size
        repo.store.put_file(key, path)
    location = f"{repo.store.describe().rstrip('/')}/{key}"
    record = LinkRecord(id=f"{snapshot_id[:8]}-{token}", snapshot=snapshot_id, object_key=key,
                        location=location, size=size, created_at=datetime.now(UTC), expires_at=signed.expires_at)
    repo.store.put(LINK_PREFIX + record.id, repo.sealer.seal(record.model_dump_json().encode(), _aad(record.id)))
    return DownloadLink(manifest, key, location, signed.url, size, signed.expires_at)


LINK_PREFIX = "links/"


class LinkRecord(BaseModel):
    """One download link handed out: what it reads and until when (never the URL)."""

    id: str
    snapshot: str
    object_key: str
    location: str
    size: int
    created_at: datetime
    expires_at: datetime

    def status(self, now: datetime) -> str:
        return "active" if self.expires_at > now else "expired"


def _aad(record_id: str) -> bytes:
    return b"link:" + record_id.encode()


def list_links(repo: Repository) -> list[LinkRecord]:
    """Every recorded download link of the repository, oldest first."""
    out = []
    for info in repo.store.list(LINK_PREFIX):
        record_id = info.key.removeprefix(LINK_PREFIX)
        try:
            payload = repo.sealer.open(repo.store.get(info.key), _aad(record_id))
        except SealError:
            raise IntegrityError(f"download link record {record_id} is damaged or was altered",
                                 "delete links/" + record_id + " by hand after checking it") from None
        out.append(LinkRecord.model_validate_json(payload))
    return sorted(out, key=lambda r: (r.created_at, r.id))


def expired_exports(repo: Repository, now: datetime) -> tuple[list[str], list[LinkRecord]]:
    """The exported objects all of whose links have expired, and those links' records."""
    links = list_links(repo)
    active = {r.object_key for r in links if r.status(now) == "active"}
    gone = [r for r in links if r.object_key not in active]
    return sorted({r.object_key for r in gone}), gone


def remove_expired_exports(repo: Repository, now: datetime) -> list[str]:
    """Delete exported objects whose links all expired: the object first, then its records
    (a crash between leaves records whose object is gone; the next run finishes them)."""
    keys, records = expired_exports(repo, now)
    for key in keys:
        repo.store.delete(key)
    for r in records:
        repo.store.delete(LINK_PREFIX + r.id)
    return keys
