"""`vaultflow archive / archives / unarchive / purge-archives` as users run them, and the flows
behind them (artifacts, policy blocks)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.archive.cases import MySQLCase, SqliteCase, sample_rows
from tests.cli.test_cli import Cli, one_error_line
from vaultflow.repository import Repository


@pytest.fixture
def sqlite_case(tmp_path: Path) -> SqliteCase:
    case = SqliteCase(tmp_path)
    case.create_table()
    case.insert(sample_rows(50, 10))
    return case


def test_archive_list_unarchive_from_the_cli(cli: Cli, sqlite_case: SqliteCase, repo_path: Path) -> None:
    repo = ["--repo", str(repo_path)]
    before = sqlite_case.rows()
    dry = cli("archive", sqlite_case.url, "--table", "events", "--age-column", "created_at", "--older-than",
              "30d", "--dry-run", *repo)
    assert dry.returncode == 0, dry.stderr
    assert "would archive 50 row(s)" in dry.stdout
    assert len(sqlite_case.rows()) == 60

    done = cli("archive", sqlite_case.url, "--table", "events", "--age-column", "created_at", "--older-than",
               "30d", "--batch-size", "20", "--json", *repo)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rows"] == 50 and len(result["batches"]) == 3
    assert sqlite_case.rows() == before[50:]

    listed = cli("archives", "--json", *repo)
    assert listed.returncode == 0, listed.stderr
    batches = json.loads(listed.stdout)
    assert [b["rows"] for b in batches] == [20, 20, 10]
    assert batches[0]["policy"] == "source.db.events" and batches[0]["age_min"].startswith("2021-03-01")
    table = cli("archives", *repo)
    assert table.returncode == 0 and batches[0]["batch"] in table.stdout

    back = cli("unarchive", *(b["batch"] for b in batches), *repo)
    assert back.returncode == 0, back.stderr
    assert "20 row(s) inserted" in back.stdout
    assert sqlite_case.rows() == before

    purge = cli("purge-archives", "--delete-after-days", "0", "--json", *repo)
    assert purge.returncode == 0, purge.stderr
    assert len(json.loads(purge.stdout)["purged"]) == 3


def test_bad_inputs_end_in_one_line(cli: Cli, sqlite_case: SqliteCase, repo_path: Path) -> None:
    repo = ["--repo", str(repo_path)]
    base = ["archive", sqlite_case.url, "--older-than", "30d", *repo]
    cases = [
        ([*base, "--table", "nope", "--age-column", "created_at"], "does not exist"),
        ([*base, "--table", "events", "--age-column", "gone"], "has no column 'gone'"),
        ([*base, "--table", "events", "--age-column", "note"], "not a date or timestamp"),
        (["archive", sqlite_case.url, "--table", "events", "--age-column", "created_at", "--older-than=-2d", *repo],
         "in the future"),
        (["archive", sqlite_case.url, "--table", "events", "--age-column", "created_at", "--older-than", "soon",
          *repo], "not a duration"),
        (["archive", "postgresql://u:hunter2@127.0.0.1/db", "--table", "t", "--age-column", "c", "--older-than",
          "1d", *repo], "contains a password"),
        (["unarchive", "abcdef0123", *repo], "no archive batch"),
    ]
    for args, expected in cases:
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        line = one_error_line(proc)
        assert expected in line, (args, line)
        assert "hunter2" not in proc.stderr + proc.stdout
    assert len(sqlite_case.rows()) == 60

    sqlite_case.create_table("nokey", key=False)
    proc = cli("archive", sqlite_case.url, "--table", "nokey", "--age-column", "created_at", "--older-than", "1d",
               *repo)
    assert proc.returncode == 2 and "has no primary key" in one_error_line(proc)


def test_archive_flow_with_policy_block_publishes_artifact(prefect_api: str, mysql_available: None,
                                                           repo_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from blocks.archive import ArchivePolicy
    from flows.archive import archive_rows, purge_archives

    case = MySQLCase()
    try:
        case.create_table()
        case.insert(sample_rows(25, 5))
        ArchivePolicy(source=case.url, table="events", age_column="created_at", archive_after_days=30,
                      batch_size=10, delete_after_days=0).save("mysql-events", overwrite=True)
        (result,) = archive_rows(policy_blocks=["mysql-events"], repository=str(repo_path))
        assert result["rows"] == 25 and result["policy"] == "mysql-events"
        assert len(case.rows()) == 5

        async def read() -> list[object]:
            async with get_client() as client:
                return list(await client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["vaultflow-archive-summary"]))))

        assert any("mysql-events" in str(a.data) for a in asyncio.run(read()))  # type: ignore[attr-defined]
        (purged,) = purge_archives(repository=str(repo_path), policy_blocks=["mysql-events"])
        assert len(purged["purged"]) == 3  # type: ignore[arg-type]
        from tests.conftest import PASSPHRASE
        from vaultflow.archive import list_batches
        from vaultflow.storage import LocalStore

        records, _ = list_batches(Repository.open(LocalStore(repo_path), PASSPHRASE))
        assert {r.status.value for r in records} == {"purged"}
    finally:
        case.cleanup()


def test_failing_policy_does_not_stop_the_others_and_emits_events(
        prefect_api: str, sqlite_case: SqliteCase, repo_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.archive
    from blocks.archive import ArchiveRule
    from flows.archive import ArchiveFailed, archive_rows

    events: list[tuple[str, dict[str, object]]] = []
    real_emit = tasks.archive.emit_event

    def recording_emit(event: str, resource: dict[str, str], payload: dict[str, object]) -> object:
        events.append((event, payload))
        return real_emit(event=event, resource=resource, payload=payload)

    monkeypatch.setattr(tasks.archive, "emit_event", recording_emit)
    good = ArchiveRule(source=sqlite_case.url, table="events", age_column="created_at", archive_after_days=30)
    bad = ArchiveRule(source=sqlite_case.url, table="missing", age_column="created_at", archive_after_days=30)
    with pytest.raises(ArchiveFailed, match="1 of 2 archive policies failed: table 'missing'"):
        archive_rows(policies=[bad, good], repository=str(repo_path))
    assert len(sqlite_case.rows()) == 10, "the good policy ran after the bad one failed"
    names = [e for e, _ in events]
    assert names == ["vaultflow.archive.succeeded", "vaultflow.archive.failed"]
    assert events[0][1]["rows"] == 50
    assert "does not exist" in str(events[1][1]["error"])


def _delete_saved_policies() -> None:
    """The harness is shared by the session: policies other tests saved would be 'every saved policy'."""
    from prefect.client.orchestration import get_client

    from tasks.archive import POLICY_SLUG, saved_policy_names

    with get_client(sync_client=True) as client:
        for name in saved_policy_names():
            client.delete_block_document(client.read_block_document_by_name(name, POLICY_SLUG).id)  # type: ignore[arg-type]


def _summary(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> str:
        async with get_client() as client:
            (newest,) = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC,
                limit=1)
            return str(newest.data)

    return asyncio.run(read())


def test_no_policy_named_acts_on_every_saved_policy_block(prefect_api: str, sqlite_case: SqliteCase,
                                                          repo_path: Path) -> None:
    from blocks.archive import ArchivePolicy
    from flows.archive import archive_rows, purge_archives

    _delete_saved_policies()
    # No ArchivePolicy block at all: both complete, saying so in their artifact.
    assert archive_rows(repository=str(repo_path)) == []
    assert "no saved ArchivePolicy blocks: nothing to archive" in _summary("vaultflow-archive-summary")
    assert purge_archives(repository=str(repo_path)) == []
    assert "no saved ArchivePolicy blocks: nothing to purge" in _summary("vaultflow-purge-summary")

    sqlite_case.create_table("audit")
    sqlite_case.insert(sample_rows(30, 4), name="audit")
    ArchivePolicy(source=sqlite_case.url, table="events", age_column="created_at", archive_after_days=30,
                  batch_size=20, delete_after_days=0).save("events-purged", overwrite=True)
    ArchivePolicy(source=sqlite_case.url, table="audit", age_column="created_at", archive_after_days=30,
                  batch_size=20).save("audit-kept", overwrite=True)
    try:
        done = archive_rows(repository=str(repo_path))
        assert sorted((r["policy"], r["rows"]) for r in done) == [("audit-kept", 30), ("events-purged", 50)]
        assert len(sqlite_case.rows()) == 10 and len(sqlite_case.rows("audit")) == 4

        # Each policy's own delete_after_days: events' batches go, audit (none set) keeps its archives.
        (purged,) = purge_archives(repository=str(repo_path))
        assert purged["policy"] == "events-purged" and len(purged["purged"]) == 3  # type: ignore[arg-type]
        assert "policy 'audit-kept' has no delete_after_days" in _summary("vaultflow-purge-summary")
        from tests.conftest import PASSPHRASE
        from vaultflow.archive import list_batches
        from vaultflow.storage import LocalStore

        records, _ = list_batches(Repository.open(LocalStore(repo_path), PASSPHRASE))
        assert sorted((r.policy, r.status.value) for r in records) == [
            ("audit-kept", "archived"), ("audit-kept", "archived"),
            ("events-purged", "purged"), ("events-purged", "purged"), ("events-purged", "purged")]
    finally:
        _delete_saved_policies()
