"""`wal-receive`: a supervised pg_receivewal against a private cluster streams every segment into
the repository, survives a server restart without a gap, reports its health, and refuses a
server it cannot replicate from in one line."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PASSPHRASE, ROOT
from tests.engines.postgres.test_errors import _run, free_port, postgres_bin_dir
from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.wal_receiver import ReceiverHealth, WalReceiver
from vaultflow.errors import InputError
from vaultflow.repository import Repository
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.timeout(300)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass(frozen=True)
class StreamingCluster:
    port: int
    data: Path
    base: Path
    pg_ctl: str

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                               autocommit=True, connect_timeout=10)

    def engine(self, user: str = "postgres") -> PostgresEngine:
        return PostgresEngine(PostgresConnection(host="127.0.0.1", port=self.port, user=user))

    def restart(self) -> None:
        _run(_as_postgres([self.pg_ctl, "-D", str(self.data), "-l", str(self.base / "server.log"), "-m", "fast",
                           "-t", "60", "-w", "restart"]), str(self.base), "pg_ctl restart")

    def switch(self, rows: int = 5000) -> str:
        """Write rows, close the segment; the name of the segment closed."""
        with self.connect() as c:
            c.execute("CREATE TABLE IF NOT EXISTS load (id bigserial PRIMARY KEY, payload text)")
            c.execute("INSERT INTO load (payload) SELECT md5(g::text) FROM generate_series(1, %s) g", (rows,))
            name = str(c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0])  # type: ignore[index]
            c.execute("SELECT pg_switch_wal()")
        return name


@pytest.fixture(scope="module")
def streaming_cluster(pg_available: None) -> Iterator[StreamingCluster]:
    """wal_level=replica and replication connections from 127.0.0.1 (initdb's trust defaults)."""
    bin_dir = postgres_bin_dir()
    base = Path(tempfile.mkdtemp(prefix="vfrecv-", dir="/tmp"))
    data = base / "data"
    pg_ctl = os.path.join(bin_dir, "pg_ctl")
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(base, pg.pw_uid, pg.pw_gid)
    started = False
    try:
        _run(_as_postgres([os.path.join(bin_dir, "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres",
                           "--encoding=UTF8", "--locale=C", "--no-sync"]), str(base), "initdb")
        port = free_port()
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"wal_level = replica\nmax_wal_senders = 4\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                       f"unix_socket_directories = '{base}'\n")
        started = True
        _run(_as_postgres([pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-t", "60", "-w", "start"]),
             str(base), "pg_ctl start")
        cluster = StreamingCluster(port, data, base, pg_ctl)
        with cluster.connect() as c:
            c.execute("CREATE ROLE no_replication LOGIN")
        yield cluster
    finally:
        if started:
            subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]), cwd=base,
                           check=False, capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


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
        streaming_cluster: StreamingCluster, tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    Repository.init(LocalStore(repo_path), PASSPHRASE)
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    reports: list[ReceiverHealth] = []
    receiver = WalReceiver(streaming_cluster.engine(), repo, tmp_path / "spool", slot="vf_test",
                           health_every=1.0, retained_warn_bytes=1, report=reports.append)
    stop = threading.Event()
    thread = threading.Thread(target=receiver.run, args=(stop,), daemon=True)
    thread.start()
    try:
        _wait_for("the receiver to start", lambda: any(r.event == "started" for r in reports))
        before = [streaming_cluster.switch() for _ in range(3)]
        _wait_for(f"{before} archived", lambda: set(before) <= _archived(repo))

        streaming_cluster.restart()
        _wait_for("a restart report", lambda: any(r.event == "restarted" for r in reports), timeout=90)
        after = [streaming_cluster.switch() for _ in range(2)]
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


def test_a_user_without_replication_is_refused_in_one_line(streaming_cluster: StreamingCluster,
                                                           tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    Repository.init(LocalStore(repo_path), PASSPHRASE)
    receiver = WalReceiver(streaming_cluster.engine("no_replication"), Repository.open(LocalStore(repo_path),
                                                                                        PASSPHRASE),
                           tmp_path / "spool")
    with pytest.raises(InputError) as raised:
        receiver.run(threading.Event())
    line = raised.value.line()
    assert "\n" not in line and "cannot create replication slot vaultflow" in line and "REPLICATION" in line, line


def test_the_cli_runs_until_sigterm_and_archives(streaming_cluster: StreamingCluster, tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    Repository.init(LocalStore(repo_path), PASSPHRASE)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(VAULTFLOW_PASSPHRASE=PASSPHRASE, VAULTFLOW_REPO=str(repo_path))
    proc = subprocess.Popen([sys.executable, "-m", "vaultflow.cli.main", "wal-receive",
                             f"postgresql://postgres@127.0.0.1:{streaming_cluster.port}", "--spool",
                             str(tmp_path / "spool"), "--slot", "vf_cli"], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
        _wait_for("the slot", lambda: _slot_exists(streaming_cluster, "vf_cli"), timeout=60)
        name = streaming_cluster.switch()
        _wait_for(f"{name} archived", lambda: name in _archived(repo))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "wal-receive started" in err and "wal-receive stopped" in err, err
    assert PASSPHRASE not in err


def _slot_exists(cluster: StreamingCluster, slot: str) -> bool:
    with cluster.connect() as c:
        return c.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is not None
