"""Batch records are append-only: each state is a new object, the newest counts, and a record of
the earlier single-object format (`.../batch`) is still read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from vaultflow.archive.batches import (
    BatchRecord,
    BatchStatus,
    _aad,
    get_record,
    list_batches,
    new_batch_id,
    put_record,
    record_key,
)
from vaultflow.errors import IntegrityError
from vaultflow.repository import Repository
from vaultflow.storage import LocalStore


def _record(batch: str, status: BatchStatus) -> BatchRecord:
    now = datetime.now(UTC)
    return BatchRecord(id=batch, policy="events-30d", status=status, engine="sqlite", server="local",
                       database="app.db", table="events", age_column="created_at", key_columns=["id"], cutoff=now,
                       created_at=now, rows=3, parquet_rows=3, checksum="0" * 16, parquet_bytes=10,
                       stored_bytes=20)


def test_each_state_is_a_new_record_and_the_newest_counts(tmp_path: Path) -> None:
    repo = Repository.init(LocalStore(tmp_path / "repo"), "pw")
    batch = new_batch_id()
    for status in (BatchStatus.VERIFIED, BatchStatus.ARCHIVED, BatchStatus.PURGED):
        put_record(repo, _record(batch, status))
    keys = sorted(i.key for i in repo.store.list(f"archives/events-30d/{batch}/"))
    assert keys == [record_key("events-30d", batch, n) for n in (1, 2, 3)]
    assert get_record(repo, "events-30d", batch).status == BatchStatus.PURGED
    records, orphans = list_batches(repo)
    assert [(r.id, r.status) for r in records] == [(batch, BatchStatus.PURGED)] and orphans == []


def test_a_record_of_the_earlier_format_is_read_and_superseded(tmp_path: Path) -> None:
    repo = Repository.init(LocalStore(tmp_path / "repo"), "pw")
    batch = new_batch_id()
    old = _record(batch, BatchStatus.VERIFIED)
    repo.store.put(f"archives/events-30d/{batch}/batch",
                   repo.sealer.seal(old.model_dump_json().encode(), _aad("batch", "events-30d", batch)))
    assert get_record(repo, "events-30d", batch).status == BatchStatus.VERIFIED
    put_record(repo, _record(batch, BatchStatus.ARCHIVED))
    assert repo.store.stat(record_key("events-30d", batch, 1)) is not None
    assert [r.status for r in list_batches(repo)[0]] == [BatchStatus.ARCHIVED]


def test_a_record_copied_to_a_later_sequence_number_fails_its_check(tmp_path: Path) -> None:
    """The sequence number is in the AAD: replaying an old state as the newest is detected."""
    repo = Repository.init(LocalStore(tmp_path / "repo"), "pw")
    batch = new_batch_id()
    put_record(repo, _record(batch, BatchStatus.VERIFIED))
    put_record(repo, _record(batch, BatchStatus.ARCHIVED))
    repo.store.put(record_key("events-30d", batch, 3), repo.store.get(record_key("events-30d", batch, 1)))
    with pytest.raises(IntegrityError, match="failed its check"):
        get_record(repo, "events-30d", batch)
