"""Full, incremental and differential backups: chains, carried-over streams, restores of each."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tests.engines.cases import EngineCase
from vaultflow.operations.backup import backup_database, plan_backup
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, SnapshotManifest, new_object_id
from vaultflow.repository.manifest import SnapshotKind
from vaultflow.requests import BackupRequest
from vaultflow.storage import LocalStore


def run(repo: Repository, case: EngineCase, url: str, kind: SnapshotKind) -> SnapshotManifest:
    sid = new_object_id()
    engine = case.engine(url)
    return backup_database(engine, repo, snapshot_id=sid, plan=plan_backup(repo, engine, kind, sid))


def unchanged_incremental(repo: Repository, case: EngineCase, url: str, parent: SnapshotManifest) -> SnapshotManifest:
    """An incremental of an unchanged database: reused without a dump when the fingerprint
    held; the PostgreSQL and MariaDB fingerprints are server-wide, so a write to another
    database on the server forces a dump, which must then add nothing."""
    m = run(repo, case, url, "incremental")
    assert (m.reused_from == parent.id) == (m.fingerprint == parent.fingerprint)
    if m.reused_from:
        assert m.streams == repo.load_manifest(m.reused_from).streams
    else:
        assert m.tables == parent.tables
    return m


def test_chain_of_kinds(case: EngineCase, repo_path: Path, tmp_path: Path) -> None:
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    url = case.create_source(tmp_path)
    case.bulk(url, mib=30)

    full = run(repo, case, url, "full")
    assert full.kind == "full" and full.chain == full.id and full.parent is None and full.fingerprint

    same = unchanged_incremental(repo, case, url, full)
    assert same.kind == "incremental" and same.chain == full.chain
    assert same.added_size(full) == 0

    case.change_a_little(url, 50)
    inc = run(repo, case, url, "incremental")
    assert inc.reused_from is None and inc.parent == same.id and inc.chain == full.chain
    added = inc.added_size(same)
    assert 0 < added < 0.25 * full.stored_size, f"incremental added {added} of a {full.stored_size} full"
    state_after_inc = case.engine(url).table_stats()

    case.change_a_little(url, 80)
    diff = run(repo, case, url, "differential")
    assert diff.kind == "differential" and diff.parent == full.id and diff.chain == full.chain
    assert diff.added_size(full) < 0.25 * full.stored_size

    # every snapshot restores on its own to the state it recorded
    for m, expected in ((full, full.tables), (inc, state_after_inc), (diff, case.engine(url).table_stats())):
        target = case.new_target(tmp_path)
        restore_snapshot(repo, m.id, case.engine(target))
        assert case.engine(target).table_stats() == expected == m.tables


def test_incremental_without_a_full_starts_one(case: EngineCase, repo_path: Path, tmp_path: Path) -> None:
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    url = case.create_source(tmp_path)
    engine = case.engine(url)
    for kind in ("incremental", "differential"):
        plan = plan_backup(repo, engine, kind, "a" * 32)
        assert plan.kind == "full" and plan.chain == "a" * 32 and plan.note and "starts a new chain" in plan.note
    m = run(repo, case, url, "incremental")
    assert m.kind == "full" and m.chain == m.id


def test_full_never_reuses_another_chain(case: EngineCase, repo_path: Path, tmp_path: Path) -> None:
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    url = case.create_source(tmp_path)
    a = run(repo, case, url, "full")
    b = run(repo, case, url, "full")
    assert a.chain != b.chain and b.reused_from is None
    assert set(repo.chain_chunks(b.chain)) == {c.id for s in b.streams for c in s.chunks}


def test_unchanged_postgres_tables_are_not_read(pg_available: None, repo_path: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.engines.cases import PostgresCase
    from vaultflow.engines.postgres.engine import PostgresEngine

    case = PostgresCase()
    try:
        repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
        url = case.create_source(tmp_path)
        full = run(repo, case, url, "full")
        case.change_a_little(url, 10)  # orders and ledger_a change; the connection closes, so counters flush

        read: list[str] = []
        real = PostgresEngine._copy_out

        def recording(self: PostgresEngine, t: object, snapshot: str | None, timeout: float | None) -> object:
            read.append(f"{t.schema}.{t.name}")  # type: ignore[attr-defined]
            return real(self, t, snapshot, timeout)  # type: ignore[arg-type]

        monkeypatch.setattr(PostgresEngine, "_copy_out", recording)
        inc = run(repo, case, url, "incremental")
        assert sorted(read) == ["public.ledger_a", "public.orders"], read
        before = {s.name: s for s in full.streams}
        after = {s.name: s for s in inc.streams}
        assert after.keys() == before.keys()
        assert after["table/public.customers"] == before["table/public.customers"]
        assert after["table/public.orders"] != before["table/public.orders"]
        monkeypatch.undo()
        assert inc.tables == case.engine(url).table_stats()
        target = case.new_target(tmp_path)
        restore_snapshot(repo, inc.id, case.engine(target))
        assert case.engine(target).table_stats() == inc.tables
    finally:
        case.cleanup()


def test_fingerprint_sees_a_transaction_that_was_open(pg_database: object) -> None:
    import psycopg

    from tests.conftest import pg_url
    from vaultflow.engines import engine_from_url

    db = pg_database()  # type: ignore[operator]
    engine = engine_from_url(pg_url(db))
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=db) as c:
        c.execute("CREATE TABLE t (v int)")
        c.commit()
        c.execute("INSERT INTO t VALUES (1)")  # holds a transaction id, not committed yet
        while_open = engine.fingerprint()
        c.commit()
    assert engine.fingerprint() != while_open, "a commit of a transaction open at fingerprint time went unseen"


def test_no_carry_over_across_different_table_subsets(pg_available: None, repo_path: Path, tmp_path: Path) -> None:
    from tests.engines.cases import PostgresCase

    case = PostgresCase()
    try:
        repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
        url = case.create_source(tmp_path)
        engine = case.engine(url)
        sid = new_object_id()
        subset = backup_database(engine, repo, BackupRequest(include_tables=["orders"]), snapshot_id=sid)
        assert [t.name for t in subset.tables] == ["orders"]
        nid = new_object_id()
        whole = backup_database(engine, repo, snapshot_id=nid, plan=plan_backup(repo, engine, "incremental", nid))
        assert whole.reused_from is None and "customers" in {t.name for t in whole.tables}
    finally:
        case.cleanup()


def test_operations_import_no_engine_package() -> None:
    """vaultflow/operations/ works through the engine contract (engines/base.py) only: no
    module there imports an engine's own package (vaultflow.engines.postgres, ...)."""
    import ast

    import vaultflow

    engines_dir = Path(vaultflow.__file__).parent / "engines"
    packages = {p.name for p in engines_dir.iterdir() if (p / "__init__.py").exists()}
    assert "postgres" in packages
    found = []
    for path in sorted((engines_dir.parent / "operations").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from vaultflow.engines import postgres` names the package as an imported name
                modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            found += [f"{path.name}: {m}" for m in modules
                      if m.startswith("vaultflow.engines.") and m.split(".")[2] in packages]
    assert found == []
