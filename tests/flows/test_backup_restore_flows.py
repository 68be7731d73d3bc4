"""The backup and restore flows under a real Prefect API (the session's test harness)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import SecretStr

import tasks.backup
from flows.backup import backup
from flows.restore import restore
from tests.conftest import PASSPHRASE, port_open
from vaultflow.catalog import Catalog, SnapshotStatus
from vaultflow.errors import ConnectionFailed, DatabaseNotFound, SnapshotNotFound
from vaultflow.repository import Repository
from vaultflow.sample_data import compare, create
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def sample_db(tmp_path: Path) -> Path:
    return create(tmp_path / "sample.db", rows=3000)


def test_backup_and_restore_flows(sample_db: Path, repo_path: Path, tmp_path: Path) -> None:
    result = backup(source=f"sqlite:///{sample_db}", repository=str(repo_path))
    sid = str(result["snapshot_id"])
    assert Repository.open(LocalStore(repo_path), PASSPHRASE).snapshot_ids() == [sid]
    rows = Catalog().snapshots()
    assert [(r.id, r.status) for r in rows] == [(sid, SnapshotStatus.SUCCEEDED)]
    assert rows[0].logical_size == result["logical_bytes"] and rows[0].stored_size

    target = tmp_path / "restored.db"
    restored = restore(snapshot=sid[:8], target=f"sqlite:///{target}", repository=str(repo_path))
    assert restored["snapshot_id"] == sid
    assert compare(sample_db, target) == []


def test_summary_artifact_is_published(sample_db: Path, repo_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    result = backup(source=f"sqlite:///{sample_db}", repository=str(repo_path))

    async def read(key: str) -> list[object]:
        async with get_client() as client:
            return list(await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))))

    artifacts = asyncio.run(read("vaultflow-backup-summary"))
    assert any(str(result["snapshot"]) in str(a.data) for a in artifacts)  # type: ignore[attr-defined]
    stats = asyncio.run(read("vaultflow-stats"))
    assert any("sample.db" in str(a.data) and "dedup_ratio" in str(a.data) for a in stats)  # type: ignore[attr-defined]


def test_permanent_error_fails_once_and_is_recorded(monkeypatch: pytest.MonkeyPatch, repo_path: Path,
                                                    pg_available: None) -> None:
    calls = count_dump_attempts(monkeypatch)
    with pytest.raises(DatabaseNotFound):
        backup(source="postgresql://postgres@127.0.0.1:5432/vft_does_not_exist", repository=str(repo_path))
    assert calls == [1], "a permanent error must not be retried"
    (rec,) = Catalog().snapshots()
    assert rec.status == SnapshotStatus.FAILED and "does not exist" in (rec.error or "")
    assert Repository.open(LocalStore(repo_path), PASSPHRASE).snapshot_ids() == []


def test_transient_error_is_retried(monkeypatch: pytest.MonkeyPatch, repo_path: Path) -> None:
    port = 1
    assert not port_open("127.0.0.1", port)
    calls = count_dump_attempts(monkeypatch)
    with pytest.raises(ConnectionFailed):
        backup(source=f"postgresql://postgres@127.0.0.1:{port}/x", repository=str(repo_path))
    assert calls == [3], "a transient error is tried three times (two retries)"
    assert Catalog().snapshots()[0].status == SnapshotStatus.FAILED


def test_unknown_snapshot(repo_path: Path, tmp_path: Path) -> None:
    with pytest.raises(SnapshotNotFound):
        restore(snapshot="deadbeef", target=f"sqlite:///{tmp_path / 'x.db'}", repository=str(repo_path))
    assert not (tmp_path / "x.db").exists()


def test_blocks_as_source_and_repository(sample_db: Path, repo_path: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks import BackupRepository, SqliteDatabase

    monkeypatch.delenv("VAULTFLOW_PASSPHRASE")
    SqliteDatabase(path=str(sample_db)).save("demo-sqlite", overwrite=True)
    BackupRepository(location=str(repo_path), passphrase=SecretStr(PASSPHRASE)).save("demo-repo", overwrite=True)
    result = backup(source="demo-sqlite", repository="demo-repo")
    assert result["database"] == "sample.db"
    restore(snapshot=str(result["snapshot"]), target=f"sqlite:///{tmp_path / 'r.db'}", repository="demo-repo")
    assert compare(sample_db, tmp_path / "r.db") == []


def count_dump_attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls into the core backup and drop retry delays to zero for the test."""
    calls = [0]
    real = tasks.backup.backup_database

    def counting(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tasks.backup, "backup_database", counting)
    import flows.backup

    monkeypatch.setattr(flows.backup, "dump_to_repository",
                        tasks.backup.dump_to_repository.with_options(retry_delay_seconds=0))
    return calls


def test_incremental_flow_with_nothing_changed_stores_nothing(sample_db: Path, repo_path: Path) -> None:
    full = backup(source=f"sqlite:///{sample_db}", repository=str(repo_path), kind="full")
    inc = backup(source=f"sqlite:///{sample_db}", repository=str(repo_path), kind="incremental")
    assert inc["kind"] == "incremental" and inc["reused_from"] == full["snapshot_id"]
    assert inc["stored_bytes"] == 0 and inc["parent"] == full["snapshot_id"]
    rows = {r.id: r for r in Catalog().snapshots()}
    assert rows[str(inc["snapshot_id"])].stored_size == 0 and rows[str(inc["snapshot_id"])].kind == "incremental"


def test_first_incremental_says_it_starts_a_full(sample_db: Path, repo_path: Path) -> None:
    result = backup(source=f"sqlite:///{sample_db}", repository=str(repo_path), kind="incremental")
    assert result["kind"] == "full" and "starts a new chain" in str(result["note"])
