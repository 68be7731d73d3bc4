"""Archive batches in the repository: a sealed Parquet object and a sealed batch record.

Layout (see docs/design.md, Archival):
    archives/<policy>/<batch>/rows.parquet   sealed Parquet,  AAD = "archive-rows:<policy>/<batch>"
    archives/<policy>/<batch>/batch          sealed JSON,     AAD = "archive-batch:<policy>/<batch>"

The record is the source of truth for a batch's state; the catalog mirrors it.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from vaultflow.errors import InputError, IntegrityError
from vaultflow.repository import Repository
from vaultflow.repository.crypto import SealError

ARCHIVE_PREFIX = "archives/"
ROWS_NAME = "rows.parquet"
RECORD_NAME = "batch"


class BatchStatus(StrEnum):
    VERIFIED = "verified"  # stored and verified; its rows may still be in the source
    ARCHIVED = "archived"  # its rows are deleted from the source
    PURGED = "purged"  # its Parquet object was deleted by purge; the record stays as history


class Restore(BaseModel):
    at: datetime
    into: str
    table: str
    inserted: int
    skipped: int


class BatchRecord(BaseModel):
    version: int = 1
    id: str
    policy: str
    status: BatchStatus
    engine: str
    server: str
    database: str
    table: str
    age_column: str
    key_columns: list[str]
    cutoff: datetime
    created_at: datetime
    rows: int = Field(description="rows in the Parquet file minus excluded ones")
    parquet_rows: int
    checksum: str = Field(description="RowHasher checksum of every row in the Parquet file")
    parquet_bytes: int
    stored_bytes: int
    age_min: str | None = None
    age_max: str | None = None
    key_min: list[Any] | None = None
    key_max: list[Any] | None = None
    excluded: list[list[Any]] = Field(default_factory=list, description=(
        "normalised keys of rows that changed in the source before they were deleted: "
        "they stayed in the source and are not part of this batch"))
    deleted_at: datetime | None = None
    purged_at: datetime | None = None
    restores: list[Restore] = Field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"{ARCHIVE_PREFIX}{self.policy}/{self.id}/"


def policy_slug(name: str) -> str:
    """An object-key-safe policy name: lowercase, runs of other characters become '-'."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    if not slug:
        raise InputError(f"archive policy name {name!r} has no letters or digits", "give a name like orders-90d")
    return slug[:120]


def new_batch_id(now: datetime | None = None) -> str:
    """Sortable by creation time: <UTC yyyymmddThhmmss>-<12 random hex>, lowercase."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dt%H%M%S}-{os.urandom(6).hex()}"


def batch_time(batch_id: str) -> datetime | None:
    try:
        return datetime.strptime(batch_id[:15], "%Y%m%dt%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _aad(kind: str, policy: str, batch: str) -> bytes:
    return f"archive-{kind}:{policy}/{batch}".encode()


def rows_key(policy: str, batch: str) -> str:
    return f"{ARCHIVE_PREFIX}{policy}/{batch}/{ROWS_NAME}"


def record_key(policy: str, batch: str) -> str:
    return f"{ARCHIVE_PREFIX}{policy}/{batch}/{RECORD_NAME}"


def put_rows(repo: Repository, policy: str, batch: str, parquet: bytes) -> int:
    """Seal and store a batch's Parquet file durably; returns the stored size."""
    blob = repo.sealer.seal(parquet, _aad("rows", policy, batch))
    repo.store.put(rows_key(policy, batch), blob)
    return len(blob)


def get_rows(repo: Repository, policy: str, batch: str, *, written_here: bool = False) -> bytes:
    """The Parquet bytes of a batch, authenticated. `written_here`: the batch this run just put (the
    read-back of R28), which a backup key can open too (`open_written`); any other needs a restore key."""
    try:
        blob = repo.store.get(rows_key(policy, batch))
    except KeyError:
        raise IntegrityError(f"the rows of archive batch {batch} ({policy}) are missing from the repository",
                             "the batch was purged or the repository is damaged") from None
    opener = repo.sealer.open_written if written_here else repo.sealer.open
    try:
        return opener(blob, _aad("rows", policy, batch), max_size=2**31)
    except SealError as exc:
        raise IntegrityError(f"the rows of archive batch {batch} ({policy}) failed their check: {exc}",
                             "the batch cannot be trusted") from None


def put_record(repo: Repository, record: BatchRecord, *, sync: bool = True) -> None:
    """Write the record; `sync=False` only where losing it falls back to an earlier, safe state."""
    payload = record.model_dump_json().encode()
    repo.store.put(record_key(record.policy, record.id),
                   repo.sealer.seal(payload, _aad("batch", record.policy, record.id)), sync=sync)


def get_record(repo: Repository, policy: str, batch: str) -> BatchRecord:
    try:
        blob = repo.store.get(record_key(policy, batch))
    except KeyError:
        raise InputError(f"no archive batch {batch} in the repository at {repo.store.describe()}",
                         "list batches with: vaultflow archives") from None
    try:
        payload = repo.sealer.open(blob, _aad("batch", policy, batch))
    except SealError as exc:
        raise IntegrityError(f"the record of archive batch {batch} failed its check: {exc}",
                             "the batch cannot be trusted") from None
    return BatchRecord.model_validate_json(payload)


def list_batches(repo: Repository) -> tuple[list[BatchRecord], list[tuple[str, str]]]:
    """Every batch record (oldest first), and (policy, batch) of Parquet objects with no record."""
    records: set[tuple[str, str]] = set()
    data: set[tuple[str, str]] = set()
    for info in repo.store.list(ARCHIVE_PREFIX):
        parts = info.key[len(ARCHIVE_PREFIX):].split("/")
        if len(parts) != 3:
            continue
        (records if parts[2] == RECORD_NAME else data).add((parts[0], parts[1]))
    out = [get_record(repo, p, b) for p, b in records]
    out.sort(key=lambda r: (r.created_at, r.id))
    return out, sorted(data - records)


def find_batch(repo: Repository, ref: str) -> BatchRecord:
    """A batch by id or unique id prefix (at least 6 characters)."""
    ref = ref.strip().lower()
    if len(ref) < 6:
        raise InputError(f"archive batch id {ref!r} is shorter than 6 characters",
                         "give more of the id (vaultflow archives lists them)")
    matches = [r for r in list_batches(repo)[0] if r.id.startswith(ref)]
    if not matches:
        raise InputError(f"no archive batch {ref!r} in the repository at {repo.store.describe()}",
                         "list batches with: vaultflow archives")
    if len(matches) > 1:
        raise InputError(f"archive batch id {ref!r} is ambiguous ({len(matches)} batches match)",
                         "give more characters of the id")
    return matches[0]
