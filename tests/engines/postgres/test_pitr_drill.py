"""`pitr restore --start` and PITR drills end to end on a private archiving cluster
(tests/engines/postgres/conftest.py): a restore that starts, promotes on timeline 2 and reports the
point; a mark taken while pgbench writes, drilled with exact counts; the refusals (one line each),
and a deleted WAL segment that fails the drill naming the gap. Scratch directories and ports are
checked gone after every drill.

The tests share one cluster and run in file order: the last one deletes a segment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PASSPHRASE, ROOT
from tests.engines.postgres.conftest import ArchivingCluster, as_postgres, open_repo, switch_and_wait, wal_command
from tests.engines.postgres.test_errors import free_port, postgres_bin_dir
from tests.engines.postgres.test_pitr import one_error_line
from vaultflow.engines.postgres.basebackup import parse_lsn
from vaultflow.engines.postgres.pitr_mark import check_mark_name, load_mark
from vaultflow.errors import InputError

pytestmark = pytest.mark.timeout(900)


def cli(cluster: ArchivingCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAULTFLOW_REPO": str(cluster.repo),
           "VAULTFLOW_PASSPHRASE": PASSPHRASE, "VAULTFLOW_HOME": str(cluster.base / "home")}
    env.pop("VAULTFLOW_PASSPHRASE_FILE", None)
    env.pop("VAULTFLOW_CATALOG_URL", None)
    return subprocess.run([sys.executable, "-m", "vaultflow.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600, check=False)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # nobody listens (TIME_WAIT aside)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Prepared:
    sysid: int
    snapshot: str
    scratch: Path
    server: str


@pytest.fixture(scope="module")
def prepared(archiving_cluster: ArchivingCluster) -> Prepared:
    """A base backup of the cluster, with a second database; a scratch parent the server can reach."""
    cluster = archiving_cluster
    switch_and_wait(cluster, switches=1)
    with cluster.connect() as c:
        c.execute("CREATE DATABASE shop")
        c.execute("CREATE TABLE marks (id int PRIMARY KEY, note text)")
        c.execute("CREATE TABLE heap_only (x int, y text)")  # no primary key: read in heap order
        c.execute("INSERT INTO heap_only SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    server = f"postgresql://postgres@127.0.0.1:{cluster.port}"
    backup = cli(cluster, "pitr", "base-backup", server, "--json")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    row = json.loads(backup.stdout)
    scratch = cluster.base / "scratch"
    scratch.mkdir()
    cluster.give_to_postgres(scratch)
    return Prepared(int(row["system_identifier"]), row["snapshot"], scratch, server)


def leftovers(prepared: Prepared) -> list[str]:
    return sorted(p.name for p in prepared.scratch.iterdir())


# -- restore --start ----------------------------------------------------------------------------


def test_restore_with_start_promotes_on_timeline_2_and_reports_the_point(
        archiving_cluster: ArchivingCluster, prepared: Prepared) -> None:
    cluster = archiving_cluster
    with cluster.connect() as c:
        c.execute("INSERT INTO marks VALUES (1, 'before the point')")
        c.execute("SELECT pg_create_restore_point('start-here')")
        c.execute("INSERT INTO marks VALUES (2, 'after the point')")
    switch_and_wait(cluster, switches=1)
    pgdata = cluster.base / "restores" / "started"
    port = free_port()
    result = cli(cluster, "pitr", "restore", str(prepared.sysid), "--to-name", "start-here", "--pgdata", str(pgdata),
                 "--wal-command", str(wal_command()), "--passphrase-file", str(cluster.passphrase_file),
                 "--start", "--port", str(port), "--json")
    pg_ctl = os.path.join(postgres_bin_dir(), "pg_ctl")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        row = json.loads(result.stdout)
        assert row["timeline"] == 2 and row["port"] == port
        assert row["reached"] == 'at restore point "start-here"', row
        assert parse_lsn(row["switch_lsn"]) > 0
        auto = (pgdata / "postgresql.auto.conf").read_text()
        assert f"port = '{port}'" in auto and "archive_mode = 'off'" in auto
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as c:
            assert [r[0] for r in c.execute("SELECT id FROM marks ORDER BY id")] == [1]
            assert c.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        # archive_mode off: the new timeline's history file never reaches the source's prefix
        assert not (cluster.repo / "wal" / str(prepared.sysid) / "history" / "00000002.history").exists()
    finally:
        subprocess.run(as_postgres([pg_ctl, "-D", str(pgdata), "-m", "immediate", "-w", "stop"], {}),
                       cwd=cluster.base, check=False, capture_output=True, timeout=120)


def test_start_refuses_a_port_in_use_a_non_empty_pgdata_and_another_major_version(
        archiving_cluster: ArchivingCluster, prepared: Prepared, tmp_path: Path) -> None:
    cluster = archiving_cluster
    common = ["--to-name", "start-here", "--wal-command", str(wal_command()),
              "--passphrase-file", str(cluster.passphrase_file)]
    busy_port = cli(cluster, "pitr", "restore", str(prepared.sysid), *common, "--pgdata", str(tmp_path / "a"),
                    "--start", "--port", str(cluster.port))
    one_error_line(busy_port, 2, f"port {cluster.port}", "in use")
    assert not (tmp_path / "a").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    nonempty = cli(cluster, "pitr", "restore", str(prepared.sysid), *common, "--pgdata", str(busy),
                   "--start", "--port", str(free_port()))
    one_error_line(nonempty, 2, "is not empty", str(busy))
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]

    other = tmp_path / "pg14" / "bin"  # a stand-in installation that says it is PostgreSQL 14
    other.mkdir(parents=True)
    for tool in ("pg_ctl", "postgres"):
        (other / tool).write_text("#!/bin/sh\necho 'postgres (PostgreSQL) 14.11'\n")
        (other / tool).chmod(0o755)
    older = cli(cluster, "pitr", "restore", str(prepared.sysid), *common, "--pgdata", str(tmp_path / "b"),
                "--start", "--port", str(free_port()), "--bin-dir", str(other))
    one_error_line(older, 2, "PostgreSQL 14.11", "its own major version")
    assert not (tmp_path / "b").exists()

    half = cli(cluster, "pitr", "restore", str(prepared.sysid), *common, "--pgdata", str(tmp_path / "c"), "--start")
    one_error_line(half, 2, "--start and --port go together")


# -- marks and drills ---------------------------------------------------------------------------


def test_a_mark_taken_while_pgbench_writes_is_drilled_with_exact_counts(
        archiving_cluster: ArchivingCluster, prepared: Prepared) -> None:
    cluster = archiving_cluster
    pgbench = os.path.join(postgres_bin_dir(), "pgbench")
    conn = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres"]
    init = subprocess.run([pgbench, "-i", "-s", "1", "-q", *conn, "shop"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert init.returncode == 0, init.stderr
    stop = threading.Event()
    written = {"n": 0}

    def second_writer() -> None:  # a writer in the other database too
        with cluster.connect() as c:
            while not stop.is_set():
                c.execute("INSERT INTO heap_only VALUES (%s, 'w')", (written["n"],))
                written["n"] += 1

    bench = subprocess.Popen([pgbench, "-T", "40", "-c", "2", "-n", *conn, "shop"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    writer = threading.Thread(target=second_writer, daemon=True)
    writer.start()
    try:
        time.sleep(3)
        before = written["n"]
        made = cli(cluster, "pitr", "mark", prepared.server, "--name", "under-load", "--json")
        assert made.returncode == 0, made.stdout + made.stderr
        time.sleep(2)
        assert written["n"] > before, "the writer did not write while marking"
        assert bench.poll() is None, "pgbench stopped before the mark was taken"
    finally:
        stop.set()
        writer.join(30)
        bench.terminate()
        bench.communicate(timeout=60)
    mark = json.loads(made.stdout)
    assert mark["databases"] >= 2 and mark["tables"] >= 6, mark
    assert mark["timeline"] == 1 and mark["wal_file"].startswith("00000001")
    stored = load_mark(open_repo(cluster), prepared.sysid, "under-load")
    accounts = next(t for t in stored.databases["shop"] if t.name == "pgbench_accounts")
    assert accounts.rows == 100000
    history = next(t for t in stored.databases["shop"] if t.name == "pgbench_history")
    assert history.rows > 0  # pgbench was committing while the mark was taken
    assert (cluster.repo / "marks" / str(prepared.sysid) / "under-load").exists()
    switch_and_wait(cluster, switches=1)  # the restore point's segment reaches the archive

    drilled = cli(cluster, "pitr", "drill", str(prepared.sysid), "--mark", "under-load", "--wal-command",
                  str(wal_command()), "--passphrase-file", str(cluster.passphrase_file), "--scratch-dir",
                  str(prepared.scratch), "--json")
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    report = json.loads(drilled.stdout)
    assert report["passed"], report["summary"]
    assert report["mark"] == "under-load" and report["rto_seconds"] > 0
    checks = report["checks"]
    assert {c["status"] for c in checks} == {"passed"}
    assert len(checks) == 2 * mark["tables"]
    assert "shop.public.pgbench_history" in {c["object"] for c in checks}
    assert leftovers(prepared) == []
    assert port_is_free(int(report["scratch_server"].rsplit(":", 1)[1]))
    # the newest mark is the default, and the drill is recorded like logical drills
    again = cli(cluster, "pitr", "drill", str(prepared.sysid), "--wal-command", str(wal_command()),
                "--passphrase-file", str(cluster.passphrase_file), "--scratch-dir", str(prepared.scratch))
    assert again.returncode == 0 and "PITR drill of mark 'under-load'" in again.stdout, again.stdout + again.stderr
    listed = cli(cluster, "pitr", "marks", str(prepared.sysid))
    assert "under-load" in listed.stdout, listed.stdout + listed.stderr


def test_a_missing_mark_and_a_bad_name_fail_in_one_line(archiving_cluster: ArchivingCluster,
                                                        prepared: Prepared) -> None:
    cluster = archiving_cluster
    missing = cli(cluster, "pitr", "drill", str(prepared.sysid), "--mark", "nope", "--wal-command",
                  str(wal_command()), "--passphrase-file", str(cluster.passphrase_file), "--scratch-dir",
                  str(prepared.scratch))
    one_error_line(missing, 2, "no mark named 'nope'")
    bad = cli(cluster, "pitr", "mark", prepared.server, "--name", "no spaces")
    one_error_line(bad, 2, "mark name 'no spaces'")
    taken = cli(cluster, "pitr", "mark", prepared.server, "--name", "under-load")
    one_error_line(taken, 2, "already has a mark named 'under-load'")
    assert leftovers(prepared) == []


def _interruptible() -> None:
    """In the drill's process before exec: Ctrl-C's default, so Python turns SIGINT into KeyboardInterrupt
    even when the test process inherited or set SIGINT ignored (an ignored signal survives exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupted_drill_stops_the_scratch_server_and_removes_its_directory(
        archiving_cluster: ArchivingCluster, prepared: Prepared) -> None:
    cluster = archiving_cluster
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAULTFLOW_REPO": str(cluster.repo),
           "VAULTFLOW_PASSPHRASE": PASSPHRASE, "VAULTFLOW_HOME": str(cluster.base / "home")}
    drill = subprocess.Popen([sys.executable, "-m", "vaultflow.cli.main", "pitr", "drill", str(prepared.sysid),
                              "--wal-command", str(wal_command()), "--passphrase-file", str(cluster.passphrase_file),
                              "--scratch-dir", str(prepared.scratch)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible)
    try:
        deadline = time.monotonic() + 180
        while not list(prepared.scratch.glob("*/data/postmaster.pid")):
            assert drill.poll() is None, drill.communicate()
            assert time.monotonic() < deadline, "the scratch server never started"
            time.sleep(0.05)
        pid_file = next(prepared.scratch.glob("*/data/postmaster.pid"))
        postmaster = int(pid_file.read_text().splitlines()[0])
        drill.send_signal(signal.SIGINT)
        out, err = drill.communicate(timeout=180)
    finally:
        if drill.poll() is None:
            drill.kill()
    assert drill.returncode != 0, f"{out}{err} (SIGINT in the test process: {signal.getsignal(signal.SIGINT)})"
    assert leftovers(prepared) == []
    with pytest.raises(ProcessLookupError):
        os.kill(postmaster, 0)


def test_a_deleted_wal_segment_fails_the_drill_naming_the_gap(archiving_cluster: ArchivingCluster,
                                                             prepared: Prepared) -> None:
    cluster = archiving_cluster
    switch_and_wait(cluster, switches=2)
    made = cli(cluster, "pitr", "mark", prepared.server, "--name", "beyond-gap", "--json")
    assert made.returncode == 0, made.stdout + made.stderr
    mark = json.loads(made.stdout)
    switch_and_wait(cluster, switches=1)
    info = open_repo(cluster).load_manifest(prepared.snapshot).base_backup
    assert info is not None
    stop_segment = parse_lsn(info.stop_lsn) // (16 << 20)
    mark_segment = parse_lsn(mark["lsn"]) // (16 << 20)
    timeline_dir = cluster.repo / "wal" / str(prepared.sysid) / "00000001"
    needed = sorted(p for p in timeline_dir.iterdir()
                    if "." not in p.name and stop_segment < int(p.name[8:16], 16) * 256 + int(p.name[16:], 16)
                    < mark_segment)
    assert needed, "no archived segment between the base backup and the mark"
    victim = needed[len(needed) // 2]
    victim.unlink()
    failed = cli(cluster, "pitr", "drill", str(prepared.sysid), "--mark", "beyond-gap", "--wal-command",
                 str(wal_command()), "--passphrase-file", str(cluster.passphrase_file), "--scratch-dir",
                 str(prepared.scratch))
    one_error_line(failed, 1, "PITR drill of mark 'beyond-gap'", "failed", "gap", victim.name.upper())
    assert leftovers(prepared) == []


def test_mark_names_are_restore_point_names_and_keys() -> None:
    assert check_mark_name("nightly-2026.12_04") == "nightly-2026.12_04"
    for bad in ("", "-lead", "a/b", "x" * 64, "sp ace", "ü"):
        with pytest.raises(InputError):
            check_mark_name(bad)
