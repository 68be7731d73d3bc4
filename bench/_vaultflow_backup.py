"""Child-process driver for the benchmarks: one vaultflow backup or restore.

Run from the project root as a module, so the parent can time the whole process (Python
start-up and imports included) and sample its process tree:

    python -m bench._vaultflow_backup backup  --repo DIR_OR_URL --url URL --result FILE [--no-table-checksums]
    python -m bench._vaultflow_backup incremental --repo DIR --url URL --result FILE
                                      [--kind incremental|full|differential] [--jobs N]
    python -m bench._vaultflow_backup restore --repo DIR --snapshot ID --url URL --result FILE [--jobs N]

`backup` and `restore` serve bench/backup_vs_pg_dump.py; `incremental` (plan_backup, then
backup_database with the plan) serves bench/incremental_vs_restic.py and also reports what
the snapshot added against its parent and which tables it read.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vaultflow.engines import engine_from_url
from vaultflow.operations.backup import backup_database, plan_backup
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import new_object_id, open_repository
from vaultflow.repository.manifest import SnapshotManifest, StreamManifest
from vaultflow.requests import BackupRequest, RestoreRequest

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
    manifest = backup_database(engine, repo, BackupRequest(table_checksums=not args.no_table_checksums),
                               snapshot_id=snapshot_id)
    t2 = time.perf_counter()
    return {
        "snapshot_id": manifest.id,
        "open_s": round(t1 - t0, 3),
        "core_s": round(t2 - t1, 3),
        # All streams: a PostgreSQL snapshot is a schema stream, one stream per table and
        # a data-extra stream (the first release had one pg_dump-custom stream).
        "stream_bytes": manifest.logical_size,
        "stored_bytes": manifest.stored_size,
        "streams": len(manifest.streams),
        "chunks": sum(len(s.chunks) for s in manifest.streams),
        "tables": len(manifest.tables),
    }


def _table_streams(manifest: SnapshotManifest | None) -> dict[str, StreamManifest]:
    if manifest is None:
        return {}
    return {s.name.removeprefix("table/"): s for s in manifest.streams if "table" in s.meta}


def do_incremental(args: argparse.Namespace) -> dict[str, Any]:
    """plan_backup + backup_database; what was read, what changed, what was added."""
    t0 = time.perf_counter()
    repo = open_repository(str(args.repo), _passphrase())
    engine = engine_from_url(args.url)
    t1 = time.perf_counter()
    snapshot_id = new_object_id()
    plan = plan_backup(repo, engine, args.kind, snapshot_id)
    t2 = time.perf_counter()

    # Observe the engine without changing it: which tables got a source (were read), the
    # fingerprint it took, and how long reading (and waiting for) settled statistics
    # counters took. The counter reader is private API: PostgresEngine._table_counters()
    # returns (counters, complete); SQLite has none.
    seen: dict[str, Any] = {"settle_s": 0.0, "settled": []}
    real_open_dump, real_fingerprint = engine.open_dump, engine.fingerprint
    real_settled = getattr(engine, "_table_counters", None)

    @contextmanager
    def open_dump(**kwargs: Any) -> Iterator[Any]:
        with real_open_dump(**kwargs) as session:
            seen["read"] = sorted(src.name.removeprefix("table/") for src in session.sources if src.table)
            seen["unchanged"] = sorted(session.unchanged)
            seen["carried"] = sorted(name.removeprefix("table/") for name in session.carried)
            yield session

    def fingerprint() -> str | None:
        seen["fingerprint"] = real_fingerprint()
        return seen["fingerprint"]  # type: ignore[no-any-return]

    def settled_counters(*a: Any, **kw: Any) -> Any:
        ts = time.perf_counter()
        out = real_settled(*a, **kw)  # type: ignore[misc]
        seen["settle_s"] += time.perf_counter() - ts
        seen["settled"].append(bool(out[1]))
        return out

    engine.open_dump = open_dump  # type: ignore[method-assign]
    engine.fingerprint = fingerprint  # type: ignore[method-assign]
    if real_settled is not None:
        engine._table_counters = settled_counters  # type: ignore[attr-defined]

    t3 = time.perf_counter()
    manifest = backup_database(engine, repo, BackupRequest(table_checksums=not args.no_table_checksums, jobs=args.jobs),
                               snapshot_id=snapshot_id, plan=plan)
    t4 = time.perf_counter()

    parent = plan.parent
    mine, theirs = _table_streams(manifest), _table_streams(parent)
    changed = sorted(t for t, s in mine.items()
                     if t not in theirs or [c.id for c in s.chunks] != [c.id for c in theirs[t].chunks])
    have = {c.id for s in parent.streams for c in s.chunks} if parent else set()
    new_chunks = {c.id: c for s in manifest.streams for c in s.chunks if c.id not in have}
    added_by_stream = {s.name: sum(c.stored for c in s.chunks if c.id not in have) for s in manifest.streams}
    return {
        "snapshot_id": manifest.id,
        "kind_requested": args.kind,
        "kind": manifest.kind,
        "plan_note": plan.note,
        "parent": plan.parent_id,
        "jobs": args.jobs,
        "open_s": round(t1 - t0, 3),
        "plan_s": round(t2 - t1, 3),
        "core_s": round(t4 - t3, 3),  # backup_database only
        "reused_from": manifest.reused_from,
        "fingerprint": seen.get("fingerprint"),
        "parent_fingerprint": parent.fingerprint if parent else None,
        "settle_s": round(float(seen["settle_s"]), 3),
        "counters_settled": seen["settled"],
        "tables_read": seen.get("read", []),
        "tables_carried_over": seen.get("unchanged", []),
        "segments_carried_over": seen.get("carried", []),
        "tables_changed": changed,
        "added_bytes": manifest.added_size(parent),
        "added_plain_bytes": sum(c.size for c in new_chunks.values()),
        "added_chunks": len(new_chunks),
        "added_by_stream": {k: v for k, v in added_by_stream.items() if v},
        "stream_bytes": manifest.logical_size,
        "stream_sizes": {s.name: s.size for s in manifest.streams},
        "stored_bytes": manifest.stored_size,
        "streams": len(manifest.streams),
        "chunks": sum(len(s.chunks) for s in manifest.streams),
        "tables": len(manifest.tables),
    }


def do_restore(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    repo = open_repository(str(args.repo), _passphrase())
    target = engine_from_url(args.url)
    t1 = time.perf_counter()
    manifest = restore_snapshot(repo, args.snapshot, target, RestoreRequest(jobs=args.jobs))
    t2 = time.perf_counter()
    return {"snapshot_id": manifest.id, "open_s": round(t1 - t0, 3), "core_s": round(t2 - t1, 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._vaultflow_backup")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backup", help="back up one database into an existing repository")
    b.add_argument("--repo", required=True, help="path, s3:// or az:// location")
    b.add_argument("--url", required=True)
    b.add_argument("--result", type=Path, required=True)
    b.add_argument("--no-table-checksums", action="store_true")
    i = sub.add_parser("incremental", help="plan_backup + backup_database of one database (kind, jobs)")
    i.add_argument("--repo", required=True, help="path, s3:// or az:// location")
    i.add_argument("--url", required=True)
    i.add_argument("--result", type=Path, required=True)
    i.add_argument("--kind", choices=["incremental", "full", "differential"], default="incremental")
    i.add_argument("--jobs", type=int, default=1)
    i.add_argument("--no-table-checksums", action="store_true")
    r = sub.add_parser("restore", help="restore one snapshot into a new database")
    r.add_argument("--repo", required=True, help="path, s3:// or az:// location")
    r.add_argument("--snapshot", required=True)
    r.add_argument("--url", required=True)
    r.add_argument("--result", type=Path, required=True)
    r.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)

    commands = {"backup": do_backup, "incremental": do_incremental, "restore": do_restore}
    result = commands[args.command](args)
    result["import_s"] = round(_T_IMPORTED - _T_START, 3)
    result["in_process_s"] = round(time.perf_counter() - _T_START, 3)
    result.update(_rusage())
    args.result.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
