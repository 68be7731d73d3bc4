"""verify finds missing and altered chunks, names the snapshots they break; restore refuses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from vaultflow.engines.sqlite.engine import SqliteEngine
from vaultflow.errors import IntegrityError
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.operations.verify import broken_by_chunk, verify_snapshots
from vaultflow.repository import ChunkerParams, Repository, new_object_id
from vaultflow.repository.repository import chunk_key
from vaultflow.requests import BackupRequest
from vaultflow.sample_data import create
from vaultflow.storage import LocalStore


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


def test_repair_run_heals_the_chain(repo: Repository, tmp_path: Path) -> None:
    from vaultflow.operations.backup import plan_backup

    src = create(tmp_path / "s.db", rows=6000)
    engine = SqliteEngine(src)
    sid = new_object_id()
    full = backup_database(engine, repo, snapshot_id=sid)
    victim = full.streams[0].chunks[2]
    (tmp_path / "repo" / chunk_key(sid, victim.id)).unlink()
    assert not verify_snapshots(repo, deep=True)[0].valid

    plain = new_object_id()
    again = backup_database(engine, repo, snapshot_id=plain, plan=plan_backup(repo, engine, "incremental", plain))
    assert again.reused_from == sid  # an ordinary incremental carries the damage over
    healer = new_object_id()
    backup_database(engine, repo, BackupRequest(repair=True),
                    snapshot_id=healer, plan=plan_backup(repo, engine, "incremental", healer))
    assert all(v.valid for v in verify_snapshots(repo, deep=True))  # the old full is whole again
    restore_snapshot(repo, sid, SqliteEngine(tmp_path / "r.db"))


def test_not_expired_against_a_policy(repo: Repository, tmp_path: Path) -> None:
    from vaultflow.operations.retention import RetentionPolicy

    src = create(tmp_path / "s.db", rows=100)
    ids = []
    for _ in range(3):
        sid = new_object_id()
        backup_database(SqliteEngine(src), repo, snapshot_id=sid)
        ids.append(sid)
    verdicts = {v.snapshot: v for v in verify_snapshots(repo, policy=RetentionPolicy(keep_last=2))}
    assert [verdicts[i].not_expired for i in ids] == [False, True, True]
    assert all(v.valid for v in verdicts.values())
