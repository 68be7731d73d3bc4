"""`wal-receive`: a supervised pg_receivewal against a private cluster (this module's own
archiving cluster, conftest.py) streams every segment into the repository, survives a server
restart without a gap, reports its health, and refuses a user it cannot replicate as in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT
from tests.engines.postgres.conftest import ArchivingCluster, as_postgres
from tests.engines.postgres.test_errors import _run, postgres_bin_dir
from vaultflow.engines.intake import IntakeHealth
from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.wal_receiver import WalReceiver
from vaultflow.errors import InputError
from vaultflow.repository import Repository
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.timeout(300)


def _restart(cluster: ArchivingCluster) -> None:
    pg_ctl = os.path.join(postgres_bin_dir(), "pg_ctl")
    _run(as_postgres([pg_ctl, "-D", str(cluster.data), "-l", str(cluster.base / "server.log"), "-m", "fast",
                      "-t", "60", "-w", "restart"], {}), str(cluster.base), "pg_ctl restart")


def _switch(cluster: ArchivingCluster, rows: int = 5000) -> str:
    """Write rows, close the segment; the name of the segment closed."""
    with cluster.connect() as c:
        c.execute("CREATE TABLE IF NOT EXISTS load (id bigserial PRIMARY KEY, payload text)")
        c.execute("INSERT INTO load (payload) SELECT md5(g::text) FROM generate_series(1, %s) g", (rows,))
        name = str(c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0])  # type: ignore[index]
        c.execute("SELECT pg_switch_wal()")
    return name


def _engine(cluster: ArchivingCluster, user: str = "postgres") -> PostgresEngine:
    return PostgresEngine(PostgresConnection(host="127.0.0.1", port=cluster.port, user=user))


def _archived(repo: Repository) -> set[str]:
    return {info.key.rsplit("/", 1)[-1].upper() for info in repo.store.list("wal/") if "/history/" not in info.key}


def _wait_for(what: str, condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_streams_every_segment_across_a_server_restart_without_a_gap(
        archiving_cluster: ArchivingCluster, tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    Repository.init(LocalStore(repo_path), PASSPHRASE)
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    reports: list[IntakeHealth] = []
    receiver = WalReceiver(_engine(archiving_cluster), repo, tmp_path / "spool", slot="vf_test",
                           health_every=1.0, retained_warn_bytes=1, report=reports.append)
    stop = threading.Event()
    thread = threading.Thread(target=receiver.run, args=(stop,), daemon=True)
    thread.start()
    try:
        _wait_for("the receiver to start", lambda: any(r.event == "started" for r in reports))
        before = [_switch(archiving_cluster) for _ in range(3)]
        _wait_for(f"{before} archived", lambda: set(before) <= _archived(repo))

        _restart(archiving_cluster)
        _wait_for("a restart report", lambda: any(r.event == "restarted" for r in reports), timeout=90)
        after = [_switch(archiving_cluster) for _ in range(2)]
        _wait_for(f"{after} archived", lambda: set(after) <= _archived(repo), timeout=90)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive(), "the receiver did not stop"
    numbers = sorted(int(name[8:], 16) for name in _archived(repo))
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), f"a gap in the archived WAL: {numbers}"
    events = [r.event for r in reports]
    assert events[0] == "started" and events[-1] == "stopped" and "healthy" in events, events
    assert "slot-retaining" in events, "a 1-byte threshold is passed while the receiver lags"
    restarted = next(r for r in reports if r.event == "restarted")
    assert "pg_receivewal exited" in restarted.detail and restarted.restarts == 1
    assert not [p for p in (tmp_path / "spool").iterdir() if not p.name.endswith(".partial")], \
        "archived segments leave the spool"


def test_wal_written_between_the_slot_and_the_stream_reaches_the_repository(
        archiving_cluster: ArchivingCluster, tmp_path: Path) -> None:
    """The slot reserves WAL from its creation: segments switched before pg_receivewal first streams
    (a slow start) are still received, not skipped by a stream that starts at the server's position."""
    repo_path = tmp_path / "repo"
    Repository.init(LocalStore(repo_path), PASSPHRASE)
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    receiver = WalReceiver(_engine(archiving_cluster), repo, tmp_path / "spool", slot="vf_early")
    receiver._create_slot()
    early = [_switch(archiving_cluster, rows=100) for _ in range(2)]
    stop = threading.Event()
    thread = threading.Thread(target=receiver.run, args=(stop,), daemon=True)
    thread.start()
    try:
        _switch(archiving_cluster, rows=100)  # the segment after them ends, so both are finished files
        _wait_for(f"{early} archived", lambda: set(early) <= _archived(repo))
    finally:
        stop.set()
        thread.join(60)
        with archiving_cluster.connect() as c:
            c.execute("SELECT pg_drop_replication_slot('vf_early')")


def test_a_user_without_replication_is_refused_in_one_line(archiving_cluster: ArchivingCluster,
                                                           tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    Repository.init(LocalStore(repo_path), PASSPHRASE)
    with archiving_cluster.connect() as c:
        c.execute("DROP ROLE IF EXISTS no_replication")
        c.execute("CREATE ROLE no_replication LOGIN")
    receiver = WalReceiver(_engine(archiving_cluster, "no_replication"), Repository.open(LocalStore(repo_path),
                                                                                        PASSPHRASE),
                           tmp_path / "spool")
    with pytest.raises(InputError) as raised:
        receiver.run(threading.Event())
    line = raised.value.line()
    assert "\n" not in line and "cannot create replication slot vaultflow" in line and "REPLICATION" in line, line


def test_the_cli_runs_until_sigterm_and_archives(archiving_cluster: ArchivingCluster, tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    Repository.init(LocalStore(repo_path), PASSPHRASE)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(VAULTFLOW_PASSPHRASE=PASSPHRASE, VAULTFLOW_REPO=str(repo_path))
    proc = subprocess.Popen([sys.executable, "-m", "vaultflow.cli.main", "wal-receive",
                             f"postgresql://postgres@127.0.0.1:{archiving_cluster.port}", "--spool",
                             str(tmp_path / "spool"), "--slot", "vf_cli"], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
        _wait_for("the slot", lambda: _slot_exists(archiving_cluster, "vf_cli"), timeout=60)
        name = _switch(archiving_cluster)
        _wait_for(f"{name} archived", lambda: name in _archived(repo))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "wal-receive started" in err and "wal-receive stopped" in err, err
    assert PASSPHRASE not in err


def _slot_exists(cluster: ArchivingCluster, slot: str) -> bool:
    with cluster.connect() as c:
        return c.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is not None
