"""The catalog is an index: it can be lost and rebuilt from the repository's manifests."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import PASSPHRASE
from vaultflow.catalog import Catalog, SnapshotStatus
from vaultflow.engines.sqlite.engine import SqliteEngine
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.sample_data import compare, create
from vaultflow.storage import LocalStore


def backed_up(repo: Repository, catalog: Catalog, src: Path) -> str:
    sid = new_object_id()
    engine = SqliteEngine(src)
    catalog.start_snapshot(snapshot_id=sid, chain=sid, repository_id=repo.id, repository="r",
                           engine=engine.engine, server=engine.server_label(), database=engine.database,
                           kind="full")
    catalog.finish_snapshot(backup_database(engine, repo, snapshot_id=sid))
    return sid


def test_rebuild_recreates_rows_and_keeps_failure_history(repo_path: Path, tmp_path: Path) -> None:
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    src = create(tmp_path / "s.db", rows=500)
    catalog = Catalog()
    ids = [backed_up(repo, catalog, src) for _ in range(2)]
    catalog.start_snapshot(snapshot_id="f" * 32, chain="f" * 32, repository_id=repo.id, repository="r",
                           engine="sqlite", server="x", database="s.db", kind="full")
    catalog.fail_snapshot("f" * 32, "boom")
    before = {r.id: (r.status, r.logical_size, r.stored_size) for r in catalog.snapshots()}

    fresh = Catalog(f"sqlite:///{tmp_path / 'new-catalog.db'}")
    assert fresh.rebuild(list(repo.manifests()), repository_id=repo.id, repository="r") == 2
    rebuilt = {r.id: (r.status, r.logical_size, r.stored_size) for r in fresh.snapshots()}
    assert rebuilt == {i: before[i] for i in ids}

    catalog.rebuild(list(repo.manifests()), repository_id=repo.id, repository="r")
    assert {r.id: r.status for r in catalog.snapshots()}["f" * 32] == SnapshotStatus.FAILED


def test_rebuild_drops_rows_whose_manifest_is_gone(repo_path: Path, tmp_path: Path) -> None:
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    catalog = Catalog()
    a, b = (backed_up(repo, catalog, create(tmp_path / f"{n}.db", rows=100)) for n in "ab")
    repo.store.delete(f"snapshots/{a}")
    catalog.rebuild(list(repo.manifests()), repository_id=repo.id, repository="r")
    assert [r.id for r in catalog.snapshots()] == [b]


def test_restore_needs_no_catalog(repo_path: Path, tmp_path: Path) -> None:
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    src = create(tmp_path / "s.db", rows=300)
    sid = backed_up(repo, Catalog(), src)
    os.remove(Path(os.environ["VAULTFLOW_HOME"]) / "catalog.db")
    restore_snapshot(Repository.open(LocalStore(repo_path), PASSPHRASE), sid,
                     SqliteEngine(tmp_path / "r.db"))
    assert compare(src, tmp_path / "r.db") == []


def test_any_sqlalchemy_url(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    catalog.upsert_database("postgresql", "h:5432", "app")
    catalog.upsert_database("postgresql", "h:5432", "app")
    assert catalog.snapshots() == []
    assert (tmp_path / "elsewhere.db").exists()


def test_catalog_on_postgresql(pg_database: object, tmp_path: Path) -> None:
    name = pg_database()  # type: ignore[operator]
    catalog = Catalog(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    catalog.start_snapshot(snapshot_id="a" * 32, chain="a" * 32, repository_id="r", repository="r",
                           engine="sqlite", server="x", database="d", kind="full")
    catalog.fail_snapshot("a" * 32, "boom")
    (row,) = catalog.snapshots()
    assert row.status == SnapshotStatus.FAILED and row.error == "boom"
    catalog.engine.dispose()


def test_drills_are_recorded_and_stats_show_last_proven_restorable(repo_path: Path, tmp_path: Path) -> None:
    import json

    from vaultflow.catalog import DrillStatus
    from vaultflow.drill import run_drill

    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    src = create(tmp_path / "s.db", rows=300)
    catalog = Catalog()
    first, second = backed_up(repo, catalog, src), backed_up(repo, catalog, src)
    scratch = SqliteEngine(tmp_path / "scratch" / "x.db")
    ok = run_drill(repo, first, scratch)
    bad = run_drill(repo, second, scratch, after_restore=lambda e: e.path.write_bytes(b""))  # type: ignore[attr-defined]
    assert ok.passed and not bad.passed
    catalog.record_drill(ok, repository_id=repo.id)
    rec = catalog.record_drill(bad, repository_id=repo.id, flow_run_id="run-1")
    assert rec.status == DrillStatus.FAILED and rec.checks_failed > 0 and rec.flow_run_id == "run-1"
    assert any(c["status"] == "failed" and c["check"] == "rows" for c in json.loads(rec.checks))
    drills = catalog.drills(repository_id=repo.id, database="s.db")
    assert [d.snapshot_id for d in drills] == [first, second]
    assert drills[0].restore_seconds is not None and drills[0].checks_passed > 0

    (st,) = catalog.stats(repository_id=repo.id)
    taken = repo.load_manifest(first).started_at
    assert st.last_proven_restorable == taken and st.recovery_seconds == drills[0].restore_seconds
    assert st.last_drill_status == "Failed"
