"""With log_bin on, a MariaDB snapshot records its binlog coordinates and GTID position, taken
inside the dump's transaction snapshot: the snapshot restored, then the binlog replayed from
exactly there, gives the source's state (no change lost, none applied twice)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MY_HOST, MY_PORT, PASSPHRASE, ROOT, drop_my_database, my_admin
from tests.engines.mysql.private_server import PrivateMariaDB, private_mariadb
from vaultflow.engines import engine_from_url
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.requests import RestoreRequest
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def binlog_server(mariadb_available: None) -> Iterator[PrivateMariaDB]:
    with private_mariadb("--log-bin=binlog", "--server-id=7", "--binlog-format=ROW") as server:
        yield server


@pytest.fixture
def repo(repo_path: Path) -> Repository:
    return Repository.open(LocalStore(repo_path), PASSPHRASE)


def _rows(server: PrivateMariaDB, database: str) -> list[tuple[object, ...]]:
    with server.connect(database) as c, c.cursor() as cur:
        cur.execute("SELECT id, name FROM items ORDER BY id")
        return list(cur.fetchall())


def test_the_recorded_position_replays_every_later_change_exactly_once(
        binlog_server: PrivateMariaDB, repo: Repository) -> None:
    binlog_server.execute("CREATE DATABASE shop", "CREATE TABLE shop.items (id int PRIMARY KEY, name varchar(40))",
                          "INSERT INTO shop.items VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    manifest = backup_database(engine_from_url(binlog_server.url("shop")), repo, snapshot_id=new_object_id())
    position = manifest.binlog
    assert position is not None and position.file.startswith("binlog.") and position.position > 0, position
    assert position.gtid and position.gtid.startswith("0-7-"), position
    assert position == repo.load_manifest(manifest.id).binlog

    # After the snapshot: an insert, an update and a delete, then where the binlog stands.
    binlog_server.execute("INSERT INTO items VALUES (4, 'd')", "UPDATE items SET name = 'B' WHERE id = 2",
                          "DELETE FROM items WHERE id = 3", database="shop")
    expected = _rows(binlog_server, "shop")
    stop_file, stop_position = binlog_server.master_status()
    assert stop_file == position.file, "one binlog file in this test"

    binlog_server.execute("DROP DATABASE shop")
    restore_snapshot(repo, manifest.id, engine_from_url(binlog_server.url("shop")), RestoreRequest(owner=False))
    assert _rows(binlog_server, "shop") == [(1, "a"), (2, "b"), (3, "c")]
    replay = subprocess.run(
        f"{shutil.which('mariadb-binlog')} --start-position={position.position} --stop-position={stop_position} "
        f"--database=shop {binlog_server.data / position.file} | {shutil.which('mariadb')} --protocol=TCP "
        f"-h127.0.0.1 -P{binlog_server.port} -uroot", shell=True, capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert _rows(binlog_server, "shop") == expected


def test_without_a_binlog_no_position_is_recorded(repo: Repository, mariadb_available: None) -> None:
    with my_admin() as c, c.cursor() as cur:
        cur.execute("SELECT @@log_bin")
        assert cur.fetchone() == (0,), "the shared test server runs without log_bin"
        cur.execute("CREATE DATABASE vft_nobinlog")
        cur.execute("CREATE TABLE vft_nobinlog.t (id int PRIMARY KEY)")
    try:
        manifest = backup_database(engine_from_url(f"mysql://root@{MY_HOST}:{MY_PORT}/vft_nobinlog"), repo,
                                   snapshot_id=new_object_id())
        assert manifest.binlog is None
    finally:
        drop_my_database("vft_nobinlog")


def test_pitr_check_says_what_a_server_lacks_for_binlog_recovery(binlog_server: PrivateMariaDB,
                                                                  mariadb_available: None) -> None:
    from vaultflow.engines.mysql.pitr_check import check_binlog_readiness

    ready = check_binlog_readiness(engine_from_url(binlog_server.url("mysql")))  # type: ignore[arg-type]
    assert ready.ready, ready.as_dict()
    assert {c.name: c.status for c in ready.checks}["binlog_format"] == "ok"
    assert "binlog-stream" in ready.note and "--to-gtid" in ready.note

    binlog_server.execute("CREATE USER IF NOT EXISTS 'reader'@'127.0.0.1'",
                          "GRANT SELECT ON *.* TO 'reader'@'127.0.0.1'", "SET GLOBAL binlog_format = 'STATEMENT'")
    try:
        lacking = check_binlog_readiness(engine_from_url(binlog_server.url("mysql", "reader")))  # type: ignore[arg-type]
    finally:
        binlog_server.execute("SET GLOBAL binlog_format = 'ROW'")
    checks = {c.name: c for c in lacking.checks}
    assert not lacking.ready and checks["replication privileges"].status == "missing"
    assert checks["replication privileges"].fix == (
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'reader'@'127.0.0.1';",)
    assert checks["binlog_format"].status == "advisable" and "non-deterministic" in checks["binlog_format"].value

    shared = subprocess.run([sys.executable, "-m", "vaultflow.cli.main", "pitr", "check",
                             f"mysql://root@{MY_HOST}:{MY_PORT}", "--json"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert shared.returncode == 3, shared.stdout + shared.stderr
    result = json.loads(shared.stdout)
    assert not result["ready"] and {c["name"]: c["status"] for c in result["checks"]}["log_bin"] == "missing"
