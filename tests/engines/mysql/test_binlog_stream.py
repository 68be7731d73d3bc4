"""`binlog-stream`: a supervised mariadb-binlog copies every finished binlog file of a private
log-bin server into the repository byte for byte, restarts after losing its connection without
losing a file, and reports binlogs purged before they were copied as a gap."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tests.engines.mysql.private_server import PrivateMariaDB, private_mariadb
from vaultflow.engines import engine_from_url
from vaultflow.engines.intake import IntakeHealth
from vaultflow.engines.mysql.binlog import MAX_BINLOG_SIZE, BinlogStream, archived_binlogs, binlog_key
from vaultflow.engines.mysql.engine import MySQLEngine
from vaultflow.repository import Repository
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def binlog_server(mariadb_available: None) -> Iterator[PrivateMariaDB]:
    with private_mariadb("--log-bin=binlog", "--server-id=9", "--binlog-format=ROW") as server:
        server.execute("CREATE DATABASE shop", "CREATE TABLE shop.items (id int PRIMARY KEY, name varchar(40))")
        yield server


def _wait_for(what: str, condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _rotate(server: PrivateMariaDB, first_id: int, files: int) -> list[str]:
    """Write a row into each of `files` binlog files and rotate after each; the files closed."""
    closed = []
    for n in range(files):
        server.execute(f"INSERT INTO shop.items VALUES ({first_id + n}, 'row {first_id + n}')")
        closed.append(server.master_status()[0])
        server.execute("FLUSH BINARY LOGS")
    return closed


class Running:
    def __init__(self, stream: BinlogStream) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=stream.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the stream did not stop"


def test_finished_binlogs_reach_the_repository_whole_across_a_lost_connection(
        binlog_server: PrivateMariaDB, tmp_path: Path) -> None:
    Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(tmp_path / "repo"), PASSPHRASE)
    engine = engine_from_url(binlog_server.url("shop"))
    assert isinstance(engine, MySQLEngine)
    reports: list[IntakeHealth] = []
    stream = BinlogStream(engine, repo, tmp_path / "spool", health_every=1.0, report=reports.append)
    with Running(stream):
        _wait_for("the stream to start", lambda: bool(reports))
        first = _rotate(binlog_server, 100, 2)
        _wait_for(f"{first} archived", lambda: set(first) <= set(archived_binlogs(repo, engine.server_label())))
        # The server ends the tool's connection (as on a server restart): the supervisor restarts it.
        with binlog_server.connect() as c, c.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
            for (thread_id,) in cur.fetchall():
                cur.execute(f"KILL {int(thread_id)}")
        _wait_for("a restart", lambda: any(r.event == "restarted" for r in reports))
        second = _rotate(binlog_server, 200, 2)
        _wait_for(f"{second} archived", lambda: set(second) <= set(archived_binlogs(repo, engine.server_label())))
    archived = archived_binlogs(repo, engine.server_label())
    numbers = [int(n.rsplit(".", 1)[1]) for n in archived]
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), f"a file is missing: {archived}"
    for name in archived:
        key = binlog_key(engine.server_label(), name)
        stored = repo.sealer.open(repo.store.get(key), b"binlog:" + key.encode(), max_size=MAX_BINLOG_SIZE)
        assert stored == (binlog_server.data / name).read_bytes(), f"{name} differs from the server's"
    events = [r.event for r in reports]
    assert events[0] == "started" and events[-1] == "stopped" and "healthy" in events, events


def test_binlogs_purged_before_they_were_copied_are_reported_as_a_gap(
        binlog_server: PrivateMariaDB, tmp_path: Path) -> None:
    Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(tmp_path / "repo"), PASSPHRASE)
    engine = engine_from_url(binlog_server.url("shop"))
    assert isinstance(engine, MySQLEngine)
    reports: list[IntakeHealth] = []
    with Running(BinlogStream(engine, repo, tmp_path / "spool-1", report=reports.append)):
        closed = _rotate(binlog_server, 300, 1)
        _wait_for(f"{closed} archived", lambda: set(closed) <= set(archived_binlogs(repo, engine.server_label())))
    # While no stream runs, the server writes two more files and purges them.
    _rotate(binlog_server, 400, 2)
    binlog_server.execute(f"PURGE BINARY LOGS TO '{binlog_server.master_status()[0]}'")
    with Running(BinlogStream(engine, repo, tmp_path / "spool-2", report=reports.append)):
        _wait_for("a gap report", lambda: any(r.event == "gap" for r in reports))
    (gap,) = [r for r in reports if r.event == "gap"]
    assert "were purged" in gap.detail and "no point in time in them can be restored" in gap.detail, gap.detail


def test_the_growing_binlog_is_pushed_at_the_interval_under_keys_that_never_repeat(
        binlog_server: PrivateMariaDB, tmp_path: Path) -> None:
    from vaultflow.engines.mysql.binlog import binlog_sources, is_partial_key

    Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(tmp_path / "repo"), PASSPHRASE)
    engine = engine_from_url(binlog_server.url("shop"))
    assert isinstance(engine, MySQLEngine)
    server = engine.server_label()
    growing = binlog_server.master_status()[0]
    with Running(BinlogStream(engine, repo, tmp_path / "spool", push_interval=0.5)):
        binlog_server.execute("INSERT INTO shop.items VALUES (500, 'growing')")
        _wait_for("a partial of the growing file", lambda: any(
            n == growing and is_partial_key(k) for n, k in binlog_sources(repo, server)))
        first = {i.key for i in repo.store.list(binlog_key(server, growing) + ".partial.")}
        binlog_server.execute("INSERT INTO shop.items VALUES (501, 'grown')")
        _wait_for("a larger partial", lambda: len({i.key for i in repo.store.list(
            binlog_key(server, growing) + ".partial.")}) > len(first))
        assert growing not in archived_binlogs(repo, server), "the growing file is not finished"
        (key,) = [k for n, k in binlog_sources(repo, server) if n == growing]
        stored = repo.sealer.open(repo.store.get(key), b"binlog:" + key.encode(), max_size=MAX_BINLOG_SIZE)
        (tmp_path / growing).write_bytes(stored)  # whole events: mariadb-binlog reads it to its end
        decoded = subprocess.run(["mariadb-binlog", "-v", str(tmp_path / growing)], capture_output=True,
                                 text=True, timeout=60, check=False)
        assert decoded.returncode == 0 and "@1=500" in decoded.stdout, decoded.stderr
        binlog_server.execute("FLUSH BINARY LOGS")
        _wait_for(f"{growing} archived", lambda: growing in archived_binlogs(repo, server))
    assert dict(binlog_sources(repo, server))[growing] == binlog_key(server, growing), "the finished file supersedes"
    assert first <= {i.key for i in repo.store.list(binlog_key(server, growing) + ".partial.")}, "nothing overwritten"


def test_a_user_without_replication_privileges_is_refused_in_one_line(
        binlog_server: PrivateMariaDB, tmp_path: Path) -> None:
    from vaultflow.errors import InputError

    Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(tmp_path / "repo"), PASSPHRASE)
    binlog_server.execute("CREATE USER IF NOT EXISTS 'plain'@'127.0.0.1'",
                          "GRANT SELECT ON *.* TO 'plain'@'127.0.0.1'")
    engine = engine_from_url(binlog_server.url("shop", "plain"))
    assert isinstance(engine, MySQLEngine)
    with pytest.raises(InputError, match="lacks REPLICATION SLAVE") as refused:
        BinlogStream(engine, repo, tmp_path / "spool").run(threading.Event())
    assert "\n" not in str(refused.value)
    assert "GRANT REPLICATION SLAVE" in refused.value.fix
