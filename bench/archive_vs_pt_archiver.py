"""Issue 7 benchmark: vaultflow archive against pt-archiver on MariaDB; vaultflow on PostgreSQL.

    .venv/bin/python bench/archive_vs_pt_archiver.py [--rows 200000] [--aged 80000] [--batch-size 10000]
                                                    [--engines mysql,postgresql] [--out DIR]

The issue's run (2 million aged rows out of 5 million):

    .venv/bin/python bench/archive_vs_pt_archiver.py --rows 5000000 --aged 2000000 --batch-size 10000

1. Builds a template table of --rows rows (id bigint primary key, created_at, amount decimal,
   note varchar, payload varbinary, flag), the first --aged of them years old, once per engine.
2. For each tool, copies the template into a fresh `events` table (not timed), then times
   moving the aged rows out with the same batch size:
   - pt-archiver (Debian percona-toolkit) --file, --limit/--txn-size = batch size (its default
     row-by-row delete, the issue's reference), and again with --bulk-delete;
   - vaultflow archive_table into a fresh local repository (Parquet, sealed, read back and
     verified before each delete).
3. Checks each left exactly the young rows, prints rows/s side by side and the ratio
   (issue 7 target: vaultflow >= 1x pt-archiver), and writes OUT/archive_vs_pt_archiver.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pymysql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaultflow.archive import ArchiveSpec, archive_table, source_from_url  # noqa: E402
from vaultflow.repository import Repository  # noqa: E402
from vaultflow.storage import LocalStore  # noqa: E402

DB = "vaultflow_bench_archive"
PASSPHRASE = "vaultflow bench passphrase"  # a throwaway repository, benchmark only
CUTOFF_SQL = "2024-01-01 00:00:00"


def mysql(db: str | None = None) -> Any:
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=db, autocommit=True)


def build_mysql(rows: int, aged: int) -> None:
    with mysql() as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
        cur.execute(f"USE {DB}")
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                    (DB, f"template_{rows}_{aged}"))
        if cur.fetchone()[0]:
            return
        cur.execute(f"""CREATE TABLE template_{rows}_{aged} (id bigint PRIMARY KEY, created_at datetime(6) NOT NULL,
            amount decimal(12,2), note varchar(200), payload varbinary(64), flag tinyint(1)) ENGINE=InnoDB""")
        cur.execute(f"""INSERT INTO template_{rows}_{aged}
            SELECT seq, IF(seq <= {aged}, TIMESTAMP'2020-01-01 00:00:00' + INTERVAL seq SECOND,
                               NOW(6) - INTERVAL 1 HOUR),
                   seq * 3.17, CONCAT('note ', seq, ' ', REPEAT('x', seq % 50)), UNHEX(MD5(seq)), seq % 2
            FROM seq_1_to_{rows}""")


def fresh_mysql_table(rows: int, aged: int) -> None:
    with mysql(DB) as c, c.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS events")
        cur.execute(f"CREATE TABLE events LIKE template_{rows}_{aged}")
        cur.execute(f"INSERT INTO events SELECT * FROM template_{rows}_{aged}")


def mysql_count() -> int:
    with mysql(DB) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM events")
        return int(cur.fetchone()[0])


def build_pg(rows: int, aged: int) -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone():
            c.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DB}", autocommit=True) as c:
        name = f"template_{rows}_{aged}"
        if c.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0]:  # type: ignore[index]
            return
        c.execute(f"""CREATE TABLE {name} (id bigint PRIMARY KEY, created_at timestamptz NOT NULL,
            amount numeric(12,2), note varchar(200), payload bytea, flag boolean)""")
        c.execute(f"""INSERT INTO {name} SELECT g, CASE WHEN g <= {aged} THEN timestamptz '2020-01-01 00:00+00'
                   + g * interval '1 second' ELSE now() - interval '1 hour' END, g * 3.17,
                   'note ' || g || ' ' || repeat('x', g % 50), decode(md5(g::text), 'hex'), g % 2 = 0
            FROM generate_series(1, {rows}) g""")


def fresh_pg_table(rows: int, aged: int) -> None:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DB}", autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS events")
        c.execute(f"CREATE TABLE events (LIKE template_{rows}_{aged} INCLUDING ALL)")
        c.execute(f"INSERT INTO events SELECT * FROM template_{rows}_{aged}")
        c.execute("VACUUM ANALYZE events")


def pg_count() -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DB}") as c:
        return int(c.execute("SELECT count(*) FROM events").fetchone()[0])  # type: ignore[index]


def run_vaultflow(url: str, batch: int, work: Path) -> tuple[float, int, int]:
    repo_dir = work / "repo"
    shutil.rmtree(repo_dir, ignore_errors=True)
    repo = Repository.init(LocalStore(repo_dir), PASSPHRASE)
    spec = ArchiveSpec(table="events", age_column="created_at",
                       cutoff=datetime(2024, 1, 1, tzinfo=UTC), batch_size=batch)
    assert spec.cutoff < datetime.now(UTC) - timedelta(days=1)
    start = time.perf_counter()
    report = archive_table(repo, source_from_url(url), spec)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in repo_dir.rglob("*") if p.is_file())
    return seconds, report.rows, size


def run_pt_archiver(batch: int, work: Path, bulk: bool) -> tuple[float, int]:
    out = work / "pt-archiver.txt"
    out.unlink(missing_ok=True)
    argv = ["pt-archiver", "--source", f"h=127.0.0.1,P=3306,u=root,D={DB},t=events",
            "--where", f"created_at < '{CUTOFF_SQL}'", "--file", str(out), "--limit", str(batch),
            "--txn-size", str(batch), "--no-check-charset", *(["--bulk-delete"] if bulk else [])]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pt-archiver failed: {proc.stderr.strip()[:500]}")
    return seconds, out.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--aged", type=int, default=80_000)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--engines", default="mysql,postgresql")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args()
    engines = args.engines.split(",")
    results: dict[str, Any] = {"rows": args.rows, "aged": args.aged, "batch_size": args.batch_size,
                               "when": datetime.now(UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="vf-archive-bench-") as tmp:
        work = Path(tmp)
        if "mysql" in engines:
            if not shutil.which("pt-archiver"):
                raise SystemExit("pt-archiver not found: apt-get install percona-toolkit")
            build_mysql(args.rows, args.aged)
            fresh_mysql_table(args.rows, args.aged)
            pt_s, pt_bytes = run_pt_archiver(args.batch_size, work, bulk=False)
            assert mysql_count() == args.rows - args.aged, "pt-archiver left the wrong rows"
            fresh_mysql_table(args.rows, args.aged)
            ptb_s, _ = run_pt_archiver(args.batch_size, work, bulk=True)
            assert mysql_count() == args.rows - args.aged, "pt-archiver --bulk-delete left the wrong rows"
            fresh_mysql_table(args.rows, args.aged)
            vf_s, vf_rows, vf_bytes = run_vaultflow(f"mysql://root@127.0.0.1:3306/{DB}", args.batch_size, work)
            assert vf_rows == args.aged and mysql_count() == args.rows - args.aged, "vaultflow left the wrong rows"
            results["mysql"] = {"pt_archiver_s": round(pt_s, 2), "pt_archiver_rows_per_s": round(args.aged / pt_s),
                                "pt_archiver_file_bytes": pt_bytes, "vaultflow_s": round(vf_s, 2),
                                "vaultflow_rows_per_s": round(args.aged / vf_s), "vaultflow_repo_bytes": vf_bytes,
                                "ratio": round(pt_s / vf_s, 2), "pt_archiver_bulk_s": round(ptb_s, 2),
                                "pt_archiver_bulk_rows_per_s": round(args.aged / ptb_s),
                                "ratio_bulk": round(ptb_s / vf_s, 2)}
        if "postgresql" in engines:
            build_pg(args.rows, args.aged)
            fresh_pg_table(args.rows, args.aged)
            vf_s, vf_rows, vf_bytes = run_vaultflow(f"postgresql://postgres@127.0.0.1:5432/{DB}",
                                                    args.batch_size, work)
            assert vf_rows == args.aged and pg_count() == args.rows - args.aged
            results["postgresql"] = {"vaultflow_s": round(vf_s, 2), "vaultflow_rows_per_s": round(args.aged / vf_s),
                                     "vaultflow_repo_bytes": vf_bytes}
    print(f"{args.aged} aged rows of {args.rows}, batch size {args.batch_size}")
    if "mysql" in results:
        m = results["mysql"]
        print(f"MariaDB     pt-archiver --file               {m['pt_archiver_rows_per_s']:>9} rows/s  "
              f"({m['pt_archiver_s']} s, {m['pt_archiver_file_bytes']} bytes of text)")
        print(f"MariaDB     pt-archiver --file --bulk-delete {m['pt_archiver_bulk_rows_per_s']:>9} rows/s  "
              f"({m['pt_archiver_bulk_s']} s)")
        print(f"MariaDB     vaultflow archive                {m['vaultflow_rows_per_s']:>9} rows/s  "
              f"({m['vaultflow_s']} s, {m['vaultflow_repo_bytes']} bytes sealed Parquet)")
        verdict = "PASS" if m["ratio"] >= 1 else "MISS"
        print(f"MariaDB     vaultflow / pt-archiver rate     {m['ratio']:>9}x   (target >= 1x: {verdict})")
        print(f"MariaDB     vaultflow / pt-archiver --bulk-delete {m['ratio_bulk']:>4}x")
    if "postgresql" in results:
        p = results["postgresql"]
        print(f"PostgreSQL  vaultflow archive                {p['vaultflow_rows_per_s']:>9} rows/s  "
              f"({p['vaultflow_s']} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "archive_vs_pt_archiver.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
