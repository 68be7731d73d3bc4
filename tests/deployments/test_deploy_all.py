"""Works as deployed: `vaultflow deploy` of prefect.yaml to a real `prefect server start`
(scheduler on) creates every deployment as written (warning about blocks not saved yet);
each one, run once through one process worker with the blocks its parameters name, ends
Completed having done what its description says, its actions audited under its name; a run
naming a missing block fails once, not retried; one schedule is fired by the scheduler itself.

Slow (minutes): each flow run is a worker subprocess. Deselect with `-m "not slow"`.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from deployments.specs import DeploymentSpec, load_project
from tests.archive.cases import SqliteCase, sample_rows
from tests.conftest import (
    MY_HOST,
    MY_PORT,
    PASSPHRASE,
    PG_HOST,
    PG_PORT,
    drop_my_database,
    drop_pg_database,
    my_admin,
    pg_admin,
    pg_url,
)
from tests.deployments.conftest import PREFECT, PrefectServer, flow_key, wait_for_flow_run
from tests.engines.postgres import conftest as pg_clusters
from tests.engines.postgres.conftest import WAL_COMMAND, ArchivingCluster, switch_and_wait
from vaultflow.archive import list_batches
from vaultflow.audit import records
from vaultflow.repository import Repository
from vaultflow.sample_data import create
from vaultflow.storage import LocalStore

PREFECT_SCHEDULER = True  # read by the prefect_server fixture
archiving_cluster = pg_clusters.archiving_cluster  # the module's private archiving cluster (a fixture)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

# Parameters that name blocks, and where prefect.yaml may put them.
BLOCK_KEYS = ("repository", "destination", "source", "scratch", "servers")


def named_blocks(specs: list[DeploymentSpec]) -> set[str]:
    """Block names the deployments' parameters (and their schedules' parameters) name."""
    names: set[str] = set()
    for spec in specs:
        for values in [spec.parameters, *(s.parameters for s in spec.schedules)]:
            for key in BLOCK_KEYS:
                refs = values.get(key) or []
                for ref in refs if isinstance(refs, list) else [refs]:
                    names.add(str(ref).partition("/")[0])
    return names


@dataclass
class Fixture:
    """What the test created: fresh databases, files and the two repositories."""

    pg_db: str
    pg_restored: str
    my_db: str
    sqlite_db: Path
    archive: SqliteCase
    repo: Path
    offsite: Path
    pitr: ArchivingCluster  # a private cluster archiving into its own repository (base-backup, pitr-drill)
    snapshots: dict[str, str] = field(default_factory=dict)  # engine -> newest snapshot id

    def open(self, path: Path | None = None) -> Repository:
        return Repository.open(LocalStore(path or self.repo), PASSPHRASE)

    @property
    def pitr_server(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pitr.port}"

    def pitr_run(self, **extra: str) -> dict[str, Any]:
        """Parameters of a run on the archiving cluster, into the repository it archives to."""
        return {"source": self.pitr_server, "repository": str(self.pitr.repo), **extra}


# The one place that says how each deployment is run once, and what it must have done.
# Overrides only where prefect.yaml names a production database (`pg-prod/app`) or a whole
# shared server (mysql-fleet would back up every database of the test MariaDB).
# drill-daily: until `scratch` maps engines to scratch servers, pg-scratch drills PostgreSQL only.
# base-backup and pitr-drill (and coverage's WAL check) run on the archiving cluster; the drill's scratch
# server runs the all-users vaultflow-wal in a directory the postgres OS user owns.
Overrides = Callable[[Fixture], dict[str, Any]]
PHASES: list[list[tuple[str, Overrides]]] = [
    [  # 1: backups, archival, discovery, credentials
        ("backup/postgres-app", lambda f: {"source": f"pg-prod/{f.pg_db}", "kind": "full"}),
        ("backup/sqlite-app", lambda f: {"kind": "full", "options": {"jobs": 2, "table_checksums": False}}),
        ("backup-fleet/mysql-fleet", lambda f: {"include": [f.my_db], "kind": "full"}),
        ("archive-rows/archive-nightly", lambda f: {}),
        ("discover/discover-hourly", lambda f: {}),
        ("check-credentials/credentials-daily", lambda f: {}),
        ("base-backup/base-backup", lambda f: f.pitr_run()),
    ],
    [  # 2: what needs a snapshot or an archive
        ("verify/verify-daily", lambda f: {}),
        ("copy/copy-offsite", lambda f: {}),
        ("drill-latest/drill-daily", lambda f: {"databases": [f.pg_db]}),
        ("validate-restore/validate-restore", lambda f: {"snapshot": f.snapshots["sqlite"]}),
        ("restore/restore", lambda f: {"snapshot": f.snapshots["postgresql"], "target": f"pg-prod/{f.pg_restored}"}),
        ("coverage/coverage-hourly", lambda f: {"repository": str(f.pitr.repo)}),
        ("unarchive-rows/unarchive", lambda f: {"batches": [_batches(f, "audit-kept")[0]]}),
        ("purge-archives/purge-archives-weekly", lambda f: {}),
    ],
    [  # 3: prune last (it may delete what the others read); the PITR drill (own repository) in its spare slots
        ("retention/prune-daily", lambda f: {}),
        ("pitr-drill/pitr-drill", lambda f: f.pitr_run(wal_command=str(WAL_COMMAND),
                                                       scratch_dir=str(f.pitr.base / "scratch"))),
    ],
]


def _batches(f: Fixture, policy: str) -> list[str]:
    records, _ = list_batches(f.open())
    return [r.id for r in records if r.policy == policy]


def _api(server: PrefectServer, method: str, path: str, body: Any = None, **fields: Any) -> Any:
    """One API call; a 503 (the SQLite-backed server busy under the worker's writes) is retried."""
    payload = body if body is not None else fields or None
    for _ in range(5):
        # A generous read timeout: right after the pauses the SQLite-backed server can stall for
        # tens of seconds, and a create_flow_run must not be sent twice.
        response = httpx.request(method, f"{server.url}{path}", json=payload, timeout=120)
        if response.status_code != 503:
            break
        time.sleep(2)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:500]}"
    return response.json() if response.content else None


