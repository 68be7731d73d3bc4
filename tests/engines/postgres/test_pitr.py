"""Point-in-time recovery end to end: a private archiving cluster (tests/engines/postgres/conftest.py),
`vaultflow pitr base-backup`, marked writes at three moments, `vaultflow pitr restore` to moments
between them into new data directories that a real server then recovers and promotes, the window
and its gaps, and the refusals (one line each, non-zero exit).

The tests of this module share one cluster and run in file order: the gap test deletes a segment.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PASSPHRASE, ROOT
from tests.engines.postgres.conftest import ArchivingCluster, as_postgres, open_repo, switch_and_wait, wal_command
from tests.engines.postgres.test_errors import free_port, postgres_bin_dir
from vaultflow.engines.postgres.basebackup import TarMemberTap, backup_history_file_name, parse_lsn
from vaultflow.engines.postgres.recovery import RecoveryTarget, parse_target_time
from vaultflow.errors import InputError
from vaultflow.operations.restore import check_target_engine, export_snapshot
from vaultflow.repository.manifest import SnapshotManifest

pytestmark = pytest.mark.timeout(600)


def cli(cluster: ArchivingCluster, *args: str, repo: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAULTFLOW_REPO": str(repo or cluster.repo),
           "VAULTFLOW_PASSPHRASE": PASSPHRASE}
    env.pop("VAULTFLOW_PASSPHRASE_FILE", None)
    return subprocess.run([sys.executable, "-m", "vaultflow.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def one_error_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stdout + result.stderr
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert PASSPHRASE not in result.stderr + result.stdout
    return lines[0]


@dataclass
class Marks:
    """The base backup and the server times right after each marked commit."""

    snapshot: str
    sysid: int
    times: list[datetime]
    xids: list[int]  # the transaction of each marked insert


@pytest.fixture(scope="module")
def marked(archiving_cluster: ArchivingCluster) -> Marks:
    cluster = archiving_cluster
    switch_and_wait(cluster, switches=1)  # something archived: the base backup's archive check has a file to find
    with cluster.connect() as c:
        c.execute("CREATE TABLE marks (id int PRIMARY KEY, note text)")
    backup = cli(cluster, "pitr", "base-backup", f"postgresql://postgres@127.0.0.1:{cluster.port}", "--json")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    row = json.loads(backup.stdout)
    times, xids = [], []
    with cluster.connect() as c:
        for i in (1, 2, 3):
            time.sleep(1.2)
            with c.transaction():
                c.execute("INSERT INTO marks VALUES (%s, %s)", (i, f"mark {i}"))
                xid = c.execute("SELECT pg_current_xact_id()::text").fetchone()
            assert xid is not None
            xids.append(int(str(xid[0])))
            moment = c.execute("SELECT clock_timestamp()").fetchone()
            assert moment is not None
            times.append(moment[0])
            time.sleep(1.2)
            c.execute("SELECT pg_switch_wal()")
    switch_and_wait(cluster, switches=1)
    return Marks(row["snapshot"], int(row["system_identifier"]), times, xids)


@contextmanager
def started_copy(cluster: ArchivingCluster, pgdata: Path) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Start the restored data directory as postgres on a free port, wait until recovery ended and the
    server promoted (pg_is_in_recovery() false); a connection to it. Stopped on leaving."""
    port = free_port()
    pg_ctl = os.path.join(postgres_bin_dir(), "pg_ctl")
    log = pgdata.parent / f"{pgdata.name}.log"
    cluster.give_to_postgres(pgdata.parent)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={cluster.base}"
    start = subprocess.run(as_postgres([pg_ctl, "-D", str(pgdata), "-l", str(log), "-o", options, "-t", "120", "-w",
                                        "start"], {}), cwd=cluster.base, capture_output=True, text=True,
                           timeout=180, check=False)
    try:
        assert start.returncode == 0, start.stdout + start.stderr + _tail(log)
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                       autocommit=True, connect_timeout=5)
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row == (False,):
                    break
                conn.close()
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the restored cluster did not finish recovery in 120 s:\n" + _tail(log))
            time.sleep(0.3)
        with conn:
            yield conn
    finally:
        subprocess.run(as_postgres([pg_ctl, "-D", str(pgdata), "-m", "immediate", "-w", "stop"], {}),
                       cwd=cluster.base, check=False, capture_output=True, timeout=120)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no server log)"


