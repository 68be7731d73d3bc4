"""Child-process driver for bench/backup_vs_pg_dump.py: one vaultflow backup or restore.

Run from the project root as a module, so the parent can time the whole process (Python
start-up and imports included) and sample its process tree:

    python -m bench._vaultflow_backup backup  --repo DIR --url URL --result FILE [--no-table-checksums]
    python -m bench._vaultflow_backup restore --repo DIR --snapshot ID --url URL --result FILE

It calls the vaultflow core directly (no Prefect, no catalog). The passphrase comes from
VAULTFLOW_PASSPHRASE. The result file gets a JSON object with the phase timings and this
process's own peak RSS and CPU (its children, pg_dump/pg_restore, are sampled by the parent).
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()  # the imports below are timed on purpose

import argparse
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from vaultflow.backup import backup_database
from vaultflow.engines import engine_from_url
from vaultflow.repository import new_object_id, open_repository
from vaultflow.restore import restore_snapshot

_T_IMPORTED = time.perf_counter()


def _rss_now_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


_RSS_IMPORTED_KB = _rss_now_kb()


def _rusage() -> dict[str, Any]:
    """This process's peak RSS and CPU, and its children's CPU.

    The children's ru_maxrss is not reported: Linux carries the parent's RSS high-water
    mark into a forked child across exec, so for pg_dump it would show this process's size.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "self_maxrss_kb": own.ru_maxrss,
        "rss_after_imports_kb": _RSS_IMPORTED_KB,
        "self_cpu_s": round(own.ru_utime + own.ru_stime, 3),
        "children_cpu_s": round(kids.ru_utime + kids.ru_stime, 3),
    }


def _passphrase() -> str:
    value = os.environ.get("VAULTFLOW_PASSPHRASE", "")
    if not value:
        sys.exit("VAULTFLOW_PASSPHRASE is not set")
    return value


def do_backup(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    repo = open_repository(str(args.repo), _passphrase())
    engine = engine_from_url(args.url)
    t1 = time.perf_counter()
    snapshot_id = new_object_id()
    manifest = backup_database(engine, repo, snapshot_id=snapshot_id,
                               table_checksums=not args.no_table_checksums)
    t2 = time.perf_counter()
    stream = manifest.streams[0]
    return {
        "snapshot_id": manifest.id,
        "open_s": round(t1 - t0, 3),
        "core_s": round(t2 - t1, 3),
        "stream_bytes": stream.size,
        "stored_bytes": sum(c.stored for c in stream.chunks),
        "chunks": len(stream.chunks),
        "tables": len(manifest.tables),
    }


def do_restore(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    repo = open_repository(str(args.repo), _passphrase())
    target = engine_from_url(args.url)
    t1 = time.perf_counter()
    manifest = restore_snapshot(repo, args.snapshot, target)
    t2 = time.perf_counter()
    return {"snapshot_id": manifest.id, "open_s": round(t1 - t0, 3), "core_s": round(t2 - t1, 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._vaultflow_backup")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backup", help="back up one database into an existing repository")
    b.add_argument("--repo", type=Path, required=True)
    b.add_argument("--url", required=True)
    b.add_argument("--result", type=Path, required=True)
    b.add_argument("--no-table-checksums", action="store_true")
    r = sub.add_parser("restore", help="restore one snapshot into a new database")
    r.add_argument("--repo", type=Path, required=True)
    r.add_argument("--snapshot", required=True)
    r.add_argument("--url", required=True)
    r.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)

    result = do_backup(args) if args.command == "backup" else do_restore(args)
    result["import_s"] = round(_T_IMPORTED - _T_START, 3)
    result["in_process_s"] = round(time.perf_counter() - _T_START, 3)
    result.update(_rusage())
    args.result.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
