"""The drill flows under a real Prefect API: catalog records, artifacts, events, concurrency."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from flows.drill import drill_latest, validate_restore
from tests.conftest import PASSPHRASE
from vaultflow.catalog import Catalog, DrillStatus
from vaultflow.drill import DrillFailed
from vaultflow.engines.sqlite.engine import SqliteEngine
from vaultflow.operations.backup import backup_database
from vaultflow.repository import Repository, new_object_id
from vaultflow.sample_data import create
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")


def _backup(repo_path: Path, src: Path) -> str:
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    return backup_database(SqliteEngine(src), repo, snapshot_id=new_object_id()).id


def _events(api: str, database: str) -> list[dict[str, object]]:
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    body = {"filter": {"event": {"prefix": ["vaultflow.drill."]}}, "limit": 50}
    for _ in range(40):
        events = httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]
        mine = [e for e in events if e["resource"].get("prefect.resource.name") == database]
        if mine:
            return mine
        time.sleep(0.5)
    return []


def _markdown(key: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> list[str]:
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            return [str(a.data) for a in found]

    return asyncio.run(read())


def test_validate_restore_records_publishes_and_emits(prefect_api: str, repo_path: Path, tmp_path: Path) -> None:
    src = create(tmp_path / "flowdrill.db", rows=400)
    sid = _backup(repo_path, src)
    result = validate_restore(database="flowdrill.db", repository=str(repo_path),
                              scratch=f"sqlite:///{tmp_path / 'scratch'}/")
    assert result["passed"] is True and result["snapshot_id"] == sid
    assert not list((tmp_path / "scratch").glob("vaultflow_drill_*"))
    (rec,) = Catalog().drills()
    assert rec.status == DrillStatus.PASSED and rec.snapshot_id == sid and rec.restore_seconds is not None
    assert any("Restore drill PASSED: flowdrill.db" in md and "content checksum" in md
               for md in _markdown("vaultflow-drill"))
    (event,) = _events(prefect_api, "flowdrill.db")
    assert event["event"] == "vaultflow.drill.succeeded"
    assert event["resource"]["prefect.resource.id"].startswith("vaultflow.database.sqlite.")
    assert event["payload"]["snapshot"] == sid


def test_failed_drill_fails_the_run_names_the_check_and_emits_failed(
        prefect_api: str, repo_path: Path, tmp_path: Path) -> None:
    src = create(tmp_path / "flowfail.db", rows=400)
    sid = _backup(repo_path, src)
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "tight.yaml").write_text("table: orders\nexpectations:\n  - type: expect_column_values_to_be_between\n"
                                       "    kwargs: {column: amount, min_value: 0, max_value: 1}\n")
    with pytest.raises(DrillFailed, match=r"main.orders: expect_column_values_to_be_between\(amount\)"):
        validate_restore(snapshot=sid[:8], repository=str(repo_path), suites=str(suites))
    (rec,) = Catalog().drills()
    assert rec.status == DrillStatus.FAILED and rec.checks_failed == 1
    (event,) = _events(prefect_api, "flowfail.db")
    assert event["event"] == "vaultflow.drill.failed" and "tight" in str(event["payload"]["failed_checks"])


def test_drill_latest_drills_each_database_within_the_concurrency_limit(repo_path: Path, tmp_path: Path) -> None:
    a, b = create(tmp_path / "a.db", rows=300), create(tmp_path / "b.db", rows=300)
    _backup(repo_path, a)
    newest_a = _backup(repo_path, a)
    newest_b = _backup(repo_path, b)
    rows = drill_latest(repository=str(repo_path), max_concurrent=1)
    assert sorted(str(r["snapshot"]) for r in rows) == sorted([newest_a[:8], newest_b[:8]])
    drills = sorted(Catalog().drills(), key=lambda d: d.started_at)
    assert {d.snapshot_id for d in drills} == {newest_a, newest_b}
    assert all(d.status == DrillStatus.PASSED for d in drills)
    first, second = drills
    assert first.finished_at is not None and first.finished_at <= second.started_at, "max_concurrent=1 overlapped"


_CANCELLED_RUN = """
import signal, sys
from pathlib import Path
from prefect.exceptions import TerminationSignal
import tasks.drill
from flows.drill import validate_restore
from vaultflow.drill import run_drill

