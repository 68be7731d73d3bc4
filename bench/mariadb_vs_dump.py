"""Issue 5 benchmark: vaultflow backup of a MariaDB database against mariadb-dump | zstd -3.

    .venv/bin/python bench/mariadb_vs_dump.py [--mib 1024] [--runs 3] [--keep]

1. Creates (or reuses) the database vaultflow_bench_my_<mib> on 127.0.0.1:3306 as root:
   an `orders` table (numbers, text, JSON, a blob) of about MIB MiB of dump text.
2. Times, --runs times each, interleaved: `mariadb-dump --single-transaction --routines
   --triggers --events --hex-blob | zstd -3 -T1 > file` (the reference), and a full
   vaultflow backup into a fresh local repository (same process, table checksums on).
3. Changes 1 % of the rows in one key range and takes an incremental: prints the share of
   the full's stored bytes it added.
Prints min/median wall seconds and output bytes per side and the ratio (target <= 1.15).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaultflow.engines import engine_from_url  # noqa: E402
from vaultflow.operations.backup import backup_database, plan_backup  # noqa: E402
from vaultflow.repository import Repository, new_object_id  # noqa: E402
from vaultflow.storage import LocalStore  # noqa: E402

HOST, PORT = "127.0.0.1", 3306
PASSPHRASE = "vaultflow bench passphrase"  # a throwaway repository, benchmark only
ROW_BYTES = 330  # dump text per row, measured


def connect(database: str | None = None) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(host=HOST, port=PORT, user="root", password="", database=database, autocommit=True)


def prepare(name: str, mib: int) -> int:
    rows = mib * 1024 * 1024 // ROW_BYTES
    with connect() as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    with connect(name) as c, c.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'orders'")
        if cur.fetchone():
            cur.execute("SELECT count(*) FROM orders")
            row = cur.fetchone()
            if row and int(row[0]) == rows:
                return rows
            cur.execute("DROP TABLE orders")
        cur.execute("CREATE TABLE orders (id int PRIMARY KEY, customer int, amount decimal(12,2), note text, "
                    "doc json, tag blob, KEY (customer))")
        step = 200_000
        for start in range(1, rows + 1, step):
            end = min(rows, start + step - 1)
            cur.execute(f"INSERT INTO orders SELECT seq, seq % 5000, seq * 1.37, repeat(md5(seq), 3), "
                        f"json_object('n', seq, 'tags', json_array('a', seq % 7)), unhex(md5(seq)) "
                        f"FROM seq_{start}_to_{end}")
    return rows


def time_reference(name: str, out: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with open(out, "wb") as f:
        dump = subprocess.Popen(["mariadb-dump", "-h", HOST, "-P", str(PORT), "-u", "root", "--single-transaction",
                                 "--routines", "--triggers", "--events", "--hex-blob", name], stdout=subprocess.PIPE)
        zstd = subprocess.run(["zstd", "-3", "-T1", "-q", "-c"], stdin=dump.stdout, stdout=f, check=True)
        assert dump.wait() == 0 and zstd.returncode == 0
    return time.perf_counter() - started, out.stat().st_size


def time_vaultflow(name: str, repo_dir: Path) -> tuple[float, int, Repository]:
    shutil.rmtree(repo_dir, ignore_errors=True)
    Repository.init(LocalStore(repo_dir), PASSPHRASE)
    repo = Repository.open(LocalStore(repo_dir), PASSPHRASE)
    engine = engine_from_url(f"mysql://root@{HOST}:{PORT}/{name}")
    started = time.perf_counter()
    manifest = backup_database(engine, repo, snapshot_id=new_object_id())
    return time.perf_counter() - started, manifest.stored_size, repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024, help="size of the dump text in MiB (1024: ~1 GB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the database for the next run")
    parser.add_argument("--database", help="name of the generated database (default vaultflow_bench_my_MIB)")
    args = parser.parse_args()
    name = args.database or f"vaultflow_bench_my_{args.mib}"
    rows = prepare(name, args.mib)
    work = Path(tempfile.mkdtemp(prefix="vf-bench-my-"))
    ref: list[float] = []
    vf: list[float] = []
    ref_size = vf_size = 0
    repo = None
    try:
        for run in range(args.runs):
            seconds, ref_size = time_reference(name, work / "dump.sql.zst")
            ref.append(seconds)
            seconds, vf_size, repo = time_vaultflow(name, work / "repo")
            vf.append(seconds)
            print(f"run {run + 1}: reference {ref[-1]:.2f} s, vaultflow {vf[-1]:.2f} s", file=sys.stderr)
        assert repo is not None
        engine = engine_from_url(f"mysql://root@{HOST}:{PORT}/{name}")
        full = max(repo.manifests(), key=lambda m: m.started_at)
        with connect(name) as c, c.cursor() as cur:
            cur.execute(f"UPDATE orders SET note = concat(note, 'x') WHERE id BETWEEN {rows // 2} AND "
                        f"{rows // 2 + rows // 100}")
        sid = new_object_id()
        inc = backup_database(engine, repo, snapshot_id=sid, plan=plan_backup(repo, engine, "incremental", sid))
        added = inc.added_size(full)
        print(f"\nMariaDB {args.mib} MiB ({rows} rows), {args.runs} run(s)")
        print(f"{'side':<46} {'min s':>8} {'median s':>9} {'bytes':>14}")
        print(f"{'mariadb-dump --single-transaction | zstd -3':<46} {min(ref):>8.2f} {statistics.median(ref):>9.2f} "
              f"{ref_size:>14}")
        print(f"{'vaultflow backup (full)':<46} {min(vf):>8.2f} {statistics.median(vf):>9.2f} {vf_size:>14}")
        ratio = statistics.median(vf) / statistics.median(ref)
        print(f"time ratio vaultflow / reference (median): {ratio:.2f}  target <= 1.15  "
              f"{'PASS' if ratio <= 1.15 else 'MISS'}")
        print(f"incremental after 1 % of rows changed in one key range: {added} bytes, "
              f"{added / full.stored_size:.1%} of the full")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            with connect() as c, c.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


if __name__ == "__main__":
    main()
