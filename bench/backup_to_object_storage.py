"""Issue 4 benchmark: vaultflow backup to S3 (moto) and to Azure Blob (Azurite) against local disk.

    .venv/bin/python bench/backup_to_object_storage.py [--scale 100] [--runs 3] [--concurrency 8] [--out DIR]

Uses the pgbench + documents database of bench/backup_vs_pg_dump.py (created or reused:
scale 100 is the ~1.5 GB plain dump), starts moto's S3 server and Azurite on loopback, and
times, interleaved and --runs times each, a full `vaultflow backup` (child process, core
only, as in backup_vs_pg_dump) into a new repository on local disk, in a moto bucket and in
an Azurite container. Prints min/median wall seconds and peak RSS of the backup process
per target and the ratios against local disk (issue 4 target: <= 1.3x on loopback), and
writes everything to OUT/backup_to_object_storage.json. The emulators run outside the
measured process tree; their CPU competes with the backup on a small machine, which is
part of what "on loopback" costs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backup_vs_pg_dump import (  # noqa: E402
    HOST,
    PASSPHRASE,
    PORT,
    USER,
    Sample,
    describe_database,
    generate_database,
    log,
    marker_scale,
    nice_prefix,
    run_measured,
)
from tests.object_servers import azurite_server, moto_server  # noqa: E402

TARGETS = ("local", "s3", "azure")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scale", type=int, default=100, help="pgbench scale (default 100; 2 for a quick check)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8, help="VAULTFLOW_STORAGE_CONCURRENCY for S3 and Azure")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = p.parse_args(argv)

    out: Path = args.out.expanduser().absolute()
    work, logs = out / "work-objstore", out / "logs-objstore"
    shutil.rmtree(work, ignore_errors=True)
    for d in (work, logs):
        d.mkdir(parents=True, exist_ok=True)
    nice, _ = nice_prefix()
    db = f"vaultflow_bench_s{args.scale}"
    if marker_scale(db) != args.scale:
        log(f"generating database {db} (scale {args.scale})")
        generate_database(db, args.scale, nice, logs)
    info = describe_database(db)
    log(f"{db}: {info['database_bytes'] / 2**20:,.0f} MiB")

    from pydantic import SecretStr

    from vaultflow.repository import Repository
    from vaultflow.storage import LocalStore
    from vaultflow.storage.azure import AzureSettings
    from vaultflow.storage.s3 import S3Settings

    samples: dict[str, list[Sample]] = {t: [] for t in TARGETS}
    with ExitStack() as stack:
        s3 = stack.enter_context(moto_server())
        az = stack.enter_context(azurite_server())
        for rnd in range(1, args.runs + 1):
            for target in TARGETS:
                env = {"VAULTFLOW_PASSPHRASE": PASSPHRASE, "VAULTFLOW_STORAGE_CONCURRENCY": str(args.concurrency)}
                if target == "local":
                    path = work / f"repo-{rnd}"
                    Repository.init(LocalStore(path), PASSPHRASE)
                    location = str(path)
                elif target == "s3":
                    bucket = s3.new_bucket()
                    Repository.init(S3Settings(bucket, "bench", endpoint_url=s3.endpoint, region="us-east-1",
                                               access_key_id="testing",
                                               secret_access_key=SecretStr("testing")).open(), PASSPHRASE)
                    location, env = f"s3://{bucket}/bench", {**env, **s3.env()}
                else:
                    container = az.new_container()
                    Repository.init(AzureSettings(container, "bench",
                                                  connection_string=SecretStr(az.connection_string)).open(), PASSPHRASE)
                    location = f"az://{container}/bench"
                    env = {**env, "AZURE_STORAGE_CONNECTION_STRING": az.connection_string}
                result = logs / f"{target}.{rnd}.json"
                argv = [*nice, sys.executable, "-m", "bench._vaultflow_backup", "backup", "--repo", location,
                        "--url", f"postgresql://{USER}@{HOST}:{PORT}/{db}", "--result", str(result)]
                sample = run_measured(argv, log_dir=logs, tag=f"{target}.{rnd}", env=env)
                sample.detail = json.loads(result.read_text())
                samples[target].append(sample)
                log(f"round {rnd} {target}: {sample.wall_s:.2f} s, peak RSS {sample.max_rss_kb / 1024:.0f} MiB")
    shutil.rmtree(work, ignore_errors=True)

    summary = {t: {"wall_s_min": min(s.wall_s for s in samples[t]),
                   "wall_s_median": statistics.median(s.wall_s for s in samples[t]),
                   "max_rss_mb": max(s.max_rss_kb for s in samples[t]) / 1024} for t in TARGETS}
    base = summary["local"]["wall_s_median"]
    print(f"\nvaultflow full backup of {db} ({info['database_bytes'] / 2**20:,.0f} MiB), {args.runs} run(s), "
          f"concurrency {args.concurrency}")
    print(f"{'target':<8} {'min s':>8} {'median s':>9} {'x local':>8} {'peak RSS MiB':>13}")
    for t in TARGETS:
        row = summary[t]
        ratio = row["wall_s_median"] / base if base else float("nan")
        row["ratio_vs_local"] = round(ratio, 2)
        verdict = "" if t == "local" else ("  PASS (<= 1.3x)" if ratio <= 1.3 else "  MISS (> 1.3x)")
        print(f"{t:<8} {row['wall_s_min']:>8.2f} {row['wall_s_median']:>9.2f} {ratio:>8.2f} "
              f"{row['max_rss_mb']:>13.0f}{verdict}")
    (out / "backup_to_object_storage.json").write_text(json.dumps(
        {"database": info, "scale": args.scale, "runs": args.runs, "concurrency": args.concurrency,
         "summary": summary, "samples": {t: [vars(s) for s in samples[t]] for t in TARGETS}}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
