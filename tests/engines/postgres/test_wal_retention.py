"""WAL retention and gaps through PostgreSQL's LogArchive hook, on synthetic segments (no server)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import PASSPHRASE
from tests.engines.postgres.wal_segments import SEGMENT_SIZE, fake_data_directory, segment_bytes, segment_name
from vaultflow.engines.postgres.basebackup import format_lsn
from vaultflow.engines.postgres.wal import push_wal
from vaultflow.engines.postgres.wal_retention import WAL_ARCHIVE
from vaultflow.repository import Repository
from vaultflow.repository.manifest import BaseBackupInfo, SnapshotManifest
from vaultflow.storage import LocalStore

SYSID = 7_000_000_000_000_000_888


def _base(letter: str, start: int, stop: int) -> SnapshotManifest:
    now = datetime.now(UTC)
    info = BaseBackupInfo(system_identifier=SYSID, timeline=1, start_lsn=format_lsn(start * SEGMENT_SIZE + 40),
                          stop_lsn=format_lsn(stop * SEGMENT_SIZE + 400), start_time=now, stop_time=now,
                          server_version="15.20", wal_segment_size=SEGMENT_SIZE, backup_label="",
                          backup_manifest=True)
    return SnapshotManifest(id=letter * 32, chain=letter * 32, engine="postgresql", server="127.0.0.1:5999",
                            database="(cluster)", started_at=now, finished_at=now, hostname="h",
                            vaultflow_version="0", streams=[], base_backup=info)


def test_wal_before_the_oldest_kept_base_backup_goes_and_a_deleted_segment_is_a_gap_verify_names(
        tmp_path: Path) -> None:
    repo = Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    data = fake_data_directory(tmp_path / "data", SYSID)
    for segno in range(1, 11):
        path = data / "pg_wal" / segment_name(1, segno)
        path.write_bytes(segment_bytes(SYSID, 1, segno))
        push_wal(repo, path)
    first, second = _base("a", 2, 3), _base("b", 6, 7)

    none_kept = WAL_ARCHIVE.expendable(repo, [])
    assert none_kept.expendable == {} and "no kept base backup" in none_kept.notes[0]
    both = WAL_ARCHIVE.expendable(repo, [first, second])
    assert sorted(k.rpartition("/")[2].upper() for k in both.expendable) == [segment_name(1, 1)]
    only_second = WAL_ARCHIVE.expendable(repo, [second])
    assert sorted(k.rpartition("/")[2].upper() for k in only_second.expendable) == [
        segment_name(1, n) for n in range(1, 6)]
    for key in only_second.expendable:
        repo.store.delete(key)
    assert WAL_ARCHIVE.problems(repo, [second], deep=True) == []  # the second still reaches the newest segment

    victim = f"wal/{SYSID}/00000001/{segment_name(1, 9).lower()}"
    repo.store.delete(victim)
    (gap,) = WAL_ARCHIVE.problems(repo, [second], deep=False)
    assert gap.first == segment_name(1, 9) and "no restore reaches past" in gap.message
