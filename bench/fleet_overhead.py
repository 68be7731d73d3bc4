"""Issue 5 benchmark: Prefect overhead per database of the backup-fleet flow.

    .venv/bin/python bench/fleet_overhead.py [--databases 50]

Creates N tiny MariaDB databases (vft_fleetbench_<i>), backs them all up once through the
core directly, one after another (A), and once through the `backup-fleet` flow with one
dump at a time on the server (B), each into a fresh local repository. Prints A, B and the
overhead per database, (B - A) / N (target < 0.5 s). The flow runs against a throwaway
Prefect test harness, whose SQLite database makes every global-concurrency acquisition
cost about 2 s (see the Prefect notes): with a PostgreSQL-backed Prefect server that part
is about 0.05 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaultflow.backup import backup_database  # noqa: E402
from vaultflow.engines import engine_from_url  # noqa: E402
from vaultflow.repository import Repository, new_object_id  # noqa: E402
from vaultflow.storage import LocalStore  # noqa: E402

PASSPHRASE = "vaultflow bench passphrase"
URL = "mysql://root@127.0.0.1:3306"
PREFIX = "vft_fleetbench"


def admin(database: str | None = None) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(host="127.0.0.1", user="root", password="", database=database, autocommit=True)


def new_repo(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    Repository.init(LocalStore(path), PASSPHRASE)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", type=int, default=50)
    args = parser.parse_args()
    names = [f"{PREFIX}_{i:03d}" for i in range(args.databases)]
    work = Path(tempfile.mkdtemp(prefix="vf-fleet-bench-"))
    os.environ["VAULTFLOW_HOME"] = str(work / "home")
    os.environ["VAULTFLOW_PASSPHRASE"] = PASSPHRASE
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

        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        from flows.fleet import backup_fleet

        with prefect_test_harness(server_startup_timeout=120), \
                temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            repo_path = new_repo(work / "fleet")
            started = time.perf_counter()
            backup_fleet(servers=[URL], repository=str(repo_path), include=[f"{PREFIX}_*"], max_per_server=1)
            fleet = time.perf_counter() - started
        per_db = (fleet - direct) / len(names)
        print(f"\n{len(names)} tiny MariaDB databases")
        print(f"core backups, one after another (A): {direct:8.2f} s  ({direct / len(names):.3f} s each)")
        print(f"backup-fleet flow, limit 1 (B):      {fleet:8.2f} s  ({fleet / len(names):.3f} s each)")
        print(f"Prefect overhead per database (B - A) / N: {per_db:.3f} s  target < 0.5  "
              f"{'PASS' if per_db < 0.5 else 'MISS'} (SQLite-backed test harness)")
    finally:
        for name in names:
            with admin() as c, c.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
