"""Restore to a moment on MySQL/MariaDB: the snapshot before it, then the archived binlogs
replayed from the snapshot's position, give the database as it was at that moment (two
moments, each into its own database); moments outside the window are refused untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT
from tests.engines.mysql.private_server import PrivateMariaDB, private_mariadb
from vaultflow.engines import engine_from_url
from vaultflow.engines.mysql.binlog import binlog_key, push_binlog
from vaultflow.engines.mysql.binlog_replay import pick_snapshot, restore_to_time
from vaultflow.engines.mysql.binlog_window import binlog_window
from vaultflow.engines.mysql.engine import MySQLEngine
from vaultflow.errors import InputError, VaultflowError
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.requests import RestoreRequest
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def binlog_server(mariadb_available: None) -> Iterator[PrivateMariaDB]:
    with private_mariadb("--log-bin=binlog", "--server-id=11", "--binlog-format=ROW") as server:
        yield server


def _now(server: PrivateMariaDB) -> datetime:
    with server.connect() as c, c.cursor() as cur:
        cur.execute("SELECT UTC_TIMESTAMP(6)")
        return cur.fetchone()[0].replace(tzinfo=UTC)  # type: ignore[no-any-return]


def _rows(server: PrivateMariaDB, database: str) -> list[tuple[object, ...]]:
    with server.connect(database) as c, c.cursor() as cur:
        cur.execute("SELECT id, name FROM items ORDER BY id")
        return list(cur.fetchall())


def _engine(server: PrivateMariaDB, database: str) -> MySQLEngine:
    engine = engine_from_url(server.url(database))
    assert isinstance(engine, MySQLEngine)
    return engine


def test_restore_to_two_moments_gives_the_state_at_each(binlog_server: PrivateMariaDB, tmp_path: Path) -> None:
    Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(tmp_path / "repo"), PASSPHRASE)
    binlog_server.execute("CREATE DATABASE shop", "CREATE TABLE shop.items (id int PRIMARY KEY, name varchar(40))",
                          "INSERT INTO shop.items VALUES (1, 'a'), (2, 'b'), (3, 'c')",
                          "CREATE TABLE shop.after_rotation (id int PRIMARY KEY)")
    snapshot = backup_database(_engine(binlog_server, "shop"), repo, snapshot_id=new_object_id())
    states: list[tuple[datetime, list[tuple[object, ...]]]] = []
    for change in ("INSERT INTO items VALUES (4, 'd')", "UPDATE items SET name = 'B' WHERE id = 2",
                   "DELETE FROM items WHERE id = 3"):
        time.sleep(1.1)
        binlog_server.execute(change, database="shop")
        time.sleep(1.1)  # binlog times have one second of resolution
        states.append((_now(binlog_server), _rows(binlog_server, "shop")))
    binlog_server.execute("FLUSH BINARY LOGS", "INSERT INTO shop.after_rotation VALUES (1)", "FLUSH BINARY LOGS")
    newest = binlog_server.master_status()[0]
    server = snapshot.server
    for path in sorted(binlog_server.data.glob("binlog.[0-9]*")):
        if path.name != newest:
            push_binlog(repo, server, path)

    for n, (moment, expected) in enumerate(states[:2]):
        target = _engine(binlog_server, f"shop_at_{n}")
        chosen = pick_snapshot(repo, server, "shop", moment)
        assert chosen.id == snapshot.id
        result = restore_to_time(repo, chosen, target, moment, lambda t=target: restore_snapshot(
            repo, snapshot.id, t, RestoreRequest(owner=False)))
        assert _rows(binlog_server, f"shop_at_{n}") == expected, f"state at moment {n}"
        assert result.last_event_at is not None and result.last_event_at <= moment
        assert result.files[0] == snapshot.binlog.file  # type: ignore[union-attr]
    assert _rows(binlog_server, "shop") == states[-1][1], "the source is untouched"

    untouched = _engine(binlog_server, "shop_refused")
    with pytest.raises(InputError, match="is after the last archived binlog event"):
        restore_to_time(repo, snapshot, untouched, _now(binlog_server) + timedelta(hours=1),
                        lambda: pytest.fail("restored although the moment is outside the window"))
    with pytest.raises(InputError, match="is before the oldest snapshot"):
        pick_snapshot(repo, server, "shop", snapshot.started_at - timedelta(minutes=5))
    with pytest.raises(InputError, match="no time zone"):
        restore_to_time(repo, snapshot, untouched, states[0][0].replace(tzinfo=None),
                        lambda: pytest.fail("restored without a zone"))
    with binlog_server.connect() as c, c.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'shop_refused'")
        assert cur.fetchall() == ()

    # Through the CLI: the third moment into its own database, and the window as JSON.
    cli = [sys.executable, "-m", "vaultflow.cli.main", "pitr"]
    env = {**os.environ, "VAULTFLOW_PASSPHRASE": PASSPHRASE}
    restored = subprocess.run([*cli, "restore", binlog_server.url("shop"), "--to-time", states[2][0].isoformat(),
                               "--into", binlog_server.url("shop_cli"), "--repo", str(tmp_path / "repo"), "--json"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert restored.returncode == 0, restored.stderr
    assert _rows(binlog_server, "shop_cli") == states[2][1]
    assert json.loads(restored.stdout)["snapshot"] == snapshot.id
    refused = subprocess.run([*cli, "restore", binlog_server.url("shop"), "--to-time", states[0][0].isoformat(),
                              "--into", binlog_server.url("shop_cli2"), "--pgdata", "/tmp/x", "--repo",
                              str(tmp_path / "repo")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "PostgreSQL's" in refused.stderr, refused.stderr
    listed = subprocess.run([*cli, "window", binlog_server.url("shop"), "--repo", str(tmp_path / "repo"), "--json"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["recoverable_from"] == snapshot.finished_at.isoformat()

    # The window: from the snapshot's finish to the last archived event; a lost file ends it there.
    tool = shutil.which("mariadb-binlog") or "mariadb-binlog"
    window = binlog_window(repo, server, "shop", tool)
    assert window.missing == () and window.recoverable is not None
    assert window.recoverable[0] == snapshot.finished_at and window.recoverable[1] >= states[-1][0] - timedelta(
        seconds=1), window.as_dict()
    files = window.files
    assert len(files) >= 2, files
    repo.store.delete(binlog_key(server, files[-1]))
    cut = binlog_window(repo, server, "shop", tool)
    assert cut.files == files[:-1] and cut.reach[0].reaches_file == files[-2], cut.as_dict()


def _push_all_but_newest(server: PrivateMariaDB, repo: Repository, label: str) -> list[str]:
    newest = server.master_status()[0]
    pushed = []
    for path in sorted(server.data.glob("binlog.[0-9]*")):
        if path.name != newest:
            push_binlog(repo, label, path)
            pushed.append(path.name)
    return pushed


def test_a_temporary_table_filled_in_one_binlog_file_and_used_in_the_next_replays(
        binlog_server: PrivateMariaDB, tmp_path: Path) -> None:
    """Statement logging (this session's binlog_format) writes the temporary table to the binlog; it
    lives only in the session that replays the file creating it, so all files go through one."""
    from vaultflow.engines.mysql.binlog_replay import _restore_and_replay

    Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(tmp_path / "repo"), PASSPHRASE)
    binlog_server.execute("CREATE DATABASE tmpdb", "CREATE TABLE tmpdb.real_rows (id int PRIMARY KEY, v varchar(8))")
    snapshot = backup_database(_engine(binlog_server, "tmpdb"), repo, snapshot_id=new_object_id())
    with binlog_server.connect("tmpdb") as c, c.cursor() as cur:
        cur.execute("SET SESSION binlog_format = 'STATEMENT'")
        cur.execute("CREATE TEMPORARY TABLE staging (id int, v varchar(8))")
        cur.execute("INSERT INTO staging VALUES (1, 'x'), (2, 'y')")
        cur.execute("FLUSH BINARY LOGS")
        cur.execute("INSERT INTO real_rows SELECT id, v FROM staging ORDER BY id")
    time.sleep(1.1)
    moment = _now(binlog_server)
    time.sleep(1.1)
    binlog_server.execute("FLUSH BINARY LOGS")
    _push_all_but_newest(binlog_server, repo, snapshot.server)
    target = _engine(binlog_server, "tmpdb_copy")
    result = restore_to_time(repo, snapshot, target, moment, lambda: restore_snapshot(
        repo, snapshot.id, target, RestoreRequest(owner=False)))
    assert len(result.files) >= 2, result.files
    with binlog_server.connect("tmpdb_copy") as c, c.cursor() as cur:
        cur.execute("SELECT id, v FROM real_rows ORDER BY id")
        assert list(cur.fetchall()) == [(1, "x"), (2, "y")]

    # The control: the file that uses the temporary table, replayed in a session of its own, fails;
    # the database the failed restore created is dropped again.
    split = _engine(binlog_server, "tmpdb_split")
    later = sorted(binlog_server.data.glob("binlog.[0-9]*"))
    second = next(p for p in later if p.name.lower() == result.files[1])
    with pytest.raises(VaultflowError, match="staging"):
        _restore_and_replay(split, lambda: restore_snapshot(repo, snapshot.id, split, RestoreRequest(owner=False)),
                            [second], ["--database=tmpdb", "--rewrite-db=tmpdb->tmpdb_split"])
    assert not split.database_exists(), "nothing partial is left"


def test_a_gap_inside_the_replayed_files_refuses_and_one_outside_them_does_not(
        binlog_server: PrivateMariaDB, tmp_path: Path) -> None:
    Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(tmp_path / "repo"), PASSPHRASE)
    s = binlog_server
    s.execute("CREATE DATABASE gapdb", "CREATE TABLE gapdb.t (id int PRIMARY KEY)", "INSERT INTO gapdb.t VALUES (1)")
    first = backup_database(_engine(s, "gapdb"), repo, snapshot_id=new_object_id())
    s.execute("INSERT INTO gapdb.t VALUES (2)")
    time.sleep(1.1)
    before_gap = _now(s)  # in the snapshot's own file
    time.sleep(1.1)
    s.execute("FLUSH BINARY LOGS")
    lost = s.master_status()[0]
    s.execute("INSERT INTO gapdb.t VALUES (3)", "FLUSH BINARY LOGS")
    time.sleep(1.1)
    second = backup_database(_engine(s, "gapdb"), repo, snapshot_id=new_object_id())
    s.execute("INSERT INTO gapdb.t VALUES (4)")
    time.sleep(1.1)
    after_gap = _now(s)
    time.sleep(1.1)
    s.execute("FLUSH BINARY LOGS")
    _push_all_but_newest(s, repo, first.server)
    repo.store.delete(binlog_key(first.server, lost))
    number = int(lost.rsplit(".", 1)[1])

    # From the first snapshot to a moment before the lost file: the gap is outside the replay.
    target = _engine(s, "gap_before")
    restore_to_time(repo, first, target, before_gap, lambda: restore_snapshot(
        repo, first.id, target, RestoreRequest(owner=False)))
    assert _rows_of(s, "gap_before") == [1, 2]
    # From the first snapshot past the lost file: refused, the target untouched.
    with pytest.raises(InputError, match=f"binlog files {number} of .* are missing"):
        restore_to_time(repo, first, _engine(s, "gap_across"), after_gap,
                        lambda: pytest.fail("restored across a gap"))
    # The snapshot after the gap reaches the same moment.
    assert pick_snapshot(repo, first.server, "gapdb", after_gap).id == second.id
    target = _engine(s, "gap_after")
    restore_to_time(repo, second, target, after_gap, lambda: restore_snapshot(
        repo, second.id, target, RestoreRequest(owner=False)))
    assert _rows_of(s, "gap_after") == [1, 2, 3, 4]
    with s.connect() as c, c.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'gap_across'")
        assert cur.fetchall() == ()


def _rows_of(server: PrivateMariaDB, database: str) -> list[int]:
    with server.connect(database) as c, c.cursor() as cur:
        cur.execute("SELECT id FROM t ORDER BY id")
        return [int(r[0]) for r in cur.fetchall()]
