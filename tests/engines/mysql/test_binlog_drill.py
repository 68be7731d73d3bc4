"""MySQL/MariaDB PITR drills: a mark taken while clients write records the tables and the binlog
position of one transaction snapshot; the drill restores the snapshot before it, replays the
binlogs to the position in a vaultflow_drill_* database, finds every table equal, drops it and
records the RTO; a gap fails the drill naming it; bad marks fail in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT
from tests.engines.mysql.private_server import PrivateMariaDB, private_mariadb
from tests.engines.mysql.test_binlog_replay import _engine, _push_all_but_newest
from tests.engines.postgres.test_pitr import one_error_line
from vaultflow.engines.mysql.binlog import binlog_key
from vaultflow.engines.mysql.binlog_mark import compare_with_binlog_mark, pick_binlog_mark
from vaultflow.operations.backup import backup_database
from vaultflow.repository import Repository, new_object_id
from vaultflow.repository.manifest import TableStats
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def drill_server(mariadb_available: None) -> Iterator[PrivateMariaDB]:
    with private_mariadb("--log-bin=binlog", "--server-id=31", "--binlog-format=ROW") as server:
        yield server


@dataclass
class Marked:
    base: Path
    repo: Repository
    snapshot: str
    server: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "VAULTFLOW_REPO": str(self.base / "repo"),
               "VAULTFLOW_PASSPHRASE": PASSPHRASE, "VAULTFLOW_HOME": str(self.base / "home")}
        env.pop("VAULTFLOW_CATALOG_URL", None)
        return subprocess.run([sys.executable, "-m", "vaultflow.cli.main", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=600, check=False)


def _scratch_databases(server: PrivateMariaDB) -> list[str]:
    with server.connect() as c, c.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'vaultflow\\_drill\\_%'")
        return [str(r[0]) for r in cur.fetchall()]


def _write_until(server: PrivateMariaDB, stop: threading.Event, counter: list[int]) -> None:
    """Transactions that move money between two tables: a mark torn between them would not add up."""
    with server.connect("bank") as c, c.cursor() as cur:
        cur.execute("SET autocommit = 0")
        while not stop.is_set():
            n = counter[0] = counter[0] + 1
            cur.execute("INSERT INTO ledger (amount) VALUES (%s)", (n,))
            cur.execute("UPDATE balance SET total = total + %s WHERE id = 1", (n,))
            c.commit()


@pytest.fixture(scope="module")
def marked(drill_server: PrivateMariaDB, tmp_path_factory: pytest.TempPathFactory) -> Marked:
    base = tmp_path_factory.mktemp("binlog-drill")
    Repository.init(LocalStore(base / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(base / "repo"), PASSPHRASE)
    s = drill_server
    s.execute("CREATE DATABASE bank", "CREATE TABLE bank.ledger (id int AUTO_INCREMENT PRIMARY KEY, amount int)",
              "CREATE TABLE bank.balance (id int PRIMARY KEY, total bigint)", "INSERT INTO bank.balance VALUES (1, 0)")
    snapshot = backup_database(_engine(s, "bank"), repo, snapshot_id=new_object_id())
    s.execute("FLUSH BINARY LOGS")
    _push_all_but_newest(s, repo, snapshot.server)  # binlog-stream has archived something of this server
    done = Marked(base, repo, snapshot.id, snapshot.server)
    stop, counter = threading.Event(), [0]
    writer = threading.Thread(target=_write_until, args=(s, stop, counter))
    writer.start()
    try:
        while counter[0] < 100:
            stop.wait(0.05)
        s.execute("FLUSH BINARY LOGS")  # writes span files between the snapshot and the mark
        while counter[0] < 200:
            stop.wait(0.05)
        made = done.cli("pitr", "mark", s.url("bank"), "--name", "under-load", "--json")
        s.execute("FLUSH BINARY LOGS")  # the mark's position lies in the file before this rotation
        while counter[0] < 400 + json.loads(made.stdout or "{}").get("tables", 0):
            stop.wait(0.05)
    finally:
        stop.set()
        writer.join()
    assert made.returncode == 0, made.stdout + made.stderr
    s.execute("FLUSH BINARY LOGS")
    _push_all_but_newest(s, repo, snapshot.server)
    return done


def test_a_mark_taken_while_clients_write_is_drilled_with_exact_counts(drill_server: PrivateMariaDB,
                                                                       marked: Marked) -> None:
    mark = pick_binlog_mark(marked.repo, marked.server, "bank", "under-load")
    rows = {t.name: t.rows for t in mark.tables}
    assert rows["balance"] == 1 and 0 < rows["ledger"], rows
    with drill_server.connect("bank") as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM ledger")
        assert cur.fetchone()[0] > rows["ledger"], "clients wrote on after the mark"
    drilled = marked.cli("pitr", "drill", drill_server.url("bank"), "--mark", "under-load", "--json")
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    report = json.loads(drilled.stdout)
    assert report["passed"], report["summary"]
    assert report["mark"] == "under-load" and report["rto_seconds"] > 0
    assert report["snapshot_id"] == marked.snapshot
    assert {c["status"] for c in report["checks"]} == {"passed"} and len(report["checks"]) == 4
    assert report["scratch_database"].startswith("vaultflow_drill_bank_pitr_")
    assert _scratch_databases(drill_server) == []
    # The newest mark is the default; the drill is in the catalog and the audit trail.
    again = marked.cli("pitr", "drill", drill_server.url("bank"))
    assert again.returncode == 0 and "PITR drill of mark 'under-load' (snapshot" in again.stdout, again.stderr
    listed = marked.cli("pitr", "marks", drill_server.url("bank"))
    assert "under-load" in listed.stdout and "bank" in listed.stdout, listed.stdout + listed.stderr
    audit = marked.cli("audit", "--json")
    assert any(r.get("action") == "drill" and r.get("object") == "mark under-load"
               for r in json.loads(audit.stdout)), audit.stdout + audit.stderr
    # A table that differs is a failed check naming it.
    changed = [t if t.name != "ledger" else TableStats(schema="", name="ledger", rows=t.rows - 1, checksum="x")
               for t in mark.tables]
    failed = [c for c in compare_with_binlog_mark(mark, changed) if c.status == "failed"]
    assert [c.object for c in failed] == ["bank.ledger", "bank.ledger"]


def test_a_missing_binlog_fails_the_drill_naming_it_and_bad_marks_fail_in_one_line(
        drill_server: PrivateMariaDB, marked: Marked, tmp_path: Path) -> None:
    missing = marked.cli("pitr", "drill", drill_server.url("bank"), "--mark", "nope")
    one_error_line(missing, 2, "no mark named 'nope'")
    bad = marked.cli("pitr", "mark", drill_server.url("bank"), "--name", "no spaces")
    one_error_line(bad, 2, "mark name 'no spaces'")
    taken = marked.cli("pitr", "mark", drill_server.url("bank"), "--name", "under-load")
    one_error_line(taken, 2, "already has a mark named 'under-load'")
    other = marked.cli("pitr", "drill", drill_server.url("otherdb"), "--mark", "under-load")
    one_error_line(other, 2, "is of database 'bank'")
    # A binlog file between the snapshot and the mark goes missing: the drill fails naming it.
    snapshot = marked.repo.load_manifest(marked.snapshot)
    assert snapshot.binlog is not None
    lost = snapshot.binlog.file.lower()
    number = int(lost.rsplit(".", 1)[1]) + 1
    key = binlog_key(marked.server, f"{lost.rsplit('.', 1)[0]}.{number:06d}")
    saved = marked.repo.store.get(key)
    marked.repo.store.delete(key)
    try:
        gap = marked.cli("pitr", "drill", drill_server.url("bank"), "--mark", "under-load")
        line = one_error_line(gap, 1, "cannot be reached", f"binlog files {number} of")
        assert "under-load" in line
    finally:
        marked.repo.store.put(key, saved, sync=True)
    assert _scratch_databases(drill_server) == []


def test_the_pitr_drill_flow_drills_a_mysql_mark_and_emits_the_drill_event(
        prefect_api: str, drill_server: PrivateMariaDB, marked: Marked, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.pitr_drill import pitr_drill
    from tests.flows.test_drill_flows import _events

    monkeypatch.setenv("VAULTFLOW_PASSPHRASE", PASSPHRASE)
    row = pitr_drill(cluster=drill_server.url("bank"), repository=str(marked.base / "repo"), mark="under-load")
    assert row["mark"] == "under-load" and row["rto_s"] > 0  # type: ignore[operator]
    events = _events(prefect_api, "bank")
    assert any(e["event"] == "vaultflow.drill.succeeded" and "mysql" in e["resource"]["prefect.resource.id"]
               for e in events), events
    assert _scratch_databases(drill_server) == []


def test_the_flow_s_mark_waits_until_its_binlog_is_stored_and_says_so_when_it_is_not(
        drill_server: PrivateMariaDB, marked: Marked) -> None:
    """archive_mark_binlog (the pitr-drill flow's mark task): it rotates the binlog and returns once the
    mark's file reached the repository (here pushed by a thread standing in for binlog-stream); with
    nothing pushing, one MarkFailed line naming the file and binlog-stream."""
    from vaultflow.engines.mysql.binlog_mark import archive_mark_binlog, create_binlog_mark
    from vaultflow.engines.pitr_marks import MarkFailed

    engine = _engine(drill_server, "bank")
    first = create_binlog_mark(engine, marked.repo, "wait-pushed")
    pusher = threading.Timer(1.0, _push_all_but_newest, args=(drill_server, marked.repo, marked.server))
    pusher.start()
    try:
        archive_mark_binlog(engine, marked.repo, first, wait=60)
    finally:
        pusher.join()
    second = create_binlog_mark(engine, marked.repo, "wait-unpushed")
    with pytest.raises(MarkFailed) as failed:
        archive_mark_binlog(engine, marked.repo, second, wait=2)
    line = failed.value.line()
    assert second.binlog.file in line and "binlog-stream" in line and "\n" not in line, line
