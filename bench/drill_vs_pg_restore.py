"""Issue 6 benchmark: a restore drill's restore time against plain pg_restore of the same
database, and the time its checks add.

    .venv/bin/python bench/drill_vs_pg_restore.py [--scale 100] [--runs 3] [--jobs 1] [--scan-constraints]
                                                  [--drop] [--out DIR]

1. Creates (or reuses) vaultflow_bench_s<scale> exactly as bench/backup_vs_pg_dump.py does
   (scale 100: a plain dump of about 1.5 GB).
2. Not timed: a vaultflow full backup into a fresh repository, and `pg_dump -Fc -Z0` of the
   same database to a file.
3. Timed, --runs times, interleaved: `createdb -T template0 + pg_restore --exit-on-error
   [-j N]` of that file (reference), a plain vaultflow restore of the snapshot
   (`restore_snapshot` into a new database, dropped after), then a drill (`run_drill`:
   restore into a scratch database while reading tables back, then row counts + checksums,
   schema objects, default expectation suite), which drops its scratch database.
4. Prints median seconds, the ratio drill restore / pg_restore, the checks' time by phase,
   and checks / restore against the 30 % target; also what the whole drill costs beyond a
   plain vaultflow restore (the read-backs during the restore slow it a little, which the
   checks' own figure does not show); writes OUT/drill_vs_pg_restore.json.

Great Expectations is imported before the clock starts (about 2 s, paid once per process;
printed separately).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.backup_vs_pg_dump import (  # noqa: E402 - the repository root is put on the path first
    CONN,
    HOST,
    PORT,
    USER,
    drop_database,
    generate_database,
    log,
    marker_scale,
    nice_prefix,
)
from vaultflow.requests import BackupRequest, DrillRequest, RestoreRequest

PASSPHRASE = "vaultflow bench passphrase"  # a throwaway repository, benchmark only
TARGET_CHECKS_SHARE = 0.30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--scale", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--jobs", type=int, default=1, help="tables loaded at once, both sides")
    p.add_argument("--scan-constraints", action="store_true",
                   help="have Great Expectations also scan what NOT NULL and unique indexes enforce")
    p.add_argument("--drop", action="store_true", help="drop the generated database at the end")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    return p.parse_args(argv)


def time_pg_restore(dump: Path, jobs: int, nice: list[str]) -> float:
    target = f"vaultflow_bench_pgrestore_{os.getpid()}"
    drop_database(target)
    began = time.perf_counter()
    try:
        subprocess.run([*nice, "createdb", *CONN, "-T", "template0", target], check=True)
        subprocess.run([*nice, "pg_restore", "--exit-on-error", *CONN, "-j", str(jobs), "-d", target, str(dump)],
                       check=True, capture_output=True)
        return time.perf_counter() - began
    finally:
        drop_database(target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from vaultflow.drill import run_drill
    from vaultflow.engines.postgres.config import PostgresConnection
    from vaultflow.engines.postgres.engine import PostgresEngine
    from vaultflow.operations.backup import backup_database
    from vaultflow.operations.restore import restore_snapshot
    from vaultflow.repository import Repository, new_object_id
    from vaultflow.storage import LocalStore

    args.out.mkdir(parents=True, exist_ok=True)
    nice, _ = nice_prefix()
    db = f"vaultflow_bench_s{args.scale}"
    if marker_scale(db) != args.scale:
        log(f"generating {db}")
        generate_database(db, args.scale, nice, args.out)
    source = PostgresEngine(PostgresConnection(host=HOST, port=PORT, user=USER, database=db))
    work = Path(tempfile.mkdtemp(prefix="drill-bench-", dir=args.out))
    dump = work / "db.Fc"
    log("pg_dump -Fc -Z0 (reference input, not timed)")
    subprocess.run(["pg_dump", *CONN, "-Fc", "-Z0", "-f", str(dump), db], check=True)
    log("vaultflow backup (not timed)")
    repo = Repository.init(LocalStore(work / "repo"), PASSPHRASE)
    manifest = backup_database(source, repo, BackupRequest(jobs=args.jobs), snapshot_id=new_object_id())

    began = time.perf_counter()
    import great_expectations  # noqa: F401 - paid once per process, kept out of the drill's time
    gx_import = time.perf_counter() - began

    rows: list[dict[str, Any]] = []
    for run in range(1, args.runs + 1):
        log(f"run {run}: pg_restore")
        ref = time_pg_restore(dump, args.jobs, nice)
        log(f"run {run}: vaultflow restore")
        plain_target = f"vaultflow_bench_vfrestore_{os.getpid()}"
        drop_database(plain_target)
        began = time.perf_counter()
        restore_snapshot(repo, manifest.id, source.with_database(plain_target), RestoreRequest(jobs=args.jobs))
        plain = time.perf_counter() - began
        drop_database(plain_target)
        log(f"run {run}: drill")
        began = time.perf_counter()
        report = run_drill(repo, manifest.id, source.with_database("postgres"),
                           DrillRequest(jobs=args.jobs, scan_constraints=args.scan_constraints))
        wall = time.perf_counter() - began
        if not report.passed:
            log(f"drill failed: {report.summary()}")
            return 1
        rows.append({"pg_restore_s": ref, "vaultflow_restore_s": plain, "drill_restore_s": report.restore_seconds,
                     "drill_checks_s": report.checks_seconds, "drill_wall_s": wall, **{
                         f"checks_{k}_s": v for k, v in report.check_seconds.items()}})
        log(f"run {run}: pg_restore {ref:.1f} s, drill restore {report.restore_seconds:.1f} s, "
            f"checks {report.checks_seconds:.1f} s {report.check_seconds}")

    med = {k: statistics.median(float(r[k]) for r in rows) for k in rows[0]}
    ratio = med["drill_restore_s"] / med["pg_restore_s"]
    share = med["drill_checks_s"] / med["drill_restore_s"]
    verdict = "PASS" if share <= TARGET_CHECKS_SHARE else "MISS"
    size = dump.stat().st_size
    print(f"\ndatabase {db} (pg_dump -Fc -Z0 {size / 2**20:.0f} MiB, {len(manifest.tables)} tables), "
          f"{args.runs} run(s), jobs {args.jobs}{', scan constraints' if args.scan_constraints else ''}, medians:")
    print(f"  createdb + pg_restore            {med['pg_restore_s']:8.2f} s   (reference)")
    print(f"  drill restore (recovery time)    {med['drill_restore_s']:8.2f} s   {ratio:.2f}x pg_restore")
    print(f"  drill checks                     {med['drill_checks_s']:8.2f} s   {share:.0%} of the drill's restore "
          f"(target <= {TARGET_CHECKS_SHARE:.0%}: {verdict})")
    for phase in ("tables", "schema", "expectations"):
        key = f"checks_{phase}_s"
        if key in med:
            print(f"    {phase:<30} {med[key]:8.2f} s")
    print(f"  vaultflow restore (no drill)     {med['vaultflow_restore_s']:8.2f} s   "
          f"{med['vaultflow_restore_s'] / med['pg_restore_s']:.2f}x pg_restore")
    print(f"  drill wall (incl. drop)          {med['drill_wall_s']:8.2f} s   "
          f"{med['drill_wall_s'] / med['vaultflow_restore_s'] - 1:+.0%} over the plain vaultflow restore")
    print(f"  great_expectations import        {gx_import:8.2f} s   (once per process, not in the above)")
    (args.out / "drill_vs_pg_restore.json").write_text(json.dumps(
        {"database": db, "scale": args.scale, "jobs": args.jobs, "dump_bytes": size, "runs": rows,
         "median": med, "restore_ratio": ratio, "checks_share": share, "gx_import_s": gx_import}, indent=2))
    subprocess.run(["rm", "-rf", str(work)], check=False)
    if args.drop:
        drop_database(db)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
