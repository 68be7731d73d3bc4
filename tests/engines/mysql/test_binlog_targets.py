"""Restore to a binlog position or a GTID on a MariaDB server with gtid_strict_mode=ON: the copy holds
exactly the transactions before the position (every domain's before the GTID's end), the replay
renumbers its transactions (strict mode would refuse the source's numbers), and a bad position or
GTID is refused in one line with the target untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT
from tests.engines.mysql.private_server import PrivateMariaDB, private_mariadb
from tests.engines.mysql.test_binlog_replay import _engine, _now, _rows
from tests.engines.postgres.test_pitr import one_error_line
from vaultflow.engines.mysql.binlog import push_binlog
from vaultflow.engines.mysql.binlog_events import parse_gtid
from vaultflow.engines.mysql.binlog_replay import (
    archived_binlogs,
    pick_snapshot,
    plan_to_gtid,
    plan_to_position,
    restore_to_position,
    restore_to_time,
)
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.requests import RestoreRequest
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def strict_server(mariadb_available: None) -> Iterator[PrivateMariaDB]:
    with private_mariadb("--log-bin=binlog", "--server-id=21", "--binlog-format=ROW", "--gtid-strict-mode=ON") as s:
        yield s


def _gtid_pos(server: PrivateMariaDB) -> str:
    with server.connect() as c, c.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        return str(cur.fetchone()[0])


def _last_gtid(server: PrivateMariaDB, domain: int) -> str:
    return next(g for g in _gtid_pos(server).split(",") if g.startswith(f"{domain}-"))


@dataclass
class Written:
    root: Path
    repo: Repository
    snapshot: SnapshotManifest
    after_first: tuple[str, int]  # SHOW MASTER STATUS right after the first insert
    rows_after_first: list[tuple[object, ...]]
    other_domain_gtid: str  # the insert in domain 1, logged after a second insert in domain 0
    rows_at_other_domain: list[tuple[object, ...]]
    inside: tuple[str, int]  # a position inside the last transaction


@pytest.fixture(scope="module")
def written(strict_server: PrivateMariaDB, tmp_path_factory: pytest.TempPathFactory) -> Written:
    root = tmp_path_factory.mktemp("targets")
    Repository.init(LocalStore(root / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(root / "repo"), PASSPHRASE)
    s = strict_server
    s.execute("CREATE DATABASE shop", "CREATE TABLE shop.items (id int PRIMARY KEY, name varchar(40))",
              "INSERT INTO shop.items VALUES (1, 'a')")
    snapshot = backup_database(_engine(s, "shop"), repo, snapshot_id=new_object_id())
    s.execute("INSERT INTO items VALUES (2, 'b')", database="shop")
    after_first = s.master_status()
    rows_after_first = _rows(s, "shop")
    s.execute("FLUSH BINARY LOGS", "INSERT INTO shop.items VALUES (3, 'c')")
    with s.connect("shop") as c, c.cursor() as cur:
        cur.execute("SET SESSION gtid_domain_id = 1")
        cur.execute("INSERT INTO items VALUES (4, 'd')")
    other = _last_gtid(s, 1)
    rows_at_other = _rows(s, "shop")
    file, before_last = s.master_status()
    s.execute("INSERT INTO shop.items VALUES (5, 'e'), (6, 'f')")
    s.execute("FLUSH BINARY LOGS")
    newest = s.master_status()[0]
    for path in sorted(s.data.glob("binlog.[0-9]*")):
        if path.name != newest:
            push_binlog(repo, snapshot.server, path)
    return Written(root, repo, snapshot, after_first, rows_after_first, other, rows_at_other, (file, before_last + 20))


def test_restore_to_a_moment_works_under_gtid_strict_mode(strict_server: PrivateMariaDB, tmp_path: Path) -> None:
    """The replay into the same server would log GTIDs below the server's newest (ERROR 1950 in
    strict mode) if it kept the source's sequence numbers."""
    s = strict_server
    Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(tmp_path / "repo"), PASSPHRASE)
    s.execute("CREATE DATABASE strict_src", "CREATE TABLE strict_src.t (id int PRIMARY KEY, v int)",
              "INSERT INTO strict_src.t VALUES (1, 1)")
    snapshot = backup_database(_engine(s, "strict_src"), repo, snapshot_id=new_object_id())
    s.execute("INSERT INTO strict_src.t VALUES (2, 2)", "UPDATE strict_src.t SET v = 10 WHERE id = 1")
    time.sleep(1.1)
    moment = _now(s)
    with s.connect("strict_src") as c, c.cursor() as cur:
        cur.execute("SELECT id, v FROM t ORDER BY id")
        expected = list(cur.fetchall())
    time.sleep(1.1)
    s.execute("DELETE FROM strict_src.t", "FLUSH BINARY LOGS")
    newest = s.master_status()[0]
    for path in sorted(s.data.glob("binlog.[0-9]*")):
        if path.name != newest:
            push_binlog(repo, snapshot.server, path)
    before = _last_gtid(s, 0)
    target = _engine(s, "strict_copy")
    chosen = pick_snapshot(repo, snapshot.server, "strict_src", moment)
    result = restore_to_time(repo, chosen, target, moment, lambda: restore_snapshot(
        repo, chosen.id, target, RestoreRequest(owner=False)))
    with s.connect("strict_copy") as c, c.cursor() as cur:
        cur.execute("SELECT id, v FROM t ORDER BY id")
        assert list(cur.fetchall()) == expected
        cur.execute("SELECT @@GLOBAL.gtid_strict_mode")
        assert cur.fetchone()[0] == 1
    assert result.last_gtid is not None
    after = _last_gtid(s, 0)
    assert parse_gtid(after).sequence > parse_gtid(before).sequence, "the replay was logged with new numbers"


