"""Prune and garbage collection over a real repository, with locks against running backups."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from vaultflow.engines.sqlite.engine import SqliteEngine
from vaultflow.operations.backup import backup_database
from vaultflow.operations.prune import plan_prune, prune
from vaultflow.operations.restore import restore_snapshot
from vaultflow.operations.retention import RetentionPolicy
from vaultflow.repository import Repository, SnapshotManifest, new_object_id
from vaultflow.repository.locks import RepositoryLock, RepositoryLocked, list_locks
from vaultflow.sample_data import compare, create
from vaultflow.storage import LocalStore


def open_repo(path: Path) -> Repository:
    return Repository.open(LocalStore(path), PASSPHRASE)


def backdate(repo: Repository, sid: str, days: int) -> None:
    """Rewrite a manifest as if it had been taken `days` ago (retention reads started_at)."""
    m = repo.load_manifest(sid)
    when = datetime.now(UTC) - timedelta(days=days)
    repo.save_manifest(m.model_copy(update={"started_at": when, "finished_at": when}))


def take(repo: Repository, src: Path) -> SnapshotManifest:
    sid = new_object_id()
    return backup_database(SqliteEngine(src), repo, snapshot_id=sid)


def test_prune_forgets_and_collects_exactly_the_unreferenced(repo_path: Path, tmp_path: Path) -> None:
    repo = open_repo(repo_path)
    src = create(tmp_path / "s.db", rows=2000)
    snaps = [take(repo, src) for _ in range(4)]
    for age, m in zip((30, 20, 10, 0), snaps, strict=True):
        backdate(repo, m.id, age)
    orphan = "chains/" + "e" * 32 + "/chunks/ab/" + "ab" * 32  # left by a crashed backup
    repo.store.put(orphan, b"x" * 100)

    policy = RetentionPolicy(keep_last=2)
    dry = prune(repo, policy, datetime.now(UTC), dry_run=True)
    assert sorted(m.id for m in dry.forget) == sorted(m.id for m in snaps[:2])
    assert orphan in dry.garbage and dry.bytes_freed >= 100 + sum(m.stored_size for m in snaps[:2]) - 1
    assert len(repo.snapshot_ids()) == 4 and repo.store.exists(orphan)  # a dry run changes nothing

    done = prune(repo, policy, datetime.now(UTC))
    assert done.bytes_freed == dry.bytes_freed
    assert sorted(repo.snapshot_ids()) == sorted(m.id for m in snaps[2:])
    assert not repo.store.exists(orphan)
    assert plan_prune(repo, policy, datetime.now(UTC)).garbage == {}
    for m in snaps[2:]:
        target = tmp_path / f"r-{m.short_id}.db"
        restore_snapshot(repo, m.id, SqliteEngine(target))
        assert compare(src, target) == []
    assert list_locks(repo) == []


def test_prune_refuses_while_a_backup_holds_the_repository(repo_path: Path) -> None:
    repo = open_repo(repo_path)
    with RepositoryLock(repo, "shared", "backup of something"):
        with pytest.raises(RepositoryLocked) as info:
            prune(repo, RetentionPolicy(keep_last=1), datetime.now(UTC))
    assert "locked" in str(info.value) and "backup of something" in str(info.value)
    prune(repo, RetentionPolicy(keep_last=1), datetime.now(UTC))  # free again


def test_stale_lock_of_a_dead_process_does_not_block(repo_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys, os; from vaultflow.repository import Repository; from vaultflow.storage import LocalStore;"
            "from vaultflow.repository.locks import RepositoryLock;"
            f"r = Repository.open(LocalStore(sys.argv[1]), {PASSPHRASE!r}); "
            "RepositoryLock(r, 'exclusive', 'crashed prune').acquire(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(repo_path)], check=True)
    repo = open_repo(repo_path)
    assert [lk.purpose for lk in list_locks(repo)] == ["crashed prune"]
    with RepositoryLock(repo, "shared", "backup"):
        pass


def test_backup_running_during_prune_loses_nothing(repo_path: Path, tmp_path: Path) -> None:
    """A backup that starts while prune holds the lock waits; one that runs blocks prune."""
    repo = open_repo(repo_path)
    src = create(tmp_path / "s.db", rows=20000)
    old = take(repo, src)
    backdate(repo, old.id, 40)

    results: list[SnapshotManifest] = []
    prune_lock = RepositoryLock(repo, "exclusive", "prune").acquire()
    worker = threading.Thread(target=lambda: results.append(
        backup_database(SqliteEngine(src), open_repo(repo_path), snapshot_id=new_object_id(),
                        lock_wait=30)))
    worker.start()
    time.sleep(1.5)
    assert not results, "the backup must wait for the running prune"
    prune_lock.release()
    worker.join(60)
    assert results
    prune(repo, RetentionPolicy(keep_last=1), datetime.now(UTC))
    assert repo.snapshot_ids() == [results[0].id]
    restore_snapshot(repo, results[0].id, SqliteEngine(tmp_path / "after-prune.db"))
    assert compare(src, tmp_path / "after-prune.db") == []


def test_prune_keeps_the_newest_proven_snapshot_past_the_caps(tmp_path: Path) -> None:
    """A cap of one keeps the newest snapshot and the newest one a drill proved, nothing else."""
    repo = Repository.init(LocalStore(tmp_path / "repo"), "pw")
    db = tmp_path / "app.db"
    create(db, rows=50)
    ids = []
    for _ in range(3):
        sid = new_object_id()
        backup_database(SqliteEngine(db), repo, snapshot_id=sid)
        ids.append(sid)
    plan = prune(repo, RetentionPolicy(max_count=1), datetime.now(UTC), proven={ids[0]})
    assert set(plan.keep) == {ids[0], ids[2]} and [m.id for m in plan.forget] == [ids[1]]
    assert sorted(repo.snapshot_ids()) == sorted([ids[0], ids[2]])