marker = Path(sys.argv[3])

def cancel_after_restore(*args, **kwargs):
    def hook(scratch):
        marker.write_text(str(scratch.path) if scratch.path.exists() else "missing")
        raise TerminationSignal(signal.SIGTERM)
    return run_drill(*args, **kwargs, after_restore=hook)

tasks.drill.run_drill = cancel_after_restore
validate_restore(database="cancelled.db", repository=sys.argv[1], scratch=sys.argv[2])
"""


def test_cancelled_drill_run_drops_the_scratch_database(prefect_api: str, repo_path: Path, tmp_path: Path) -> None:
    """Prefect turns a cancellation (SIGTERM from the runner) into TerminationSignal inside
    the run and then ends the process; the drill's cleanup must drop the scratch first."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    src = create(tmp_path / "cancelled.db", rows=200)
    _backup(repo_path, src)
    marker = tmp_path / "restored-at"
    proc = subprocess.run([sys.executable, "-c", _CANCELLED_RUN, str(repo_path), f"sqlite:///{tmp_path}/scratch/",
                           str(marker)], env=dict(os.environ, PREFECT_API_URL=prefect_api), cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0, proc.stdout
    restored = marker.read_text()
    assert restored.startswith(str(tmp_path / "scratch" / "vaultflow_drill_cancelled_db_")), restored
    assert not Path(restored).exists(), "the cancelled drill left its scratch database behind"


def test_drill_latest_uses_a_scratch_per_engine_and_skips_file_trees(
        repo_path: Path, tmp_path: Path, pg_database: Callable[..., str], mariadb_available: None) -> None:
    """One repository holding PostgreSQL, MariaDB, SQLite and file-tree snapshots: each database
    drills on its engine's scratch (SQLite on its default), the file tree is skipped, not failed."""
    from tests.conftest import PG_HOST, PG_PORT, drop_my_database, my_admin, my_url, pg_url
    from vaultflow.engines import engine_from_url

    pg_name = pg_database()
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=pg_name, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        c.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 200) g")
    my_name = f"vft_{uuid.uuid4().hex[:10]}"
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{my_name}`")
        cur.execute(f"CREATE TABLE `{my_name}`.items (id int PRIMARY KEY, name varchar(40) NOT NULL)")
        cur.execute(f"INSERT INTO `{my_name}`.items VALUES " + ",".join(f"({i}, 'item {i}')" for i in range(200)))
    tree = tmp_path / "uploads"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "file.txt").write_text("hello")
    try:
        repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
        sources = (pg_url(pg_name), my_url(my_name), f"sqlite:///{create(tmp_path / 'lite.db', rows=200)}",
                   f"file://{tree}")
        backed_up = {backup_database(engine_from_url(url), repo, snapshot_id=new_object_id()).database
                     for url in sources}
        assert backed_up == {pg_name, my_name, "lite.db", "uploads"}
        rows = drill_latest(repository=str(repo_path), scratch="postgresql://postgres@127.0.0.1:5432",
                            scratch_per_engine={"mysql": "mysql://root@127.0.0.1:3306"})
    finally:
        drop_my_database(my_name)
    by_db = {str(r["database"]): r for r in rows}
    assert {by_db[d]["passed"] for d in (pg_name, my_name, "lite.db")} == {True}, rows
    assert by_db["uploads"]["passed"] is None and by_db["uploads"]["skipped"] is True
    assert "skipped: File trees cannot host restore drills" in str(by_db["uploads"]["summary"])
    assert {d.database for d in Catalog().drills() if d.status == DrillStatus.PASSED} == {pg_name, my_name, "lite.db"}