def test_restore_to_a_position_holds_exactly_the_transactions_before_it(strict_server: PrivateMariaDB,
                                                                         written: Written) -> None:
    target = _engine(strict_server, "shop_at_position")
    with archived_binlogs(written.repo, written.snapshot.server) as archive:
        plan = plan_to_position(archive, "shop", *written.after_first)
        assert plan.snapshot.id == written.snapshot.id
        result = restore_to_position(archive, plan, target, lambda: restore_snapshot(
            written.repo, plan.snapshot.id, target, RestoreRequest(owner=False)))
    assert _rows(strict_server, "shop_at_position") == written.rows_after_first
    assert result.last_event_position is not None and int(result.last_event_position) <= written.after_first[1]


def test_restore_to_a_gtid_holds_every_domain_up_to_its_transaction(strict_server: PrivateMariaDB,
                                                                     written: Written, tmp_path: Path) -> None:
    with archived_binlogs(written.repo, written.snapshot.server) as archive:
        plan = plan_to_gtid(archive, "shop", parse_gtid(written.other_domain_gtid))
    assert plan.file == written.inside[0] and plan.position == written.inside[1] - 20
    cli = [sys.executable, "-m", "vaultflow.cli.main", "pitr", "restore"]
    env = {**os.environ, "VAULTFLOW_PASSPHRASE": PASSPHRASE}
    done = subprocess.run([*cli, strict_server.url("shop"), "--to-gtid", written.other_domain_gtid, "--into",
                           strict_server.url("shop_at_gtid"), "--repo", str(written.root / "repo"), "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # The domain-1 insert and the domain-0 insert logged before it; not the one after.
    assert _rows(strict_server, "shop_at_gtid") == written.rows_at_other_domain
    row = json.loads(done.stdout)
    assert row["snapshot"] == written.snapshot.id and row["last_gtid"] is not None
    assert row["binlog_files"][-1] == written.inside[0]


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--to-position", "binlog:12", ("is not a binlog position", "FILE:POS")),
    ("--to-position", "binlog.000099:4", ("binlog file binlog.000099", "is not archived")),
    ("--to-position", "binlog.000001:4", ("is before the oldest snapshot",)),
    ("--to-position", "INSIDE", ("is inside a transaction", "nearest positions")),
    ("--to-position", "AFTER", ("is after the last archived event",)),
    ("--to-gtid", "0-21", ("is not a MariaDB GTID",)),
    ("--to-gtid", "7-21-1", ("domain 7", "does not hold")),
    ("--to-gtid", "0-21-9999", ("is after the last archived transaction",)),
    ("--to-gtid", "0-21-1", ("is before the oldest snapshot",)),
])
def test_bad_positions_and_gtids_are_refused_in_one_line_leaving_the_target_untouched(
        strict_server: PrivateMariaDB, written: Written, option: str, value: str, words: tuple[str, ...]) -> None:
    if value == "INSIDE":
        value = f"{written.inside[0]}:{written.inside[1]}"
    elif value == "AFTER":
        value = f"{written.inside[0]}:{written.inside[1] + 10_000}"
    cli = [sys.executable, "-m", "vaultflow.cli.main", "pitr", "restore"]
    env = {**os.environ, "VAULTFLOW_PASSPHRASE": PASSPHRASE}
    refused = subprocess.run([*cli, strict_server.url("shop"), option, value, "--into",
                              strict_server.url("shop_refused"), "--repo", str(written.root / "repo")],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    one_error_line(refused, 2, *words)
    with strict_server.connect() as c, c.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'shop_refused'")
        assert cur.fetchall() == ()