def restore_to(cluster: ArchivingCluster, marks: Marks, target: datetime, name: str
               ) -> tuple[subprocess.CompletedProcess[str], Path]:
    pgdata = cluster.base / "restores" / name
    result = cli(cluster, "pitr", "restore", str(marks.sysid), "--to-time", target.isoformat(), "--pgdata",
                 str(pgdata), "--wal-command", str(wal_command()), "--passphrase-file", str(cluster.passphrase_file),
                 "--json")
    return result, pgdata


def between(a: datetime, b: datetime) -> datetime:
    return a + (b - a) / 2


# -- with a server ------------------------------------------------------------------------------


def test_restores_to_moments_between_marked_writes_hold_exactly_the_rows_of_that_moment(
        archiving_cluster: ArchivingCluster, marked: Marks) -> None:
    t1, t2, t3 = marked.times
    for label, target, rows in (("t1-t2", between(t1, t2), [1]), ("t2-t3", between(t2, t3), [1, 2])):
        result, pgdata = restore_to(archiving_cluster, marked, target, label)
        assert result.returncode == 0, result.stdout + result.stderr
        laid_out = json.loads(result.stdout)
        assert laid_out["snapshot"] == marked.snapshot
        assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700
        auto = (pgdata / "postgresql.auto.conf").read_text()
        assert f"VAULTFLOW_PASSPHRASE_FILE={archiving_cluster.passphrase_file}" in auto
        assert f"{wal_command()} fetch %f %p" in auto and PASSPHRASE not in auto
        assert "recovery_target_action = 'promote'" in auto and "recovery_target_timeline = 'latest'" in auto
        assert f"recovery_target_time = '{target.astimezone(UTC).isoformat(sep=' ')}'" in auto
        assert (pgdata / "recovery.signal").exists() and (pgdata / "backup_manifest").exists()
        with started_copy(archiving_cluster, pgdata) as copy:
            got = [r[0] for r in copy.execute("SELECT id FROM marks ORDER BY id").fetchall()]
        assert got == rows, f"restored to {target} ({label}): {got}"


def test_a_restore_to_a_transaction_and_to_the_latest_archived_wal(archiving_cluster: ArchivingCluster,
                                                                    marked: Marks) -> None:
    """Before the gap test below deletes a segment: --to-xid stops just after that commit, --latest
    replays everything archived."""
    common = ["--wal-command", str(wal_command()), "--passphrase-file", str(archiving_cluster.passphrase_file),
              "--json"]
    for label, target, rows, setting in (
            ("xid-2", ["--to-xid", str(marked.xids[1])], [1, 2], f"recovery_target_xid = '{marked.xids[1]}'"),
            ("latest", ["--latest"], [1, 2, 3], "no recovery_target")):
        pgdata = archiving_cluster.base / "restores" / label
        result = cli(archiving_cluster, "pitr", "restore", str(marked.sysid), *target, "--pgdata", str(pgdata),
                     *common)
        assert result.returncode == 0, result.stdout + result.stderr
        assert setting in (pgdata / "postgresql.auto.conf").read_text()
        with started_copy(archiving_cluster, pgdata) as copy:
            got = [r[0] for r in copy.execute("SELECT id FROM marks ORDER BY id").fetchall()]
        assert got == rows, f"restored to {label}: {got}"
    bad = cli(archiving_cluster, "pitr", "restore", str(marked.sysid), "--to-xid", "x7", "--pgdata",
              str(archiving_cluster.base / "restores" / "bad-xid"), *common)
    one_error_line(bad, 2, "--to-xid 'x7' is not a transaction id")
    both = cli(archiving_cluster, "pitr", "restore", str(marked.sysid), "--latest", "--to-xid", "7", "--pgdata",
               str(archiving_cluster.base / "restores" / "two-targets"), *common)
    one_error_line(both, 2, "give exactly one of")
    assert not (archiving_cluster.base / "restores" / "bad-xid").exists()


