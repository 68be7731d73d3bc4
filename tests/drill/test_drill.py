"""Restore drills against real PostgreSQL and SQLite: pass, fail naming table and check, and
never leave the scratch database behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, pg_url, port_open
from tests.engines.cases import EngineCase
from vaultflow.drill import UserSuite, load_suites, run_drill, scratch_name
from vaultflow.engines import DatabaseEngine, engine_from_url
from vaultflow.engines.sqlite.engine import SqliteEngine
from vaultflow.errors import ConnectionFailed, InputError
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, SnapshotManifest, new_object_id
from vaultflow.requests import BackupRequest, DrillRequest
from vaultflow.storage import LocalStore


def _backup(case: EngineCase, tmp_path: Path, repo_path: Path) -> tuple[Repository, SnapshotManifest]:
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    source = case.engine(case.create_source(tmp_path))
    return repo, backup_database(source, repo, snapshot_id=new_object_id())


def _scratch_server(case: EngineCase, tmp_path: Path) -> DatabaseEngine:
    """The case's server (a not yet existing database on it): drills name their own."""
    return case.engine(case.new_target(tmp_path))


def _url(case: EngineCase, tmp_path: Path, scratch: DatabaseEngine) -> str:
    """The URL of the scratch database, built like the case's own URLs."""
    return case.new_target(tmp_path).rsplit("/", 1)[0] + "/" + scratch.database


def _gone(server: DatabaseEngine, manifest: SnapshotManifest) -> bool:
    return not server.with_database(scratch_name(manifest)).database_exists()


def test_drill_passes(case: EngineCase, tmp_path: Path, repo_path: Path) -> None:
    repo, manifest = _backup(case, tmp_path, repo_path)
    assert manifest.schema_inventory is not None and manifest.schema_inventory.tables
    server = _scratch_server(case, tmp_path)
    report = run_drill(repo, manifest.id, server)
    assert report.passed, [c.line() for c in report.failures()] or report.error
    kinds = {c.check for c in report.checks}
    assert kinds == {"rows", "checksum", "schema", "expectation"}
    assert not [c for c in report.checks if c.status == "skipped"]
    enforced = [c for c in report.checks if (c.observed or "").startswith("enforced:")]
    assert enforced and {c.suite for c in enforced} == {"default"}
    assert report.restore_seconds is not None and report.restore_seconds > 0
    assert report.scratch_database == scratch_name(manifest) and report.scratch_database.startswith(
        "vaultflow_drill_")
    assert _gone(server, manifest)


def test_drill_fails_naming_table_and_check_when_restored_data_differs(
        case: EngineCase, tmp_path: Path, repo_path: Path) -> None:
    repo, manifest = _backup(case, tmp_path, repo_path)
    server = _scratch_server(case, tmp_path)
    report = run_drill(repo, manifest.id, server,
                       after_restore=lambda scratch: case.change_a_little(_url(case, tmp_path, scratch), 3))
    assert not report.passed
    failed = {(c.object.rsplit(".", 1)[-1], c.name) for c in report.failures()}
    assert ("orders", "content checksum") in failed
    assert ("ledger_a", "row count") in failed
    assert ("ledger_a", "expect_table_row_count_to_equal") in failed
    assert "failed: " in report.summary() and "more failed check(s)" in report.summary()
    assert _gone(server, manifest)


def test_scratch_dropped_when_the_drill_is_interrupted(case: EngineCase, tmp_path: Path, repo_path: Path) -> None:
    repo, manifest = _backup(case, tmp_path, repo_path)
    server = _scratch_server(case, tmp_path)
    seen: list[bool] = []

    def interrupt(scratch: DatabaseEngine) -> None:
        seen.append(scratch.database_exists())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_drill(repo, manifest.id, server, after_restore=interrupt)
    assert seen == [True]
    assert _gone(server, manifest)


