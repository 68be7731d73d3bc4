"""Discovery and fleet backups across both local servers, under the session's Prefect API."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from blocks import MySQLServer, PostgresServer
from blocks.resolve import database_ref, saved_engine_blocks
from flows.discovery import discover
from flows.fleet import backup_fleet
from tests.conftest import drop_my_database, drop_pg_database, my_admin, pg_admin
from vaultflow.catalog import Catalog, DatabaseRecord, SnapshotStatus
from vaultflow.discovery import select_databases
from vaultflow.errors import InputError

pytestmark = pytest.mark.usefixtures("prefect_api", "pg_available", "mariadb_available")
PG = "postgresql://postgres@127.0.0.1:5432"
MY = "mysql://root@127.0.0.1:3306"


@pytest.fixture
def databases() -> Iterator[Callable[[str, str, int], list[str]]]:
    """Factory: `n` small databases named PREFIX_i on "pg" or "my"; all dropped afterwards."""
    made: list[tuple[str, str]] = []

    def make(server: str, prefix: str, n: int) -> list[str]:
        names = [f"{prefix}_{i:02d}" for i in range(n)]
        for name in names:
            made.append((server, name))
            if server == "pg":
                with pg_admin() as c:
                    c.execute(f'CREATE DATABASE "{name}"')
                import psycopg

                with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as c:
                    c.execute("CREATE TABLE t (id int PRIMARY KEY, v text); "
                              "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 200) g")
            else:
                with my_admin() as c, c.cursor() as cur:
                    cur.execute(f"CREATE DATABASE `{name}`")
                with my_admin(name) as c, c.cursor() as cur:
                    cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
                    cur.execute("INSERT INTO t SELECT seq, md5(seq) FROM seq_1_to_200")
        return names

    yield make
    for server, name in made:
        (drop_pg_database if server == "pg" else drop_my_database)(name)


def test_select_databases_defaults_and_warnings() -> None:
    names = ["postgres", "template1", "app", "app_test", "billing"]
    selected, excluded, warnings = select_databases(names, engine="postgresql", include=["app*", "nope*"],
                                                    exclude=["*_test"])
    assert selected == ["app"] and "postgres" in excluded and "app_test" in excluded
    assert warnings == ["pattern --include 'nope*' matches no database"]
    assert select_databases(names, engine="postgresql", include_system=True)[0] == names


def test_database_ref() -> None:
    assert database_ref("mysql://root@h:3306", "shop") == "mysql://root@h:3306/shop"
    assert database_ref("postgresql://u@h:5432/postgres?sslmode=require", "a") == "postgresql://u@h:5432/a?sslmode=require"
    assert database_ref("prod-pg", "a") == "prod-pg/a"


def test_discover_finds_databases_on_both_servers(databases: Callable[[str, str, int], list[str]]) -> None:
    tag = f"vft_disc_{uuid.uuid4().hex[:6]}"
    pg_names = databases("pg", tag, 3)
    my_names = databases("my", tag, 2)
    pg_block, my_block = f"pg-{tag}".replace("_", "-"), f"my-{tag}".replace("_", "-")
    PostgresServer(host="127.0.0.1").save(pg_block, overwrite=True)
    MySQLServer(host="127.0.0.1").save(my_block, overwrite=True)
    saved = dict(saved_engine_blocks())
    assert isinstance(saved[pg_block], PostgresServer) and isinstance(saved[my_block], MySQLServer)

    found = discover(servers=[pg_block, my_block], include=[f"{tag}_*", "matches_nothing_*"])
    by_engine = {f["engine"]: f for f in found}
    assert by_engine["postgresql"]["databases"] == pg_names
    assert by_engine["mysql"]["databases"] == my_names
    assert all("pattern --include 'matches_nothing_*' matches no database" in f["warnings"] for f in found)
    from sqlmodel import Session, select

    with Session(Catalog().engine) as s:
        recorded = {r.id for r in s.exec(select(DatabaseRecord)).all()}
    assert {f"postgresql://127.0.0.1:5432/{n}" for n in pg_names} <= recorded
    assert {f"mysql://127.0.0.1:3306/{n}" for n in my_names} <= recorded


def test_discover_cli(cli: Callable[..., CompletedProcess[str]], databases: Callable[[str, str, int], list[str]]
                      ) -> None:
    tag = f"vft_dcli_{uuid.uuid4().hex[:6]}"
    names = databases("my", tag, 2)
    out = cli("discover", MY, "--json", "--include", f"{tag}_*")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["databases"] == names
    bad = cli("discover", "mysql://root@127.0.0.1:1")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "127.0.0.1:1" in bad.stderr
    warned = cli("discover", PG, "--include", "vft_no_such_db_*")
    assert warned.returncode == 0 and "matches no database" in warned.stderr


def _max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda p: (p[0], p[1]))
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    return peak


def test_fleet_respects_the_per_server_limit_and_names_the_broken_database(
        databases: Callable[[str, str, int], list[str]], repo_path: Path) -> None:
    tag = f"vft_fleet_{uuid.uuid4().hex[:6]}"
    pg_names = databases("pg", tag, 10)
    my_names = databases("my", tag, 10)
    broken = databases("my", f"{tag}_broken", 1)[0]
    gone = f"vft_gone_{uuid.uuid4().hex[:6]}"
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"CREATE USER '{gone}'@'%'")
        cur.execute(f"GRANT SELECT ON *.* TO '{gone}'@'%'")
        cur.execute(f"CREATE DEFINER='{gone}'@'%' VIEW `{broken}`.stale AS SELECT id FROM `{broken}`.t")
        cur.execute(f"DROP USER '{gone}'@'%'")

    state = backup_fleet(servers=[PG, MY], repository=str(repo_path), include=[f"{tag}_*"], max_per_server=2,
                         return_state=True)
    assert state.is_failed()
    message = str(state.message) + str(state.result(raise_on_failure=False))
    assert "1 of 21 database backup(s) failed" in message and broken in message and "stale" in message
    for ok in pg_names + my_names:
        assert ok not in message

    rows = Catalog().snapshots(status=SnapshotStatus.SUCCEEDED)
    assert sorted(r.database for r in rows) == sorted(pg_names + my_names)
    for engine in ("postgresql", "mysql"):
        intervals = [(r.started_at, r.finished_at) for r in rows if r.engine == engine and r.finished_at]
        assert len(intervals) == 10
        assert _max_overlap(intervals) <= 2, f"more than 2 dumps at once on the {engine} server"
    failed = Catalog().snapshots(status=SnapshotStatus.FAILED)
    assert [r.database for r in failed] == [broken]


def test_coverage_lists_databases_without_a_recent_backup(repo_path: Path, tmp_path: Path,
                                                          cli: Callable[..., CompletedProcess[str]]) -> None:
    from flows.backup import backup
    from flows.discovery import coverage
    from vaultflow.sample_data import create

    db = create(tmp_path / "covered.db", rows=100)
    backup(source=f"sqlite:///{db}", repository=str(repo_path))
    Catalog().upsert_database("mysql", "127.0.0.1:3306", "never_backed_up")
    gaps = coverage(within_hours=1)["databases"]
    assert [(g["database"], g["last_success"]) for g in gaps] == [("never_backed_up", None)]
    out = cli("coverage", "--json", "--within-hours", "1")
    assert out.returncode == 1 and json.loads(out.stdout)["databases"][0]["database"] == "never_backed_up"
    assert len(coverage(within_hours=1e-6)["databases"]) == 2  # the sqlite backup is older than that


def test_backup_all_databases_cli(cli: Callable[..., CompletedProcess[str]], repo_path: Path,
                                  databases: Callable[[str, str, int], list[str]]) -> None:
    tag = f"vft_fcli_{uuid.uuid4().hex[:6]}"
    names = databases("my", tag, 2)
    out = cli("backup", MY, "--all-databases", "--include", f"{tag}_*", "--repo", str(repo_path), "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(r["database"] for r in json.loads(out.stdout)) == names
    misuse = cli("backup", MY, "--include", f"{tag}_*", "--repo", str(repo_path))
    assert misuse.returncode == 2 and "--all-databases" in misuse.stderr
    sid = json.loads(out.stdout)[0]["snapshot_id"]
    target = f"{MY}/{tag}_restored"
    try:
        restored = cli("restore", sid, target, "--globals", "--repo", str(repo_path))
        assert restored.returncode == 2 and "no server-wide objects" in restored.stderr
        no_table = cli("restore", sid, target, "--table", "nope", "--repo", str(repo_path))
        assert no_table.returncode == 2 and "has no table nope" in no_table.stderr, no_table.stderr
    finally:
        drop_my_database(f"{tag}_restored")


def test_the_catalog_url_never_becomes_a_flow_run_parameter(cli: Callable[..., CompletedProcess[str]]) -> None:
    """VAULTFLOW_CATALOG_URL may hold a password; the Prefect API stores a flow run's
    parameters and shows them in the UI, so the CLI leaves the URL to the environment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    name = f"vft_cat_{uuid.uuid4().hex[:6]}"
    secret = f"vft-secret-{uuid.uuid4().hex}"
    with pg_admin() as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {"VAULTFLOW_CATALOG_URL": f"postgresql+psycopg://postgres:{secret}@127.0.0.1:5432/{name}"}
        out = cli("coverage", "--json", env=env)
        assert out.returncode == 0 and json.loads(out.stdout) == {"databases": [], "wal": []}, out.stderr
        out = cli("discover", PG, "--include", f"{name}*", "--json", env=env)
        assert out.returncode == 0 and json.loads(out.stdout)[0]["databases"] == [name], out.stderr
        assert Catalog(env["VAULTFLOW_CATALOG_URL"]).coverage(timedelta(hours=1))[0]["database"] == name
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["coverage", "discover"])))
        assert {client_run.flow_id for client_run in runs}, "no flow runs recorded"
        for run in runs:
            assert secret not in json.dumps(run.parameters, default=str), f"flow run {run.name} stored the password"
    finally:
        drop_pg_database(name)


