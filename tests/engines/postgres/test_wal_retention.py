"""WAL retention and gaps through PostgreSQL's LogArchive hook: on synthetic segments (no server), and end
to end on a private archiving cluster (tests/engines/postgres/conftest.py): two base backups with WAL
between, a prune that keeps only the newer, and restores on either side of it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tests.engines.postgres.conftest import ArchivingCluster, open_repo, switch_and_wait, wal_command
from tests.engines.postgres.test_pitr import cli, one_error_line, started_copy
from tests.engines.postgres.wal_segments import SEGMENT_SIZE, fake_data_directory, segment_bytes, segment_name
from vaultflow.engines.postgres.basebackup import format_lsn, parse_lsn
from vaultflow.engines.postgres.wal import push_wal
from vaultflow.engines.postgres.wal_retention import WAL_ARCHIVE
from vaultflow.operations.prune import prune
from vaultflow.operations.retention import RetentionPolicy
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


def _archived(cluster: ArchivingCluster, sysid: int) -> set[str]:
    """Every archived WAL file of the cluster, as PostgreSQL names it (segments in upper hex)."""
    root = cluster.repo / "wal" / str(sysid)
    return {p.name.upper() if "." not in p.name else p.name for p in root.rglob("*") if p.is_file()}


@pytest.mark.timeout(600)
def test_prune_keeping_the_newer_base_backup_drops_the_older_wal_and_both_restores_behave(
        archiving_cluster: ArchivingCluster) -> None:
    cluster = archiving_cluster
    server = f"postgresql://postgres@127.0.0.1:{cluster.port}"
    switch_and_wait(cluster, switches=1)
    with cluster.connect() as c:
        c.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
    older = cli(cluster, "pitr", "base-backup", server, "--json")
    assert older.returncode == 0, older.stdout + older.stderr
    first = json.loads(older.stdout)
    with cluster.connect() as c:
        time.sleep(1.2)
        c.execute("INSERT INTO kept VALUES (1, 'between the base backups')")
        between = c.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    switch_and_wait(cluster, switches=3)  # WAL that only the older base backup needs
    newer = cli(cluster, "pitr", "base-backup", server, "--new-chain", "--json")  # a full: the older can go
    assert newer.returncode == 0, newer.stdout + newer.stderr
    second = json.loads(newer.stdout)
    with cluster.connect() as c:
        time.sleep(1.2)
        c.execute("INSERT INTO kept VALUES (2, 'after the newer base backup')")
        after = c.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(1.2)
        c.execute("INSERT INTO kept VALUES (3, 'later')")
    switch_and_wait(cluster, switches=2)

    sysid = int(second["system_identifier"])
    segment = 16 << 20
    cutoff = parse_lsn(second["start_lsn"]) // segment

    def number(name: str) -> int:
        return int(name[8:16], 16) * 256 + int(name[16:24], 16)

    before = _archived(cluster, sysid)
    older_wal = {n for n in before if number(n) < cutoff}
    assert len([n for n in older_wal if len(n) == 24]) >= 4, sorted(before)  # the WAL between the two backups

    plan = prune(open_repo(cluster), RetentionPolicy(keep_last=1), datetime.now(UTC))
    assert [m.id for m in plan.forget] == [first["snapshot"]]
    left = _archived(cluster, sysid)
    assert older_wal and left == before - older_wal, sorted(before ^ left)
    assert {n for n in left if len(n) == 24} == {n for n in before if len(n) == 24 and number(n) >= cutoff}
    history = next(n for n in before if n.endswith(".backup") and number(n) == cutoff)
    assert history in left  # the kept base backup's backup history file
    repo = open_repo(cluster)
    assert WAL_ARCHIVE.problems(repo, list(repo.manifests()), deep=True) == []

    shown = cli(cluster, "pitr", "window", str(sysid), "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr  # no gap: everything the kept backup needs is there
    (window,) = json.loads(shown.stdout)
    assert [b["snapshot"] for b in window["base_backups"]] == [second["snapshot"]] and window["gaps"] == []

    pgdata = cluster.base / "restores" / "after-prune"
    restored = cli(cluster, "pitr", "restore", str(sysid), "--to-time", (after + timedelta(seconds=0.6)).isoformat(),
                   "--pgdata", str(pgdata), "--wal-command", str(wal_command()), "--passphrase-file",
                   str(cluster.passphrase_file), "--json")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert json.loads(restored.stdout)["snapshot"] == second["snapshot"]
    with started_copy(cluster, pgdata) as copy:
        assert [r[0] for r in copy.execute("SELECT id FROM kept ORDER BY id").fetchall()] == [1, 2]

    gone = cluster.base / "restores" / "before-kept"
    early = cli(cluster, "pitr", "restore", str(sysid), "--to-time", between.isoformat(), "--pgdata", str(gone),
                "--wal-command", str(wal_command()), "--passphrase-file", str(cluster.passphrase_file))
    one_error_line(early, 2, "before the end of its oldest base backup", "can be restored to")
    assert not gone.exists()