def test_scratch_name_collision_is_refused(case: EngineCase, tmp_path: Path, repo_path: Path) -> None:
    repo, manifest = _backup(case, tmp_path, repo_path)
    server = _scratch_server(case, tmp_path)
    existing = server.with_database(scratch_name(manifest))
    restore_snapshot(repo, manifest.id, existing)  # someone else's database under the drill's name
    try:
        with pytest.raises(InputError, match="already exists"):
            run_drill(repo, manifest.id, server)
        assert existing.database_exists(), "a drill must never drop a database it did not create"
    finally:
        existing.drop_database()


def test_unreachable_scratch_server(tmp_path: Path, repo_path: Path, pg_available: None) -> None:
    from tests.engines.cases import PostgresCase

    case = PostgresCase()
    try:
        repo, manifest = _backup(case, tmp_path, repo_path)
        assert not port_open("127.0.0.1", 1)
        with pytest.raises(ConnectionFailed, match="127.0.0.1:1"):
            run_drill(repo, manifest.id, engine_from_url("postgresql://postgres@127.0.0.1:1/postgres"))
    finally:
        case.cleanup()


def test_restore_failing_halfway_fails_the_drill_names_the_table_and_drops_scratch(
        tmp_path: Path, repo_path: Path, pg_available: None) -> None:
    from tests.engines.cases import PostgresCase

    case = PostgresCase()
    try:
        repo, manifest = _backup(case, tmp_path, repo_path)
        orders = manifest.stream("table/public.orders")
        chunk = orders.chunks[-1].id
        (repo_path / "chains" / manifest.chain / "chunks" / chunk[:2] / chunk).unlink()
        server = engine_from_url(pg_url("postgres"))
        report = run_drill(repo, manifest.id, server)
        assert not report.passed and report.error is not None
        assert "table public.orders" in report.error
        assert report.restore_seconds is None and report.checks == []
        assert _gone(server, manifest)
    finally:
        case.cleanup()


def _suite_dir(tmp_path: Path, body: dict[str, object], name: str = "suite.json") -> Path:
    d = tmp_path / "suites"
    d.mkdir(exist_ok=True)
    (d / name).write_text(json.dumps(body))
    return d


@pytest.mark.parametrize(("expectation", "message"), [
    ({"type": "expect_column_values_to_not_be_null", "table": "no_such_table", "kwargs": {"column": "id"}},
     "table 'no_such_table' does not exist"),
    ({"type": "expect_column_values_to_be_between", "table": "orders",
      "kwargs": {"column": "amountt", "min_value": 0}}, "column 'amountt' does not exist in table main.orders"),
    ({"type": "expect_column_values_to_be_between", "table": "orders", "kwargs": {"column": "amount"}},
     "invalid arguments"),
    ({"type": "expect_everything_to_be_fine", "table": "orders", "kwargs": {}}, "unknown expectation type"),
])
def test_bad_user_suite_is_refused_before_restoring(tmp_path: Path, repo_path: Path, expectation: dict[str, object],
                                                    message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.engines.cases import SqliteCase

    repo, manifest = _backup(SqliteCase(), tmp_path, repo_path)
    suites = load_suites(_suite_dir(tmp_path, {"name": "bad", "expectations": [expectation]}))
    server = _scratch_server(SqliteCase(), tmp_path)
    restored: list[str] = []
    monkeypatch.setattr(SqliteEngine, "restore", lambda self, *a, **k: restored.append(self.database))
    with pytest.raises(InputError, match=message) as err:
        run_drill(repo, manifest.id, server, suites=suites)
    assert "suite 'bad'" in str(err.value)
    assert restored == [] and _gone(server, manifest)


def test_user_suite_from_yaml_passes_and_fails_by_expectation(tmp_path: Path, repo_path: Path) -> None:
    from tests.engines.cases import SqliteCase

    repo, manifest = _backup(SqliteCase(), tmp_path, repo_path)
    d = tmp_path / "suites"
    d.mkdir()
    (d / "orders.yaml").write_text(
        "name: orders-sanity\ntable: orders\nexpectations:\n"
        "  - type: expect_column_values_to_be_between\n"
        "    kwargs: {column: amount, min_value: 0, max_value: 1000000}\n")
    (d / "strict.yml").write_text(
        "database: src-*\nexpectations:\n"
        "  - type: expect_column_values_to_be_between\n    table: main.orders\n"
        "    kwargs: {column: amount, min_value: 0, max_value: 10}\n")
    (d / "other-db.json").write_text(json.dumps({"database": "billing", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "table": "invoices", "kwargs": {"column": "id"}}]}))
    suites = load_suites(d)
    assert [s.name for s in suites] == ["orders-sanity", "other-db", "strict"]
    report = run_drill(repo, manifest.id, _scratch_server(SqliteCase(), tmp_path), suites=suites)
    by_suite = {c.suite: c for c in report.checks if c.suite in ("orders-sanity", "strict")}
    assert by_suite["orders-sanity"].status == "passed"
    assert by_suite["strict"].status == "failed" and by_suite["strict"].object == "main.orders"
    assert not report.passed and "expect_column_values_to_be_between(amount) (suite strict)" in report.summary()