def _artifacts(server: PrefectServer, flow_run_id: str) -> dict[str, Any]:
    """key -> data (tables parsed) of the artifacts one flow run created."""
    found = _api(server, "POST", "/artifacts/filter", artifacts={"flow_run_id": {"any_": [flow_run_id]}})
    return {a["key"]: json.loads(a["data"]) if isinstance(a["data"], str) and a["data"][:1] in "[{" else a["data"]
            for a in found if a.get("key")}


@pytest.fixture
def made(tmp_path: Path, pg_available: None, mariadb_available: None,
         archiving_cluster: ArchivingCluster) -> Iterator[Fixture]:
    suffix = uuid.uuid4().hex[:8]
    f = Fixture(pg_db=f"vft_all_{suffix}", pg_restored=f"vft_all_{suffix}_r", my_db=f"vft_my_{suffix}",
                sqlite_db=create(tmp_path / "app.db", rows=300), archive=SqliteCase(_mkdir(tmp_path / "archive")),
                repo=tmp_path / "repo", offsite=tmp_path / "offsite", pitr=archiving_cluster)
    switch_and_wait(f.pitr, switches=1)  # a segment archived, which the base backup's archive check finds
    archiving_cluster.give_to_postgres(_mkdir(archiving_cluster.base / "scratch"))
    for path in (f.repo, f.offsite):
        Repository.init(LocalStore(path), PASSPHRASE)
    with pg_admin() as c:
        c.execute(f'CREATE DATABASE "{f.pg_db}"')
    with psycopg.connect(pg_url(f.pg_db), autocommit=True) as c:
        c.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric(10,2), placed date)")
        c.execute("INSERT INTO orders SELECT g, g * 1.5, DATE '2024-01-01' + g FROM generate_series(1, 200) g")
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{f.my_db}`")
        cur.execute(f"CREATE TABLE `{f.my_db}`.items (id int PRIMARY KEY, name varchar(40))")
        cur.execute(f"INSERT INTO `{f.my_db}`.items VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    # Aged rows for the two policies: events' batches are due for purging at once, audit's never.
    f.archive.create_table("events")
    f.archive.insert(sample_rows(40, 5), name="events")
    f.archive.create_table("audit")
    f.archive.insert(sample_rows(30, 3), name="audit")
    try:
        yield f
    finally:
        drop_pg_database(f.pg_db)
        drop_pg_database(f.pg_restored)
        drop_my_database(f.my_db)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _save_blocks(server: PrefectServer, f: Fixture) -> set[str]:
    """Every block prefect.yaml names, pointing at this test's servers, files and repositories."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from blocks.archive import ArchivePolicy
    from blocks.engines import MySQLServer, PostgresServer, SqliteDatabase
    from blocks.repository import BackupRepository

    with temporary_settings({PREFECT_API_URL: server.url}):
        blocks = {
            "vaultflow-repo": BackupRepository(location=str(f.repo), passphrase=PASSPHRASE),
            "vaultflow-offsite": BackupRepository(location=str(f.offsite), passphrase=PASSPHRASE),
            "pg-prod": PostgresServer(host=PG_HOST, port=PG_PORT, user="postgres"),
            "pg-scratch": PostgresServer(host=PG_HOST, port=PG_PORT, user="postgres"),
            "mysql-prod": MySQLServer(host=MY_HOST, port=MY_PORT, user="root"),
            "app-sqlite": SqliteDatabase(path=str(f.sqlite_db)),
            "events-purged": ArchivePolicy(source=f.archive.url, table="events", age_column="created_at",
                                           archive_after_days=30, batch_size=20, delete_after_days=0),
            "audit-kept": ArchivePolicy(source=f.archive.url, table="audit", age_column="created_at",
                                        archive_after_days=30, batch_size=20),
        }
        for name, block in blocks.items():
            block.save(name, overwrite=True)  # type: ignore[attr-defined]
    return set(blocks)


def _check(key: str, f: Fixture, run: dict[str, Any], artifacts: dict[str, Any]) -> None:
    """What each deployment's description promises, read from the repository, databases and artifacts."""
    text = json.dumps(artifacts)
    if key == "backup/postgres-app":
        assert any(f.open().load_manifest(s).database == f.pg_db for s in f.open().snapshot_ids())
    elif key == "backup/sqlite-app":
        assert any(f.open().load_manifest(s).engine == "sqlite" for s in f.open().snapshot_ids())
    elif key == "backup-fleet/mysql-fleet":
        assert f.my_db in text, text[:2000]
        assert any(f.open().load_manifest(s).database == f.my_db for s in f.open().snapshot_ids())
    elif key == "archive-rows/archive-nightly":
        assert len(f.archive.rows("events")) == 5 and len(f.archive.rows("audit")) == 3
        assert "events-purged" in text and "audit-kept" in text, text[:2000]
    elif key == "discover/discover-hourly":
        databases = {row["database"] for row in artifacts["vaultflow-discovery"]}
        assert {f.pg_db, f.my_db} <= databases, sorted(databases)[:50]
    elif key == "check-credentials/credentials-daily":
        assert {r["repository"] for r in artifacts["vaultflow-credentials"]} == {"vaultflow-repo", "vaultflow-offsite"}
    elif key == "verify/verify-daily":
        rows = artifacts["vaultflow-verify"]
        assert len(rows) == len(f.open().snapshot_ids()) == 3 and all(r["valid"] for r in rows), rows
    elif key == "copy/copy-offsite":
        assert f.open(f.offsite).snapshot_ids() == f.open().snapshot_ids()
    elif key == "drill-latest/drill-daily":
        (row,) = artifacts["vaultflow-drills"]
        assert row["database"] == f.pg_db and row["passed"] is True, row
    elif key == "validate-restore/validate-restore":
        assert "vaultflow-drill" in text and '"passed": false' not in text.lower(), text[:2000]
    elif key == "restore/restore":
        with psycopg.connect(pg_url(f.pg_restored)) as c:
            assert c.execute("SELECT count(*) FROM orders").fetchone() == (200,)
    elif key == "coverage/coverage-hourly":
        gaps = {(g["engine"], g["database"]) for g in artifacts["vaultflow-coverage"]}
        assert ("postgresql", f.pg_db) not in gaps and ("mysql", f.my_db) not in gaps, sorted(gaps)[:20]
        (wal,) = artifacts["vaultflow-wal-coverage"]
        assert wal["system_identifier"] == str(f.pitr.sysid()) and not wal["lagging"] and not wal["gaps"], wal
    elif key == "base-backup/base-backup":
        (row,) = artifacts["vaultflow-backup-summary"]
        assert row["physical"] is True and row["system_identifier"] == str(f.pitr.sysid()), row
        pitr_repo = f.open(f.pitr.repo)
        assert [m.short_id for m in map(pitr_repo.load_manifest, pitr_repo.snapshot_ids()) if m.base_backup] == \
            [row["snapshot"]]
    elif key == "pitr-drill/pitr-drill":
        assert "Restore drill PASSED" in artifacts["vaultflow-drill"], artifacts["vaultflow-drill"][:2000]
    elif key == "unarchive-rows/unarchive":
        assert len(f.archive.rows("audit")) > 3, "an archived batch of audit is back"
    elif key == "purge-archives/purge-archives-weekly":
        records, _ = list_batches(f.open())
        status = {(r.policy, r.status.value) for r in records}
        assert ("events-purged", "purged") in status and ("events-purged", "archived") not in status, status
        assert not any(p == "audit-kept" and s == "purged" for p, s in status), status
        assert "has no delete_after_days" in text, text[:2000]
    elif key == "retention/prune-daily":
        assert "vaultflow-retention" in artifacts, text[:2000]
        assert f.open().snapshot_ids(), "the default preset keeps today's snapshots"
    else:
        raise AssertionError(f"no check for deployment {key}: add it to PHASES and _check")


def test_every_deployment_works_as_deployed(prefect_server: PrefectServer, background: Any, tmp_path: Path,
                                            made: Fixture) -> None:
    # `vaultflow deploy` = check prefect.yaml, create the process pool, `prefect --no-prompt deploy --all`;
    # a block not saved yet is a warning, not a refusal.
    deployed = prefect_server.run(sys.executable, "-m", "vaultflow.cli.main", "deploy", timeout=300)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert "created process work pool vaultflow" in deployed.stdout
    assert "warning: deployment 'postgres-app' parameter source: no database URL and no saved engine block " \
        "named 'pg-prod'" in deployed.stderr
    assert _api(prefect_server, "GET", "/work_pools/vaultflow")["type"] == "process"
    project = load_project(check_parameters=False)
    assert named_blocks(project.deployments) <= _save_blocks(prefect_server, made)

    deployments = _deployments_as_written(prefect_server, project)
    # The scheduler is on: pause every deployment (deleting the runs it scheduled) but the test's own.
    for d in deployments.values():
        _api(prefect_server, "POST", f"/deployments/{d['id']}/pause_deployment")
    sqlite_app = deployments["backup/sqlite-app"]
    missing = _api(prefect_server, "POST", f"/deployments/{sqlite_app['id']}/create_flow_run",
                   parameters={"source": "no-such-sqlite"})["id"]

    background(*PREFECT, "worker", "start", "--pool", "vaultflow", "--limit", "4", log=tmp_path / "worker.log",
               PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5")
    try:
        for phase in PHASES:
            started = {key: _api(prefect_server, "POST", f"/deployments/{deployments[key]['id']}/create_flow_run",
                                 parameters=overrides(made))["id"] for key, overrides in phase}
            for key, run_id in started.items():
                run = wait_for_flow_run(prefect_server, run_id, timeout=300)
                assert run["state"]["type"] == "COMPLETED", (key, run["state"])  # type: ignore[index]
                _check(key, made, run, _artifacts(prefect_server, run_id))
            if phase is PHASES[0]:
                for manifest in (made.open().load_manifest(s) for s in made.open().snapshot_ids()):
                    made.snapshots[manifest.engine] = manifest.id
                _check_audited_as(made, "backup/postgres-app", started["backup/postgres-app"])
                _check_missing_block_failed_once(prefect_server, missing)

        # One schedule fired by the scheduler itself: every 20 s on the credentials check.
        credentials = deployments["check-credentials/credentials-daily"]
        anchor = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
        _api(prefect_server, "POST", f"/deployments/{credentials['id']}/schedules",
             [{"schedule": {"interval": 20, "anchor_date": anchor, "timezone": "UTC"}, "active": True}])
        _api(prefect_server, "POST", f"/deployments/{credentials['id']}/resume_deployment")
        scheduled = _first_scheduled_run(prefect_server, credentials["id"], timeout=120)
        _api(prefect_server, "POST", f"/deployments/{credentials['id']}/pause_deployment")
        done = wait_for_flow_run(prefect_server, scheduled, timeout=180)
        assert done["state"]["type"] == "COMPLETED", done["state"]  # type: ignore[index]
        assert done["auto_scheduled"] is True
    except AssertionError:
        print((tmp_path / "worker.log").read_text()[-6000:], file=sys.stderr)
        raise


def _deployments_as_written(server: PrefectServer, project: Any) -> dict[str, dict[str, Any]]:
    """Every deployment read back from the API (flow/name -> deployment) equals prefect.yaml's:
    schedules, parameters, tags, pool; the server refuses a parameter the form would refuse."""
    flows = {f["id"]: f["name"] for f in _api(server, "POST", "/flows/filter")}
    found = {f"{flows[d['flow_id']]}/{d['name']}": d for d in _api(server, "POST", "/deployments/filter")}
    assert sorted(found) == sorted(k for phase in PHASES for k, _ in phase)
    assert set(found) == {flow_key(s) for s in project.deployments}
    for spec in project.deployments:
        d = found[flow_key(spec)]
        assert d["parameters"] == spec.parameters
        assert d["work_pool_name"] == "vaultflow" and set(d["tags"]) == set(spec.tags)
        assert d["enforce_parameter_schema"] is True
        got = sorted((s["slug"], s["schedule"]["cron"], s["schedule"]["timezone"], s["parameters"])
                     for s in d["schedules"])
        assert got == sorted((s.slug, s.cron, s.timezone, s.parameters) for s in spec.schedules)
    sqlite_app = found["backup/sqlite-app"]
    assert sqlite_app["parameter_openapi_schema"]["properties"]["kind"]["enum"] == \
        ["full", "incremental", "differential"]
    assert sqlite_app["global_concurrency_limit"]["limit"] == 1
    for parameters, named in (({"kind": "weekly"}, ("kind", "weekly")), ({"options": {"jobs": 0}}, ("jobs",))):
        bad = httpx.post(f"{server.url}/deployments/{sqlite_app['id']}/create_flow_run",
                         json={"parameters": parameters}, timeout=30)
        assert bad.status_code in (409, 422) and all(n in bad.text for n in named), bad.text
    return found


def _check_audited_as(f: Fixture, deployment: str, flow_run_id: str) -> None:
    """The deployment's backup is in the audit trail under the deployment's name and its flow run."""
    backups = [r for r in records(f.open()) if r.action == "backup" and r.database == f.pg_db]
    assert [(r.outcome, r.actor.deployment, r.actor.flow_run) for r in backups] == \
        [("succeeded", deployment, flow_run_id)], backups


def _check_missing_block_failed_once(server: PrefectServer, run_id: str) -> None:
    """A run naming a block that does not exist fails in one line naming it, not retried."""
    failed = wait_for_flow_run(server, run_id, timeout=120)
    message = str(failed["state"]["message"])  # type: ignore[index]
    assert failed["state"]["type"] == "FAILED", failed["state"]  # type: ignore[index]
    assert "no-such-sqlite" in message and "block" in message, message
    tasks = _api(server, "POST", "/task_runs/filter", flow_runs={"id": {"any_": [run_id]}})
    assert [t["run_count"] for t in tasks if t["name"].startswith("open-backup-run")] == [1], json.dumps(tasks)[:500]


def _first_scheduled_run(server: PrefectServer, deployment_id: str, timeout: float) -> str:
    """The id of the first run the scheduler made for a deployment that a worker picked up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _api(server, "POST", "/flow_runs/filter", flow_runs={
            "deployment_id": {"any_": [deployment_id]},
            "state": {"type": {"any_": ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CRASHED"]}}})
        picked = [r for r in runs if r["auto_scheduled"]]
        if picked:
            return str(picked[0]["id"])
        time.sleep(2)
    raise AssertionError(f"the scheduler started no run of deployment {deployment_id} in {timeout} s")

