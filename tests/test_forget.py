"""Forget chosen snapshots: dependents refused unless taken too, dry run, garbage collection."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from vaultflow.engines.sqlite.engine import SqliteEngine
from vaultflow.errors import InputError
from vaultflow.operations.backup import backup_database, plan_backup
from vaultflow.operations.forget import dependents, forget
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, SnapshotManifest, new_object_id
from vaultflow.repository.manifest import SnapshotKind
from vaultflow.repository.repository import chunk_key
from vaultflow.sample_data import compare, create
from vaultflow.storage import LocalStore


def take(repo: Repository, db: Path, kind: SnapshotKind = "full") -> SnapshotManifest:
    engine = SqliteEngine(db)
    sid = new_object_id()
    return backup_database(engine, repo, snapshot_id=sid, plan=plan_backup(repo, engine, kind, sid))


def change(db: Path, n: int) -> None:
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE IF NOT EXISTS extra (n INTEGER, pad TEXT)")
        c.executemany("INSERT INTO extra VALUES (?, ?)", [(i, f"row {n}-{i}" * 40) for i in range(2000)])


@pytest.fixture
def history(tmp_path: Path) -> tuple[Repository, Path, list[SnapshotManifest]]:
    """full F, incrementals I1 <- I2 on top of it, and an unrelated full G of another database."""
    repo = Repository.init(LocalStore(tmp_path / "repo"), "pw")
    db, other = create(tmp_path / "app.db", rows=2000), create(tmp_path / "other.db", rows=500, seed=3)
    full = take(repo, db)
    change(db, 1)
    inc1 = take(repo, db, "incremental")
    change(db, 2)
    inc2 = take(repo, db, "incremental")
    g = take(repo, other)
    return repo, db, [full, inc1, inc2, g]


def test_dependents_are_the_snapshots_taken_on_top(history: tuple[Repository, Path, list[SnapshotManifest]]
                                                   ) -> None:
    repo, _, (full, inc1, inc2, g) = history
    manifests = list(repo.manifests())
    assert [d.id for d in dependents(manifests, full.id)] == [inc1.id, inc2.id]
    assert [d.id for d in dependents(manifests, inc1.id)] == [inc2.id]
    assert dependents(manifests, inc2.id) == [] and dependents(manifests, g.id) == []


def test_forget_with_dependents_is_refused_and_lists_them(
        history: tuple[Repository, Path, list[SnapshotManifest]]) -> None:
    repo, _, (full, inc1, inc2, _) = history
    before = sorted(repo.snapshot_ids())
    with pytest.raises(InputError, match=f"2 dependent snapshot.*{inc1.short_id}, {inc2.short_id}") as err:
        forget(repo, [full.id[:8]])
    assert "--with-dependents" in (err.value.fix or "")
    assert sorted(repo.snapshot_ids()) == before  # nothing deleted


def test_forget_the_newest_then_a_whole_chain(history: tuple[Repository, Path, list[SnapshotManifest]],
                                              tmp_path: Path) -> None:
    repo, db, (full, inc1, inc2, g) = history
    dry = forget(repo, [inc2.id], dry_run=True)
    assert [m.id for m in dry.forget] == [inc2.id] and inc2.id in repo.snapshot_ids()
    plan = forget(repo, [inc2.id])
    assert sorted(repo.snapshot_ids()) == sorted([full.id, inc1.id, g.id])
    stored = {i.key for i in repo.store.list("chains/")}
    assert not set(plan.garbage) & stored
    for m in (full, inc1, g):  # what stays still restores: no chunk it names was collected
        assert all(chunk_key(m.chain, c.id) in stored for s in m.streams for c in s.chunks)
    restore_snapshot(repo, inc1.id, SqliteEngine(tmp_path / "back.db"))
    plan = forget(repo, [full.id], with_dependents=True)
    assert [m.id for m in plan.forget] == [full.id, inc1.id]
    assert repo.snapshot_ids() == [g.id]
    assert all(i.key.startswith(f"chains/{g.chain}/") for i in repo.store.list("chains/"))
    restore_snapshot(repo, g.id, SqliteEngine(tmp_path / "g.db"))
    assert compare(tmp_path / "g.db", tmp_path / "other.db") == []
    assert db.exists()


def test_forget_an_unknown_snapshot_deletes_nothing(history: tuple[Repository, Path, list[SnapshotManifest]]
                                                    ) -> None:
    repo, _, _ = history
    before = sorted(repo.snapshot_ids())
    with pytest.raises(InputError):
        forget(repo, ["ffffffff"])
    with pytest.raises(InputError, match="no snapshot to forget"):
        forget(repo, [])
    assert sorted(repo.snapshot_ids()) == before