def test_snapshot_without_schema_inventory_still_drills(tmp_path: Path, repo_path: Path) -> None:
    from tests.engines.cases import SqliteCase

    repo, manifest = _backup(SqliteCase(), tmp_path, repo_path)
    old = SnapshotManifest.model_validate(
        {k: v for k, v in json.loads(manifest.model_dump_json(by_alias=True)).items() if k != "schema_inventory"}
        | {"id": new_object_id()})
    repo.save_manifest(old)
    report = run_drill(repo, old.id, _scratch_server(SqliteCase(), tmp_path), suites=[
        UserSuite(name="u", source="inline", database=None, expectations=[
            {"type": "expect_column_values_to_not_be_null", "table": "orders", "kwargs": {"column": "anything"}}])])
    assert [c.status for c in report.checks if c.check == "schema"] == ["skipped"]
    assert report.failures() and report.failures()[0].suite == "u"  # the column is unknown only at run time


def test_scan_constraints_has_great_expectations_scan_enforced_expectations(tmp_path: Path, repo_path: Path) -> None:
    from tests.engines.cases import SqliteCase

    repo, manifest = _backup(SqliteCase(), tmp_path, repo_path)
    report = run_drill(repo, manifest.id, _scratch_server(SqliteCase(), tmp_path), DrillRequest(scan_constraints=True))
    assert report.passed
    unique = [c for c in report.checks if c.name.startswith("expect_column_values_to_be_unique")]
    assert unique and not any((c.observed or "").startswith("enforced:") for c in unique)
    assert set(report.check_seconds) == {"tables", "schema", "expectations"}


def test_a_scratch_database_that_cannot_be_dropped_fails_the_drill(tmp_path: Path, repo_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.reporting import drill_markdown
    from tests.engines.cases import SqliteCase
    from vaultflow.errors import StorageUnwritable

    repo, manifest = _backup(SqliteCase(), tmp_path, repo_path)

    def refuse(self: SqliteEngine) -> None:
        raise StorageUnwritable(f"cannot remove {self.path}: Permission denied", "remove it by hand")

    monkeypatch.setattr(SqliteEngine, "drop_database", refuse)
    report = run_drill(repo, manifest.id, _scratch_server(SqliteCase(), tmp_path))
    assert not report.failures() and not report.scratch_dropped and not report.passed
    assert report.error and f"could not drop scratch database {scratch_name(manifest)!r}" in report.error
    assert "NOT dropped" in drill_markdown(report)


def test_drill_of_a_table_subset_snapshot_checks_the_tables_it_kept(tmp_path: Path, repo_path: Path,
                                                                     pg_available: None) -> None:
    from tests.engines.cases import PostgresCase

    case = PostgresCase()
    try:
        repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
        source = case.engine(case.create_source(tmp_path))
        manifest = backup_database(source, repo, BackupRequest(exclude_tables=["public.events_*"]),
                                   snapshot_id=new_object_id())
        report = run_drill(repo, manifest.id, _scratch_server(case, tmp_path))
        assert report.passed, report.summary()
        assert not any("events_2025" in c.object for c in report.checks if c.check in ("rows", "checksum"))
    finally:
        case.cleanup()