def test_a_catalog_url_parameter_with_a_password_is_refused(prefect_api: str) -> None:
    """Run parameters are stored and shown by Prefect: a password there is refused, and
    the message does not repeat it."""
    from flows.discovery import coverage, discover

    secret = f"vft-secret-{uuid.uuid4().hex}"
    url = f"postgresql+psycopg://postgres:{secret}@127.0.0.1:5432/postgres"
    for run in (lambda: coverage(catalog_url=url), lambda: discover(servers=[PG], catalog_url=url)):
        with pytest.raises(InputError) as err:
            run()
        assert "catalog_url parameter holds a password" in err.value.line() and secret not in err.value.line()


def test_a_repository_block_keeps_its_catalog_url_secret(prefect_api: str, tmp_path: Path) -> None:
    from blocks import BackupRepository
    from blocks.resolve import resolve_repository

    secret = f"vft-secret-{uuid.uuid4().hex}"
    url = f"postgresql+psycopg://postgres:{secret}@127.0.0.1:5432/postgres"
    name = f"vft-cat-{uuid.uuid4().hex[:6]}"
    BackupRepository(location=str(tmp_path / "repo"), passphrase="p", catalog_url=url).save(name)
    block = BackupRepository.load(name)
    assert secret not in repr(block) and secret not in json.dumps(block.model_dump(mode="json"))
    ref = resolve_repository(name)
    assert ref.catalog_url == url and secret not in repr(ref)
