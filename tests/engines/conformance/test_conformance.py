"""The engine contract, checked the same way for every engine of the registry.

Listing databases; a backup/restore round trip of the shared nasty fixture through the core
operations; stable table statistics; change fingerprints; errors mapped per failure; and
each capability: exercised where the engine declares it, refused in one line naming the
engine and the alternative where it does not, with nothing written. SQL Server runs through
its stand-in, NOT A REAL SQL SERVER (ids say so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tests.engines.conformance.subjects import SUBJECTS, EngineSubject
from vaultflow.drill.run import run_drill
from vaultflow.engines import DatabaseEngine
from vaultflow.engines.base import DroppableDatabase, ServerWideObjects
from vaultflow.engines.capabilities import Capabilities, CapabilityMissing
from vaultflow.engines.registry import EngineSpec, engines, server_from_url, spec
from vaultflow.errors import InputError, TransientError, VaultflowError
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import export_snapshot, restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.requests import BackupRequest, RestoreRequest
from vaultflow.storage import LocalStore


@pytest.fixture(params=sorted(SUBJECTS))
def subject(request: pytest.FixtureRequest) -> Iterator[EngineSubject]:
    made = SUBJECTS[request.param]()
    if made.service_fixture:
        request.getfixturevalue(made.service_fixture)
    yield made
    made.cleanup()


@pytest.fixture
def repo(repo_path: Path) -> Repository:
    return Repository.open(LocalStore(repo_path), PASSPHRASE)


def engine_spec(subject: EngineSubject) -> EngineSpec:
    return spec(subject.engine_name)


def backed_up(subject: EngineSubject, repo: Repository, tmp_path: Path) -> tuple[DatabaseEngine, SnapshotManifest]:
    source = subject.create_source(tmp_path)
    return source, backup_database(source, repo, snapshot_id=new_object_id())


def assert_refused(exc: pytest.ExceptionInfo[VaultflowError], subject: EngineSubject) -> None:
    """One line naming the engine, with an alternative."""
    line = exc.value.line()
    assert "\n" not in line
    assert engine_spec(subject).title in exc.value.what, line
    assert exc.value.fix, line


# -- coverage guards ---------------------------------------------------------------------


def test_every_registered_engine_is_a_subject() -> None:
    assert sorted(s.engine_name for s in (c() for c in SUBJECTS.values())) == sorted(e.name for e in engines()), (
        "a registered engine has no conformance subject: add one to tests/engines/conformance/subjects.py")


@pytest.mark.parametrize("declared", engines(), ids=lambda e: e.name)
def test_optional_parts_are_there_exactly_when_declared(declared: EngineSpec) -> None:
    """An engine class has drop_database / globals_source+restore_globals exactly when its
    spec declares drills / globals: no hook that only refuses, none missing."""
    engine_class = declared.load()
    assert issubclass(engine_class, DroppableDatabase) == declared.capabilities.drills, declared.name
    assert issubclass(engine_class, ServerWideObjects) == declared.capabilities.globals, declared.name


# -- the base contract -------------------------------------------------------------------


def test_lists_its_databases(subject: EngineSubject, tmp_path: Path) -> None:
    source = subject.create_source(tmp_path)
    assert source.database in source.list_databases()
    assert source.database_exists()
    assert not subject.new_target(tmp_path).database_exists()


def test_round_trip_of_the_nasty_fixture(subject: EngineSubject, repo: Repository, tmp_path: Path) -> None:
    source, manifest = backed_up(subject, repo, tmp_path)
    source_stats = source.table_stats()
    assert manifest.tables == source_stats
    target = subject.new_target(tmp_path)
    restore_snapshot(repo, manifest.id, target)
    assert subject.content(source) == subject.expected_content()
    assert subject.content(target) == subject.content(source)
    assert target.table_stats() == source_stats


def test_table_statistics_are_stable(subject: EngineSubject, tmp_path: Path) -> None:
    source = subject.create_source(tmp_path)
    first = source.table_stats()
    assert source.table_stats() == first
    assert {t.name for t in first} == subject.tables


def test_failures_map_to_their_errors(subject: EngineSubject, repo: Repository, tmp_path: Path) -> None:
    failures = subject.failures(tmp_path)
    assert failures
    for what, (engine, expected) in failures.items():
        with pytest.raises(VaultflowError) as exc:
            backup_database(engine, repo, snapshot_id=new_object_id())
        assert type(exc.value) is expected, f"{what}: {exc.value.line()}"
        assert exc.value.transient == issubclass(expected, TransientError), what
        assert "\n" not in exc.value.line() and exc.value.fix, what
        assert repo.snapshot_ids() == [], what


# -- capabilities ------------------------------------------------------------------------
# One check per Capabilities field: (subject, repo, tmp_path, declared) -> None.

CapabilityCheck = Callable[[EngineSubject, Repository, Path, bool], None]


def check_change_fingerprint(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
    source = subject.create_source(tmp_path)
    before = source.fingerprint()
    if not declared:
        assert before is None  # so every incremental dumps again
        return
    assert before is not None
    assert subject.unchanged_fingerprints_agree(before, source.fingerprint() or "")
    source.table_stats()  # reading changes nothing
    assert subject.unchanged_fingerprints_agree(before, source.fingerprint() or "")
    subject.write(source)
    assert source.fingerprint() != before


def check_table_subsets(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
    source = subject.create_source(tmp_path)
    table = subject.nasty_table(source)
    if declared:
        manifest = backup_database(source, repo, BackupRequest(exclude_tables=[table]), snapshot_id=new_object_id())
        assert manifest.table_filter == [f"exclude:{table}"]
        return
    with pytest.raises(CapabilityMissing) as exc:
        backup_database(source, repo, BackupRequest(exclude_tables=[table]), snapshot_id=new_object_id())
    assert_refused(exc, subject)
    assert repo.snapshot_ids() == []


RestoreOptions = Callable[[EngineSubject, DatabaseEngine], RestoreRequest]


def _restore_with(options_for: RestoreOptions, verify: Callable[[DatabaseEngine, DatabaseEngine], None]
                  ) -> CapabilityCheck:
    """A check restoring with the options a capability governs: it works where declared,
    and is refused without creating the target where not."""
    def check(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
        source, manifest = backed_up(subject, repo, tmp_path)
        target = subject.new_target(tmp_path)
        options = options_for(subject, source)
        if declared:
            restore_snapshot(repo, manifest.id, target, options)
            verify(source, target)
            return
        with pytest.raises(CapabilityMissing) as exc:
            restore_snapshot(repo, manifest.id, target, options)
        assert_refused(exc, subject)
        assert not subject.exists(target)
    return check


def _same_stats(source: DatabaseEngine, target: DatabaseEngine) -> None:
    assert target.table_stats() == source.table_stats()


def _nasty_table_only(source: DatabaseEngine, target: DatabaseEngine) -> None:
    restored = {t.name: t for t in target.table_stats()}
    assert restored["Mixed Case"] == next(t for t in source.table_stats() if t.name == "Mixed Case")
    assert restored["plain"].rows == 0  # its schema is restored, its rows are not


def check_globals(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
    source = subject.create_source(tmp_path)
    if declared:
        manifest = backup_database(source, repo, BackupRequest(include_globals=True), snapshot_id=new_object_id())
        assert "globals" in {s.name for s in manifest.streams}
        target = subject.new_target(tmp_path)
        restore_snapshot(repo, manifest.id, target, RestoreRequest(include_globals=True))
        assert target.table_stats() == source.table_stats()
        return
    with pytest.raises(CapabilityMissing) as exc:
        backup_database(source, repo, BackupRequest(include_globals=True), snapshot_id=new_object_id())
    assert_refused(exc, subject)
    assert repo.snapshot_ids() == []
    manifest = backup_database(source, repo, snapshot_id=new_object_id())
    target = subject.new_target(tmp_path)
    with pytest.raises(CapabilityMissing) as exc:
        restore_snapshot(repo, manifest.id, target, RestoreRequest(include_globals=True))
    assert_refused(exc, subject)
    assert not subject.exists(target)


def check_drills(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
    source, manifest = backed_up(subject, repo, tmp_path)
    scratch_server = subject.scratch_server(tmp_path)
    if declared:
        report = run_drill(repo, manifest.id, scratch_server)
        assert report.passed, (report.error, [c.line() for c in report.failures()])
        assert {c.check for c in report.checks} >= {"rows", "checksum"}
        assert not subject.exists(scratch_server.with_database(report.scratch_database))
        return
    known = set(source.list_databases())
    with pytest.raises(CapabilityMissing) as exc:
        run_drill(repo, manifest.id, scratch_server)
    assert_refused(exc, subject)
    assert set(source.list_databases()) == known  # no scratch database was created


def check_expectations(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
    target = subject.create_source(tmp_path).sqlalchemy_target()
    if not declared:
        assert target is None  # a drill then reports its expectations as not checked
        return
    assert target is not None
    import sqlalchemy

    engine = sqlalchemy.create_engine(target.url, **target.engine_kwargs)  # type: ignore[arg-type]
    try:
        with engine.connect() as c:
            assert c.execute(sqlalchemy.text("SELECT count(*) FROM plain")).scalar() == 40
    finally:
        engine.dispose()


def check_server_locale(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
    _restore_with(lambda s, source: RestoreRequest(server_locale=True), _same_stats)(subject, repo, tmp_path, declared)


def check_discovery(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
    source = subject.create_source(tmp_path)
    if declared:
        assert source.database in source.list_databases()
        return
    with pytest.raises(InputError) as exc:
        server_from_url(engine_spec(subject).url_example)
    assert "\n" not in exc.value.line() and exc.value.fix
    assert engine_spec(subject).schemes[0] in exc.value.what


def check_export(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
    source, manifest = backed_up(subject, repo, tmp_path)
    out = tmp_path / "export.bin"
    if declared:
        export_snapshot(repo, manifest.id, out)
        assert out.stat().st_size > 0
        return
    with pytest.raises(InputError):
        export_snapshot(repo, manifest.id, out)
    assert not out.exists()


def check_skip_unreadable(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
    source = subject.create_source(tmp_path)
    if declared:  # nothing is unreadable in the fixture; tests/engines/files leaves real entries out
        manifest = backup_database(source, repo, BackupRequest(skip_unreadable=True), snapshot_id=new_object_id())
        assert manifest.skipped is None
        return
    with pytest.raises(CapabilityMissing) as exc:
        backup_database(source, repo, BackupRequest(skip_unreadable=True), snapshot_id=new_object_id())
    assert_refused(exc, subject)
    assert repo.snapshot_ids() == []


def check_pitr(subject: EngineSubject, repo: Repository, tmp_path: Path, declared: bool) -> None:
    method = engine_spec(subject).capabilities.pitr
    if not declared:
        with pytest.raises(CapabilityMissing) as exc:
            engine_spec(subject).require("pitr", "give a PostgreSQL server")
        assert_refused(exc, subject)
        return
    assert method == "wal", f"add a check for point-in-time recovery by {method!r}"
    # The readiness check reads the subject's server; the shared one does not archive, so it says so.
    from tests.engines.postgres.wal_segments import fake_data_directory, segment_bytes, segment_name
    from vaultflow.engines.postgres.pitr_check import check_pitr_readiness
    from vaultflow.engines.postgres.wal import fetch_wal, push_wal

    source = subject.create_source(tmp_path)
    readiness = check_pitr_readiness(source)  # type: ignore[arg-type]
    assert {c.name for c in readiness.checks} >= {"wal_level", "archive_mode", "archive_command"}
    data = fake_data_directory(tmp_path / "pgdata", 42)
    segment = data / "pg_wal" / segment_name(1, 3)
    segment.write_bytes(segment_bytes(42, 1, 3))
    assert push_wal(repo, segment).key == f"wal/42/00000001/{segment.name.lower()}"
    fetch_wal(repo, segment.name, data / "pg_wal" / "RECOVERYXLOG")
    assert (data / "pg_wal" / "RECOVERYXLOG").read_bytes() == segment.read_bytes()


CAPABILITY_CHECKS: dict[str, CapabilityCheck] = {
    "change_fingerprint": check_change_fingerprint,
    "table_subsets": check_table_subsets,
    "table_restore": _restore_with(lambda s, source: RestoreRequest(tables=[s.nasty_table(source)]), _nasty_table_only),
    "parallel_restore": _restore_with(lambda s, source: RestoreRequest(jobs=2), _same_stats),
    "globals": check_globals,
    "drills": check_drills,
    "expectations": check_expectations,
    "server_locale": check_server_locale,
    "discovery": check_discovery,
    "export": check_export,
    "pitr": check_pitr,
    "skip_unreadable": check_skip_unreadable,
}
NOT_CHECKED_HERE = {
    "segment_patches": "PostgreSQL only, with its own tests (tests/engines/*postgres*segment*)",
    "archival": "tests/archive runs every archive operation per engine",
}


def test_every_capability_has_a_check() -> None:
    assert sorted([*CAPABILITY_CHECKS, *NOT_CHECKED_HERE]) == sorted(f.name for f in fields(Capabilities))


@pytest.mark.parametrize("capability", sorted(CAPABILITY_CHECKS))
def test_capability_exercised_or_refused(subject: EngineSubject, repo: Repository, tmp_path: Path,
                                         capability: str) -> None:
    declared = engine_spec(subject).capabilities.has(capability)  # type: ignore[arg-type]
    CAPABILITY_CHECKS[capability](subject, repo, tmp_path, declared)