def test_the_window_lists_the_base_backup_and_a_deleted_segment_is_a_gap_a_restore_cannot_cross(
        archiving_cluster: ArchivingCluster, marked: Marks) -> None:
    listed = cli(archiving_cluster, "show", marked.snapshot[:8], "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["base_backup"]["system_identifier"] == marked.sysid
    assert cli(archiving_cluster, "snapshots").returncode == 0
    shown = cli(archiving_cluster, "pitr", "window", str(marked.sysid), "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    (window,) = json.loads(shown.stdout)
    assert [b["snapshot"] for b in window["base_backups"]] == [marked.snapshot]
    assert window["gaps"] == []
    coverage = window["coverage"][0]
    assert datetime.fromisoformat(coverage["to_time"]) >= marked.times[-1]
    text = cli(archiving_cluster, "pitr", "window")
    assert text.returncode == 0 and f"base backup {marked.snapshot[:8]}" in text.stdout, text.stdout + text.stderr

    stop_segment = parse_lsn(window["base_backups"][0]["stop_lsn"]) // (16 << 20)
    timeline_dir = archiving_cluster.repo / "wal" / str(marked.sysid) / "00000001"
    later = sorted(p for p in timeline_dir.iterdir()
                   if "." not in p.name and int(p.name[8:16], 16) * 256 + int(p.name[16:], 16) > stop_segment)
    assert len(later) >= 3, later
    victim = later[1]
    victim.unlink()
    gapped = cli(archiving_cluster, "pitr", "window", str(marked.sysid), "--json")
    assert gapped.returncode == 3, gapped.stdout + gapped.stderr
    (after,) = json.loads(gapped.stdout)
    assert [(g["first"], g["missing"]) for g in after["gaps"]] == [(victim.name.upper(), 1)]
    assert after["coverage"][0]["last_segment"] == later[0].name.upper()

    result, pgdata = restore_to(archiving_cluster, marked, marked.times[-1], "beyond-gap")
    one_error_line(result, 2, "after the last archived WAL", victim.name.upper(), "can be restored to")
    assert not pgdata.exists()
    latest = cli(archiving_cluster, "pitr", "restore", str(marked.sysid), "--latest", "--pgdata", str(pgdata),
                 "--wal-command", str(wal_command()), "--passphrase-file", str(archiving_cluster.passphrase_file))
    one_error_line(latest, 2, "--latest from base backup", "before the gap", victim.name.upper())
    assert not pgdata.exists()


def test_bad_targets_and_inputs_are_refused_in_one_line(archiving_cluster: ArchivingCluster, marked: Marks,
                                                        tmp_path: Path) -> None:
    cluster = archiving_cluster
    info = open_repo(cluster).load_manifest(marked.snapshot).base_backup
    assert info is not None and info.stop_time_source == "backup-history"
    stop = info.stop_time

    early, pgdata = restore_to(cluster, marked, stop - timedelta(hours=1), "too-early")
    one_error_line(early, 2, "before the end of its oldest base backup", "can be restored to")
    late, _ = restore_to(cluster, marked, datetime.now(UTC) + timedelta(days=1), "too-late")
    one_error_line(late, 2, "after the last archived WAL")
    naive = cli(cluster, "pitr", "restore", str(marked.sysid), "--to-time", "2026-12-02 10:14:00",
                "--pgdata", str(tmp_path / "naive"), "--passphrase-file", str(cluster.passphrase_file),
                "--wal-command", str(wal_command()))
    one_error_line(naive, 2, "has no time zone")
    assert not pgdata.exists() and not (tmp_path / "naive").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    soon_after_t1 = (marked.times[0] + timedelta(seconds=0.1)).isoformat()  # before the gap the test above made
    nonempty = cli(cluster, "pitr", "restore", str(marked.sysid), "--to-time", soon_after_t1,
                   "--pgdata", str(busy), "--passphrase-file", str(cluster.passphrase_file),
                   "--wal-command", str(wal_command()))
    one_error_line(nonempty, 2, "is not empty", str(busy))
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]

    from vaultflow.engines import engine_from_url
    from vaultflow.operations.backup import backup_database

    sqlite_file = tmp_path / "small.db"
    with sqlite3.connect(sqlite_file) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
    logical = backup_database(engine_from_url(f"sqlite:///{sqlite_file}"), open_repo(cluster),
                              snapshot_id=os.urandom(16).hex())
    wrong = cli(cluster, "pitr", "restore", logical.id, "--to-time", soon_after_t1,
                "--pgdata", str(tmp_path / "logical"), "--passphrase-file", str(cluster.passphrase_file),
                "--wal-command", str(wal_command()))
    one_error_line(wrong, 2, f"snapshot {logical.short_id} is a logical backup", "not a base backup")

    manifest = open_repo(cluster).load_manifest(marked.snapshot)
    with pytest.raises(InputError, match="physical base backup"):
        check_target_engine(manifest, cluster.engine())
    with pytest.raises(InputError, match="physical base backup"):
        export_snapshot(open_repo(cluster), marked.snapshot, tmp_path / "base.sql")


def test_a_base_backup_into_a_repository_the_server_does_not_archive_to_is_refused(
        archiving_cluster: ArchivingCluster, marked: Marks, tmp_path: Path) -> None:
    from vaultflow.repository import Repository
    from vaultflow.storage import LocalStore

    other = tmp_path / "other-repo"
    Repository.init(LocalStore(other), PASSPHRASE)
    result = cli(archiving_cluster, "pitr", "base-backup", f"postgresql://postgres@127.0.0.1:{archiving_cluster.port}",
                 repo=other)
    one_error_line(result, 1, "archives its WAL elsewhere", str(other))
    assert list(Repository.open(LocalStore(other), PASSPHRASE).snapshot_ids()) == []


def test_a_second_base_backup_joins_the_chain_and_targets_after_it_restore_from_it_past_the_gap(
        archiving_cluster: ArchivingCluster, marked: Marks) -> None:
    cluster = archiving_cluster
    second = cli(cluster, "pitr", "base-backup", f"postgresql://postgres@127.0.0.1:{cluster.port}", "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    row = json.loads(second.stdout)
    assert (row["kind"], row["parent"]) == ("incremental", marked.snapshot)
    assert row["added_bytes"] < row["stored_bytes"], row  # unchanged relation files are not stored again
    with cluster.connect() as c:
        time.sleep(1.2)
        c.execute("INSERT INTO marks VALUES (4, 'mark 4')")
        moment = c.execute("SELECT clock_timestamp()").fetchone()
        assert moment is not None
        time.sleep(1.2)
        c.execute("SELECT pg_create_restore_point('after-4')")
        c.execute("INSERT INTO marks VALUES (5, 'mark 5')")
    switch_and_wait(cluster, switches=2)  # later commits, so recovery meets one after the target

    shown = cli(cluster, "pitr", "window", str(marked.sysid), "--json")
    assert shown.returncode == 3, shown.stderr  # the gap of the test above is still there
    (window,) = json.loads(shown.stdout)
    assert [b["snapshot"] for b in window["base_backups"]] == [marked.snapshot, row["snapshot"]]

    result, pgdata = restore_to(cluster, marked, moment[0] + timedelta(seconds=0.6), "after-second")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["snapshot"] == row["snapshot"]
    with started_copy(cluster, pgdata) as copy:
        assert [r[0] for r in copy.execute("SELECT id FROM marks ORDER BY id").fetchall()] == [1, 2, 3, 4]

    named = cli(cluster, "pitr", "restore", str(marked.sysid), "--to-name", "after-4", "--pgdata",
                str(cluster.base / "restores" / "named"), "--wal-command", str(wal_command()),
                "--passphrase-file", str(cluster.passphrase_file), "--json")
    assert named.returncode == 0, named.stdout + named.stderr
    assert json.loads(named.stdout)["snapshot"] == row["snapshot"]  # the first one's WAL stops at the gap
    auto = (cluster.base / "restores" / "named" / "postgresql.auto.conf").read_text()
    assert "recovery_target_name = 'after-4'" in auto
    with started_copy(cluster, cluster.base / "restores" / "named") as copy:
        assert [r[0] for r in copy.execute("SELECT id FROM marks ORDER BY id").fetchall()] == [1, 2, 3, 4]


def _archived_on_the_copy(port: int, name: str) -> None:
    """Wait until the copy on `port` archived WAL file `name` (pg_stat_archiver)."""
    deadline = time.monotonic() + 60
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as c:
        while True:
            row = c.execute("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver").fetchone()
            assert row is not None
            if row[0] is not None and str(row[0]) >= name:
                return
            assert time.monotonic() < deadline, f"the copy did not archive {name} in 60 s: {row}"
            time.sleep(0.2)


def test_a_promoted_copy_that_keeps_archiving_writes_timeline_2_and_a_restore_to_a_point_on_it_works(
        archiving_cluster: ArchivingCluster, marked: Marks) -> None:
    cluster = archiving_cluster
    pgdata, port = cluster.base / "restores" / "timeline-2", free_port()
    started = cli(cluster, "pitr", "restore", str(marked.sysid), "--to-name", "after-4", "--pgdata", str(pgdata),
                  "--wal-command", str(wal_command()), "--passphrase-file", str(cluster.passphrase_file),
                  "--start", "--port", str(port), "--keep-archiving", "--json")
    pg_ctl = os.path.join(postgres_bin_dir(), "pg_ctl")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        row = json.loads(started.stdout)
        assert row["timeline"] == 2 and row["reached"] == 'at restore point "after-4"', row
        assert "archive_mode = 'off'" not in (pgdata / "postgresql.auto.conf").read_text()
        history = cluster.repo / "wal" / str(marked.sysid) / "history" / "00000002.history"
        deadline = time.monotonic() + 60
        while not history.exists():  # the archiver pushes it right after the promotion
            assert time.monotonic() < deadline, "00000002.history never reached the repository"
            time.sleep(0.2)
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as copy:
            assert [r[0] for r in copy.execute("SELECT id FROM marks ORDER BY id")] == [1, 2, 3, 4]
            copy.execute("INSERT INTO marks VALUES (6, 'timeline 2')")
            on_timeline_2 = copy.execute("SELECT clock_timestamp()").fetchone()
            assert on_timeline_2 is not None
            time.sleep(1.2)
            copy.execute("INSERT INTO marks VALUES (7, 'timeline 2, later')")
            segment = str(copy.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0])  # type: ignore[index]
            copy.execute("SELECT pg_switch_wal()")
        assert segment.startswith("00000002"), segment
        _archived_on_the_copy(port, segment)
        assert (cluster.repo / "wal" / str(marked.sysid) / "00000002" / segment.lower()).exists()
    finally:
        subprocess.run(as_postgres([pg_ctl, "-D", str(pgdata), "-m", "fast", "-w", "stop"], {}),
                       cwd=cluster.base, check=False, capture_output=True, timeout=120)
    with cluster.connect() as c:  # the source goes on along timeline 1 with other rows
        c.execute("INSERT INTO marks VALUES (100, 'timeline 1 after the branch')")
    switch_and_wait(cluster, switches=1)

    shown = cli(cluster, "pitr", "window", str(marked.sysid), "--json")
    (window,) = json.loads(shown.stdout)
    newest = window["coverage"][-1]
    assert (newest["timeline"], newest["last_segment"]) == (2, segment), window["coverage"]

    target = on_timeline_2[0] + timedelta(seconds=0.6)
    result, restored = restore_to(cluster, marked, target, "on-timeline-2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["snapshot"] == newest["snapshot"]
    with started_copy(cluster, restored) as copy:
        assert [r[0] for r in copy.execute("SELECT id FROM marks ORDER BY id").fetchall()] == [1, 2, 3, 4, 6]
        assert copy.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0].startswith("00000003")  # type: ignore[index]


# -- without a server ---------------------------------------------------------------------------


def test_the_tar_tap_keeps_the_label_and_manifest_whatever_the_block_sizes() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("backup_label", b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"),
                           ("base/1/1259", os.urandom(20000)), ("pg_wal/x", b""),
                           ("backup_manifest", b'{"WAL-Ranges": []}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    for step in (1, 7, 512, 513, 4096, len(raw)):
        tap = TarMemberTap()
        for i in range(0, len(raw), step):
            tap(raw[i:i + step])
        assert tap.count == 4 and tap.ended
        assert tap.members["backup_label"].startswith(b"START WAL LOCATION: 0/2000028")
        assert tap.members["backup_manifest"] == b'{"WAL-Ranges": []}'
        assert "base/1/1259" not in tap.members


def test_targets_need_a_time_zone_and_names_follow_the_server() -> None:
    assert parse_target_time("2026-12-02 10:14:00+01").utcoffset() == timedelta(hours=1)
    assert parse_target_time("2026-12-02T09:14:00Z") == parse_target_time("2026-12-02 10:14:00+01:00")
    for bad in ("2026-12-02 10:14:00", "yesterday"):
        with pytest.raises(InputError):
            parse_target_time(bad)
    with pytest.raises(InputError, match="exactly one"):
        RecoveryTarget()
    assert backup_history_file_name(parse_lsn("0/2000028"), 1, 16 << 20) == "000000010000000000000002.00000028.backup"
    assert backup_history_file_name(parse_lsn("1/A3000060"), 2, 16 << 20) == "0000000200000001000000A3.00000060.backup"


def test_manifests_without_a_base_backup_still_load() -> None:
    old = {"id": "a" * 32, "chain": "a" * 32, "engine": "sqlite", "server": "/x", "database": "x.db",
           "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:01+00:00",
           "hostname": "h", "vaultflow_version": "0", "streams": []}
    assert SnapshotManifest.model_validate(old).base_backup is None


def test_the_window_follows_a_child_timeline_and_names_the_gap_it_would_cross(tmp_path: Path) -> None:
    from tests.engines.postgres.wal_segments import SEGMENT_SIZE, fake_data_directory, segment_bytes, segment_name
    from vaultflow.engines.postgres.basebackup import format_lsn
    from vaultflow.engines.postgres.wal import push_wal
    from vaultflow.engines.postgres.window import cluster_window
    from vaultflow.repository import Repository
    from vaultflow.repository.manifest import BaseBackupInfo
    from vaultflow.storage import LocalStore

    sysid = 7_000_000_000_000_000_777
    repo = Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    data = fake_data_directory(tmp_path / "data", sysid)

    def push(timeline: int, *segnos: int) -> None:
        for segno in segnos:
            path = data / "pg_wal" / segment_name(timeline, segno)
            path.write_bytes(segment_bytes(sysid, timeline, segno))
            push_wal(repo, path)

    now = datetime.now(UTC)
    info = BaseBackupInfo(system_identifier=sysid, timeline=1, start_lsn=format_lsn(3 * SEGMENT_SIZE + 40),
                          stop_lsn=format_lsn(4 * SEGMENT_SIZE + 400), start_time=now, stop_time=now,
                          server_version="15.20", wal_segment_size=SEGMENT_SIZE, backup_label="",
                          backup_manifest=True)
    base = SnapshotManifest(id="b" * 32, chain="b" * 32, engine="postgresql", server="127.0.0.1:5999",
                            database="(cluster)", started_at=now, finished_at=now, hostname="h",
                            vaultflow_version="0", streams=[], base_backup=info)
    push(1, 2, 5, 6, 8)  # 3 and 4 are in the base backup's tar; 7 is missing
    window = cluster_window(repo, sysid, [base])
    assert [(g.timeline, g.first, g.missing) for g in window.gaps] == [(1, segment_name(1, 7), 1)]
    assert window.coverage[0].last_segment == segment_name(1, 6) and window.coverage[0].timeline == 1

    history = data / "pg_wal" / "00000002.history"
    history.write_bytes(f"1\t{format_lsn(6 * SEGMENT_SIZE + 100)}\tno recovery target specified\n".encode())
    push_wal(repo, history)
    push(2, 6, 7, 8)
    followed = cluster_window(repo, sysid, [base])
    assert followed.coverage[0].timeline == 2 and followed.coverage[0].last_segment == segment_name(2, 8)
    assert followed.coverage[0].to_lsn == 9 * SEGMENT_SIZE
    assert followed.newest_segment == segment_name(2, 8)
