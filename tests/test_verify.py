"""verify finds missing and altered chunks, names the snapshots they break; restore refuses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from vaultflow.backup import backup_database
from vaultflow.engines import SqliteEngine
from vaultflow.errors import IntegrityError
from vaultflow.repository import ChunkerParams, Repository, new_object_id
from vaultflow.repository.repository import chunk_key
from vaultflow.restore import restore_snapshot
from vaultflow.sample_data import create
from vaultflow.storage import LocalStore
from vaultflow.verify import broken_by_chunk, verify_snapshots


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    small = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
    return Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE, chunker=small)


def test_clean_repository_verifies(repo: Repository, tmp_path: Path) -> None:
    src = create(tmp_path / "s.db", rows=3000)
    for _ in range(2):
        sid = new_object_id()
        backup_database(SqliteEngine(src), repo, snapshot_id=sid)
    for deep in (False, True):
        verdicts = verify_snapshots(repo, deep=deep)
        assert len(verdicts) == 2 and all(v.valid for v in verdicts)
        assert all(v.checksum_match is (True if deep else None) for v in verdicts)


def test_deleted_and_flipped_chunks(repo: Repository, tmp_path: Path) -> None:
    src = create(tmp_path / "s.db", rows=6000)
    sid = new_object_id()
    m = backup_database(SqliteEngine(src), repo, snapshot_id=sid)
    root = tmp_path / "repo"
    gone, flipped = m.streams[0].chunks[1], m.streams[0].chunks[4]
    (root / chunk_key(sid, gone.id)).unlink()
    path = root / chunk_key(sid, flipped.id)
    raw = bytearray(path.read_bytes())
    raw[40] ^= 0x80
    path.write_bytes(bytes(raw))

    (quick,) = verify_snapshots(repo)
    assert not quick.valid and not quick.size_match and quick.damaged_chunks == {gone.id: "missing"}
    (deep,) = verify_snapshots(repo, deep=True)
    assert not deep.valid and deep.checksum_match is False
    assert set(deep.damaged_chunks) == {gone.id, flipped.id}
    assert broken_by_chunk([deep]) == {gone.id: [sid], flipped.id: [sid]}
    with pytest.raises(IntegrityError):
        restore_snapshot(repo, sid, SqliteEngine(tmp_path / "r.db"))
    assert not (tmp_path / "r.db").exists()


def test_damaged_manifest_is_reported(repo: Repository, tmp_path: Path) -> None:
    src = create(tmp_path / "s.db", rows=100)
    sid = new_object_id()
    backup_database(SqliteEngine(src), repo, snapshot_id=sid)
    path = tmp_path / "repo" / "snapshots" / sid
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    (v,) = verify_snapshots(repo)
    assert not v.valid and v.error and "failed its check" in v.error
