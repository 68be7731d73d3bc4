"""Issue 17 benchmark: what users run. `vaultflow backup` / `restore` through the CLI against a
running `prefect server start`, beside pg_dump | zstd and createdb + pg_restore, with Prefect's
own floor (a no-op flow run in the same environment) measured in the same run.

    .venv/bin/python bench/cli_vs_pg_dump.py --scale 60 --runs 1     # ~1 GB database
    .venv/bin/python bench/cli_vs_pg_dump.py --scale 5 --runs 1      # quick check

Rows, interleaved round by round, each a whole process tree timed from fork to reap:
  prefect floor           python -c 'a no-op @flow, run once' with PREFECT_API_URL set
  vaultflow backup (CLI)  vaultflow backup postgresql://.../db --repo R
  pg_dump | zstd -3 -T1   the reference pipeline
  vaultflow restore (CLI) vaultflow restore ID postgresql://.../db_r --repo R
  createdb + pg_restore   of the pg_dump -Fc file (written once per round, not timed)
  sqlite one-row (CLI)    vaultflow backup sqlite:///one-row.db --repo R2
The core benchmarks (bench/backup_vs_pg_dump.py) time the core call without Prefect; this one
times the command. The snapshot's recorded dump time (manifest start to finish) is printed
beside the CLI's wall time. The Prefect server runs with SQLite in a temporary PREFECT_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backup_vs_pg_dump import (  # noqa: E402
    CONN,
    HOST,
    PASSPHRASE,
    PORT,
    USER,
    Sample,
    describe_database,
    drop_database,
    generate_database,
    log,
    marker_scale,
    nice_prefix,
    row_counts,
    run_measured,
)
from bench.fleet_overhead import prefect_server  # noqa: E402

FLOOR, CLI_BACKUP, ZSTD, CLI_RESTORE, PG_RESTORE, SQLITE = (
    "prefect floor", "vaultflow backup (CLI)", "pg_dump | zstd -3 -T1", "vaultflow restore (CLI)",
    "createdb + pg_restore", "sqlite one-row backup (CLI)")
NOOP_FLOW = "from prefect import flow\n@flow\ndef noop():\n    return 1\nnoop()\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scale", type=int, default=60, help="pgbench scale (60: about 1 GB; 5 for a quick check)")
    p.add_argument("--runs", type=int, default=1, help="rounds of every row (default 1)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="results and scratch space")
    args = p.parse_args(argv)
    nice, niceness = nice_prefix()
    work = Path(tempfile.mkdtemp(prefix="cli-bench-", dir=args.out if args.out.exists() else None))
    logs = work / "logs"
    logs.mkdir(parents=True)
    db = f"vaultflow_bench_s{args.scale}"
    if marker_scale(db) != args.scale:
        generate_database(db, args.scale, nice, logs)
    info = describe_database(db)
    one_row = work / "one-row.db"
    with sqlite3.connect(one_row) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        c.execute("INSERT INTO t VALUES (1, 'x')")
    samples: dict[str, list[Sample]] = {}
    recorded: list[float] = []
    vaultflow = [*nice, sys.executable, "-m", "vaultflow.cli.main"]
    url = f"postgresql://{USER}@{HOST}:{PORT}"
    conn = " ".join(CONN)
    with prefect_server(work, PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false") as api:
        env = {"PREFECT_API_URL": api, "VAULTFLOW_PASSPHRASE": PASSPHRASE, "VAULTFLOW_HOME": str(work / "home")}
        run = lambda key, argv, rnd: samples.setdefault(key, []).append(  # noqa: E731
            run_measured(argv, log_dir=logs, tag=f"{key.split()[0]}-{key.split()[1]}.{rnd}", env=env))
        for rnd in range(args.runs):
            log(f"round {rnd + 1}/{args.runs}")
            repo, small = work / f"repo{rnd}", work / f"small{rnd}"
            for path in (repo, small):
                subprocess.run([*vaultflow, "init", "--repo", str(path)], env={**os.environ, **env}, check=True,
                               capture_output=True, cwd=ROOT)
            run(FLOOR, [*nice, sys.executable, "-c", NOOP_FLOW], rnd)
            run(CLI_BACKUP, [*vaultflow, "backup", f"{url}/{db}", "--repo", str(repo)], rnd)
            zst = work / "db.sql.zst"
            run(ZSTD, [*nice, "bash", "-c", f"set -o pipefail; pg_dump {conn} -Fp {db} | zstd -3 -T1 -q > {zst} "
                                           f"&& sync {zst}"], rnd)
            zst.unlink()
            listed = subprocess.run([*vaultflow, "snapshots", "--repo", str(repo), "--json"], env={**os.environ, **env},
                                    capture_output=True, text=True, check=True, cwd=ROOT)
            snapshot = json.loads(listed.stdout)[0]
            recorded.append(float(snapshot.get("duration_s") or snapshot.get("duration_seconds") or 0))
            target = f"{db}_clir"
            drop_database(target)
            run(CLI_RESTORE, [*vaultflow, "restore", snapshot["id"], f"{url}/{target}", "--repo", str(repo)], rnd)
            restored_ok = row_counts(target) == row_counts(db)
            drop_database(target)
            fc = work / "db.Fc"
            subprocess.run(["bash", "-c", f"pg_dump {conn} -Fc -f {fc} {db}"], check=True)
            target = f"{db}_pgr"
            drop_database(target)
            run(PG_RESTORE, [*nice, "bash", "-c", f"createdb {conn} -T template0 {target} && "
                                                 f"pg_restore {conn} --exit-on-error -d {target} {fc}"], rnd)
            drop_database(target)
            fc.unlink()
            run(SQLITE, [*vaultflow, "backup", f"sqlite:///{one_row}", "--repo", str(small)], rnd)
            shutil.rmtree(repo)
            shutil.rmtree(small)
            if not restored_ok:
                log("WARNING: the CLI restore's row counts differ from the source")
    med = {k: statistics.median(s.wall_s for s in v) for k, v in samples.items()}
    rss = {k: max(s.tree_rss_mb for s in v) for k, v in samples.items()}
    size_mib = info["database_bytes"] / 2**20
    print(f"\nvaultflow CLI vs pg_dump, {db} ({size_mib:.0f} MiB), {args.runs} round(s), niceness {niceness}, "
          "a running Prefect server (SQLite); wall in s (median), tree RSS peak in MB")
    for key in (FLOOR, CLI_BACKUP, ZSTD, CLI_RESTORE, PG_RESTORE, SQLITE):
        print(f"  {key:<30} {med[key]:8.2f} s  {rss[key]:7.0f} MB")
    dump = statistics.median(recorded) if recorded else 0.0
    targets = [
        ("CLI backup / (pg_dump | zstd + floor)", med[CLI_BACKUP] / (med[ZSTD] + med[FLOOR]), 1.15),
        ("recorded dump time / (pg_dump | zstd)", dump / med[ZSTD], 1.10),
        ("CLI restore / (createdb + pg_restore)", med[CLI_RESTORE] / med[PG_RESTORE], 1.15),
    ]
    print(f"\n  snapshot's recorded dump time {dump:.2f} s; sqlite one-row CLI - floor = "
          f"{med[SQLITE] - med[FLOOR]:.2f} s (target <= 0.70)")
    print("targets:")
    for name, value, limit in targets:
        print(f"  {'PASS' if value <= limit else 'MISS'}  {name} = {value:.3f}  (target <= {limit:.2f})")
    extra = med[SQLITE] - med[FLOOR]
    print(f"  {'PASS' if extra <= 0.7 else 'MISS'}  sqlite one-row CLI - floor = {extra:.2f} s  (target <= 0.70)")
    peak = rss[CLI_BACKUP]
    print(f"  {'PASS' if peak < 300 else 'MISS'}  CLI backup tree RSS = {peak:.0f} MB  (target < 300; includes "
          "pg_dump)")
    (work / "cli_vs_pg_dump.json").write_text(json.dumps({"median_wall_s": med, "tree_rss_mb": rss,
                                                          "recorded_dump_s": recorded}, indent=2))
    print(f"\nJSON: {work / 'cli_vs_pg_dump.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
