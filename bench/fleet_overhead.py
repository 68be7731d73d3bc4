"""Issue 5 benchmark: Prefect overhead per database of the backup-fleet flow.

    .venv/bin/python bench/fleet_overhead.py [--databases 50] [--server postgres|harness|both]

Creates N tiny MariaDB databases (PREFIX_<i>, 100 rows each), backs them all up once through
the core directly, one after another (A), and once through the `backup-fleet` flow with one
dump at a time on the server (B, max_per_server=1), each into a fresh local repository.
Prints A, B and the overhead per database, (B - A) / N (target < 0.5 s).

B runs in a child process per API, against a Prefect API of one of two kinds:
- `postgres`: a real `prefect server start` on loopback, started and stopped here, with its
  database in PostgreSQL on 127.0.0.1:5432 (database --prefect-db, created fresh, dropped
  at the end), default client settings (flow heartbeats on) as a production deployment runs it.
- `harness`: prefect_test_harness (SQLite, flow heartbeats off, as the tests run it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymysql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaultflow.engines import engine_from_url  # noqa: E402
from vaultflow.operations.backup import backup_database  # noqa: E402
from vaultflow.repository import Repository, new_object_id  # noqa: E402
from vaultflow.storage import LocalStore  # noqa: E402

PASSPHRASE = "vaultflow bench passphrase"
URL = "mysql://root@127.0.0.1:3306"


def admin(database: str | None = None) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(host="127.0.0.1", user="root", password="", database=database, autocommit=True)


def new_repo(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    Repository.init(LocalStore(path), PASSPHRASE)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prefect_server(work: Path, **settings: str) -> Iterator[str]:
    """`prefect server start` on a free loopback port with `settings` (PREFECT_* variables) and
    its home under `work`, analytics and UI off; yields the API URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false", **settings)
    log = open(work / "prefect-server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start; see {work / 'prefect-server.log'}")
            time.sleep(0.5)
        yield api
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@contextlib.contextmanager
def postgres_prefect_server(database: str, work: Path) -> Iterator[str]:
    """`prefect server start` on a free loopback port, its database in PostgreSQL; yields the API URL."""
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{database}"')
    try:
        with prefect_server(
                work, PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
                PREFECT_UI_STATIC_DIRECTORY=str(work / "prefect-ui"), PREFECT_LOGGING_SERVER_LEVEL="WARNING") as api:
            yield api
    finally:
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def run_fleet(prefix: str, repo_path: Path) -> float:
    from flows.fleet import backup_fleet

    started = time.perf_counter()
    backup_fleet(servers=[URL], repository=str(repo_path), include=[f"{prefix}_*"], max_per_server=1)
    return time.perf_counter() - started


def fleet_in_child(kind: str, args: argparse.Namespace, work: Path) -> float:
    """B in a fresh process: Prefect's clients and services are per process, bound to one API."""
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--prefix", args.prefix, "--prefect-db",
                          args.prefect_db, "--work", str(work)], stdout=subprocess.PIPE, check=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def fleet_on(kind: str, prefix: str, work: Path, prefect_db: str) -> float:
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    repo_path = new_repo(work / f"fleet-{kind}")
    if kind == "harness":
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120), \
                temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            return run_fleet(prefix, repo_path)
    with postgres_prefect_server(prefect_db, work) as api, temporary_settings({PREFECT_API_URL: api}):
        seconds = run_fleet(prefix, repo_path)
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all()  # before the server stops (not timed)
        EventsWorker.drain_all()
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", type=int, default=50)
    parser.add_argument("--server", choices=["postgres", "harness", "both"], default="both")
    parser.add_argument("--prefix", default="vft_fleetbench", help="prefix of the generated MariaDB databases")
    parser.add_argument("--prefect-db", default="vaultflow_bench_prefect",
                        help="PostgreSQL database of the Prefect server (created and dropped)")
    parser.add_argument("--child", choices=["postgres", "harness"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        work = Path(args.work)
        os.environ["VAULTFLOW_HOME"] = str(work / f"home-{args.child}")
        os.environ["VAULTFLOW_PASSPHRASE"] = PASSPHRASE
        print(fleet_on(args.child, args.prefix, work, args.prefect_db))
        return
    names = [f"{args.prefix}_{i:03d}" for i in range(args.databases)]
    work = Path(tempfile.mkdtemp(prefix="vf-fleet-bench-"))
    os.environ["VAULTFLOW_HOME"] = str(work / "home")
    os.environ["VAULTFLOW_PASSPHRASE"] = PASSPHRASE
    kinds = ["postgres", "harness"] if args.server == "both" else [args.server]
    try:
        for name in names:
            with admin() as c, c.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
            with admin(name) as c, c.cursor() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text)")
                cur.execute("INSERT IGNORE INTO t SELECT seq, md5(seq) FROM seq_1_to_100")
        repo = Repository.open(LocalStore(new_repo(work / "direct")), PASSPHRASE)
        started = time.perf_counter()
        for name in names:
            backup_database(engine_from_url(f"{URL}/{name}"), repo, snapshot_id=new_object_id())
        direct = time.perf_counter() - started
        fleet = {kind: fleet_in_child(kind, args, work) for kind in kinds}
        print(f"\n{len(names)} tiny MariaDB databases")
        print(f"core backups, one after another (A): {direct:8.2f} s  ({direct / len(names):.3f} s each)")
        for kind, seconds in fleet.items():
            label = {"postgres": "prefect server, PostgreSQL", "harness": "test harness, SQLite"}[kind]
            per_db = (seconds - direct) / len(names)
            print(f"backup-fleet flow, limit 1, {label + ' (B):':<32} {seconds:8.2f} s  "
                  f"({seconds / len(names):.3f} s each)  overhead (B - A) / N: {per_db:.3f} s  target < 0.5  "
                  f"{'PASS' if per_db < 0.5 else 'MISS'}")
    finally:
        for name in names:
            with admin() as c, c.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
