"""Issue 2 benchmark: vaultflow backup and restore against pg_dump and pg_restore.

    .venv/bin/python bench/backup_vs_pg_dump.py [--scale 100] [--runs 3] [--format-version 2] [--drop] [--out DIR]

1. Creates (or reuses, when its marker table says the same scale and generator version)
   the database vaultflow_bench_s<scale> on 127.0.0.1:5432 as user postgres: `pgbench -i`
   plus a `documents` table of text and jsonb (about 7 MB on disk and 6.3 MB of plain dump
   per scale unit; scale 100 gives a plain dump of about 1.5 GB).
2. Times, --runs times each, interleaved: pg_dump -Fp to a file and pg_dump -Fc -Z0 to
   /dev/null (references), pg_dump -Fc, pg_dump -Fp | zstd -3 -T1, vaultflow backup (with
   and without table checksums) in a child Python process, createdb + pg_restore of the
   -Fc file, and vaultflow restore of the snapshot.
3. Prints min/median wall seconds, CPU, peak RSS and output bytes per row, the ratios
   issue 2 targets with PASS/MISS, and writes everything to OUT/backup_vs_pg_dump.json.

Every timed command runs at niceness -10 when that can be set (the reference baselines in
perf-baselines.md were taken that way). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
CONN = ["-h", HOST, "-p", str(PORT), "-U", USER, "-w"]
DOC_ROWS_PER_SCALE = 9_000
GENERATOR_VERSION = 1
MARKER_TABLE = "vaultflow_bench_marker"
PASSPHRASE = "vaultflow bench passphrase"  # a throwaway repository, benchmark only
TARGET_NICENESS = -10
SAMPLE_INTERVAL_S = 0.05
MB = 1024 * 1024

# Row keys, in the order they run within one round.
REF, REF_Z0, FC, ZSTD, VF, VF_NOCHK, PG_RESTORE, VF_RESTORE = (
    "pg_dump_Fp_file", "pg_dump_FcZ0_devnull", "pg_dump_Fc", "pg_dump_Fp_zstd3",
    "vaultflow_backup", "vaultflow_backup_nochk", "pg_restore", "vaultflow_restore",
)
LABELS = {
    REF: "pg_dump -Fp -f file (ref)",
    REF_Z0: "pg_dump -Fc -Z0 >/dev/null (ref)",
    FC: "pg_dump -Fc -f file",
    ZSTD: "pg_dump -Fp | zstd -3 -T1",
    VF: "vaultflow backup",
    VF_NOCHK: "vaultflow backup, no checksums",
    PG_RESTORE: "createdb + pg_restore (Fc)",
    VF_RESTORE: "vaultflow restore",
}


# -- helpers ----------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True)


def connect(db: str) -> psycopg.Connection[Any]:
    return psycopg.connect(host=HOST, port=PORT, user=USER, dbname=db, autocommit=True)


def drop_database(name: str) -> None:
    with admin() as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_size(name: str) -> int:
    with admin() as c:
        row = c.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
    return int(row[0]) if row else 0


def row_counts(db: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with connect(db) as c:
        for table in ("pgbench_accounts", "documents"):
            row = c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            counts[table] = int(row[0]) if row else -1
    return counts


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def nice_prefix() -> tuple[list[str], int]:
    """argv prefix that runs a command at TARGET_NICENESS, and the niceness it achieves."""
    current = os.nice(0)
    delta = TARGET_NICENESS - current
    nice = shutil.which("nice")
    if delta == 0 or nice is None:
        return [], current
    probe = subprocess.run([nice, "-n", str(delta), sys.executable, "-c", "import os; print(os.nice(0))"],
                           capture_output=True, text=True, check=False)
    try:
        achieved = int(probe.stdout.strip())
    except ValueError:
        return [], current
    if achieved != TARGET_NICENESS:
        log(f"warning: cannot run at niceness {TARGET_NICENESS} (got {achieved}); running unchanged")
        return [], current
    return [nice, "-n", str(delta)], achieved


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "missing"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def busy_cpu_seconds() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


# -- measuring one command ----------------------------------------------------------------


class TreeSampler(threading.Thread):
    """Samples the RSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.halt = threading.Event()
        self.tree_peak = 0
        self.by_name: dict[str, int] = {}

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.halt.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    name = p.name()
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
                total += rss
                key = "python" if name.startswith("python") else name
                self.by_name[key] = max(self.by_name.get(key, 0), rss)
            self.tree_peak = max(self.tree_peak, total)
            self.halt.wait(SAMPLE_INTERVAL_S)


@dataclass
class Sample:
    wall_s: float
    cpu_s: float  # user+system of the whole process tree (wait4)
    machine_cpu_s: float  # busy CPU seconds of the whole machine (server and other tenants too)
    max_rss_kb: int  # largest single process of the tree (GNU time %M, else sampled)
    tree_rss_mb: float  # sampled peak of the tree's summed RSS
    rss_by_process_mb: dict[str, float]  # sampled peak per process name
    out_bytes: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class CommandFailed(RuntimeError):
    pass


GNU_TIME = shutil.which("time")  # /usr/bin/time, not the shell keyword


def run_measured(argv: Sequence[str], *, log_dir: Path, tag: str, cwd: Path = ROOT,
                 env: dict[str, str] | None = None) -> Sample:
    """Run argv to completion; wall time from fork to reap, CPU from wait4.

    The peak RSS comes from GNU time (%M, the largest process of the tree) because the
    ru_maxrss of a child forked straight from this Python process starts at this process's
    own size (Linux keeps the RSS high-water mark across fork + exec). Without GNU time it
    falls back to the sampled peak.
    """
    os.sync()  # earlier writes must not be flushed on this command's clock
    out_path, err_path = log_dir / f"{tag}.stdout", log_dir / f"{tag}.stderr"
    time_path = log_dir / f"{tag}.time"
    time_path.unlink(missing_ok=True)
    wrapper = [GNU_TIME, "-f", "%M", "-o", str(time_path)] if GNU_TIME else []
    child_env = {**os.environ, **(env or {})}
    with out_path.open("wb") as out, err_path.open("wb") as err:
        busy0 = busy_cpu_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen([*wrapper, *argv], cwd=cwd, env=child_env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy1 = busy_cpu_seconds()
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.halt.set()
        sampler.join()
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace").strip()[-2000:]
        raise CommandFailed(f"{tag} exited with {proc.returncode}: {shlex.join(argv)}\n{tail}")
    max_rss_kb = max(sampler.by_name.values(), default=0) // 1024
    if GNU_TIME:
        max_rss_kb = int(time_path.read_text().split()[-1])
    return Sample(
        wall_s=round(wall, 3), cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        machine_cpu_s=round(busy1 - busy0, 2), max_rss_kb=max_rss_kb,
        tree_rss_mb=round(sampler.tree_peak / MB, 1),
        rss_by_process_mb={k: round(v / MB, 1) for k, v in sorted(sampler.by_name.items())},
    )


# -- the database -------------------------------------------------------------------------

_SENTENCES = [
    "The quarterly review found no material weakness in the reconciliation process.",
    "Please confirm the delivery address before the shipment leaves the warehouse.",
    "Customer reported intermittent timeouts when exporting large reports.",
    "Invoice totals were adjusted after the late credit note was applied.",
    "The contract renews automatically unless either party gives notice.",
    "Meeting moved to Thursday; the agenda and minutes are attached below.",
    "Backups completed successfully and the restore drill passed all checks.",
    "Inventory levels for the spare parts dropped below the reorder threshold.",
    "The migration plan keeps the old schema readable for two releases.",
    "Support escalated the ticket because the workaround no longer applies.",
    "Travel expenses above the limit need a second approval from finance.",
    "The draft proposal still lacks a budget for the second phase.",
    "All sensors reported normal values except the one in the north wing.",
    "Onboarding checklist updated with the new security training module.",
    "The vendor promised a patch release before the end of the month.",
    "Legal asked for the retention policy to be reviewed every year.",
]

_DOCUMENTS_DDL = """
CREATE TABLE documents (
    id         bigint PRIMARY KEY,
    title      text NOT NULL,
    body       text NOT NULL,
    meta       jsonb NOT NULL,
    created_at timestamptz NOT NULL
)
"""

# About 700 bytes of plain-dump text per row, compressing about 4x with zstd -3 (random
# md5 hex mixed with a small vocabulary of sentences), like the documents of the baselines.
_DOCUMENTS_INSERT = """
INSERT INTO documents (id, title, body, meta, created_at)
SELECT i,
       'Document ' || i || ': ' || (ARRAY['report', 'memo', 'invoice', 'contract', 'note',
                                          'minutes', 'proposal', 'summary'])[1 + i %% 8],
       concat_ws(' ',
                 s.w[1 + (i * 7) %% 16], md5(i || 'a'), s.w[1 + (i * 11 + 3) %% 16], md5(i || 'b'),
                 s.w[1 + (i * 13 + 5) %% 16], md5(i || 'c'), md5(i || 'd'),
                 s.w[1 + (i * 17 + 9) %% 16], md5(i || 'e')),
       jsonb_build_object(
           'author', 'user_' || substr(md5(i || 'f'), 1, 10),
           'department', (ARRAY['sales', 'finance', 'legal', 'ops', 'support', 'hr'])[1 + i %% 6],
           'tags', jsonb_build_array('t' || i %% 97, 't' || i %% 89, 't' || i %% 13),
           'version', i %% 17,
           'score', round(((i * 7919) %% 100000) / 1000.0, 3),
           'reviewed', i %% 3 = 0,
           'digest', md5(i || 'g')),
       timestamptz '2024-01-01 00:00:00+00' + i * interval '37 seconds'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i,
     (SELECT %(sentences)s::text[] AS w) AS s
"""


def marker_scale(db: str) -> int | None:
    """The scale recorded by a finished generation, or None."""
    with admin() as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is None:
            return None
    try:
        with connect(db) as c:
            row = c.execute(sql.SQL("SELECT scale, generator_version FROM {}").format(
                sql.Identifier(MARKER_TABLE))).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    if row is None or int(row[1]) != GENERATOR_VERSION:
        return None
    return int(row[0])


def generate_database(db: str, scale: int, nice: list[str], log_dir: Path) -> float:
    t0 = time.perf_counter()
    drop_database(db)
    with admin() as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    log(f"pgbench -i -s {scale} {db}")
    pgbench = subprocess.run([*nice, "pgbench", "-i", "-q", "-s", str(scale), *CONN[:-1], db],
                             capture_output=True, text=True, check=False)
    (log_dir / "pgbench_init.log").write_text(pgbench.stdout + pgbench.stderr)
    if pgbench.returncode != 0:
        raise CommandFailed(f"pgbench -i failed:\n{pgbench.stderr[-2000:]}")
    rows = scale * DOC_ROWS_PER_SCALE
    batch = 10 * DOC_ROWS_PER_SCALE
    with connect(db) as c:
        c.execute(_DOCUMENTS_DDL)
        for lo in range(1, rows + 1, batch):
            hi = min(lo + batch - 1, rows)
            c.execute(_DOCUMENTS_INSERT, {"lo": lo, "hi": hi, "sentences": _SENTENCES})
            log(f"documents: {hi:,}/{rows:,} rows")
        c.execute("VACUUM (ANALYZE) documents")
        c.execute(sql.SQL("CREATE TABLE {} (scale int NOT NULL, generator_version int NOT NULL, "
                          "documents_rows bigint NOT NULL, generated_at timestamptz NOT NULL "
                          "DEFAULT now())").format(sql.Identifier(MARKER_TABLE)))
        c.execute(sql.SQL("INSERT INTO {} (scale, generator_version, documents_rows) "
                          "VALUES (%s, %s, %s)").format(sql.Identifier(MARKER_TABLE)),
                  (scale, GENERATOR_VERSION, rows))
    return time.perf_counter() - t0


def describe_database(db: str) -> dict[str, Any]:
    with connect(db) as c:
        rows = c.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relname IN ('pgbench_accounts', 'documents')").fetchall()
    sizes = {str(r[0]): int(r[1]) for r in rows}
    return {"database_bytes": database_size(db), "pgbench_accounts_bytes": sizes.get("pgbench_accounts"),
            "documents_bytes": sizes.get("documents")}


# -- the benchmark ------------------------------------------------------------------------


@dataclass
class Bench:
    db: str
    work: Path
    logs: Path
    nice: list[str]
    format_version: int = 2
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)

    def record(self, key: str, argv: Sequence[str], sample: Sample) -> Sample:
        self.samples.setdefault(key, []).append(sample)
        self.commands[key] = shlex.join(argv)
        return sample

    def shell(self, key: str, rnd: int, script: str) -> Sample:
        argv = [*self.nice, "bash", "-c", "set -euo pipefail; " + script]
        return self.record(key, argv, run_measured(argv, log_dir=self.logs, tag=f"{key}.{rnd}"))

    def vaultflow(self, key: str, rnd: int, args: list[str]) -> Sample:
        result = self.logs / f"{key}.{rnd}.json"
        argv = [*self.nice, sys.executable, "-m", "bench._vaultflow_backup", *args,
                "--result", str(result)]
        sample = run_measured(argv, log_dir=self.logs, tag=f"{key}.{rnd}",
                              env={"VAULTFLOW_PASSPHRASE": PASSPHRASE})
        sample.detail = json.loads(result.read_text())
        return self.record(key, argv, sample)

    def new_repository(self, name: str) -> Path:
        from vaultflow.repository import Repository
        from vaultflow.storage import LocalStore

        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        Repository.init(LocalStore(path), PASSPHRASE, format_version=self.format_version)
        return path

    def round(self, rnd: int, *, check: bool) -> None:
        db, w = self.db, self.work
        conn = shlex.join(CONN)
        url = f"postgresql://{USER}@{HOST}:{PORT}"

        plain, fc, zst = w / "db.sql", w / "db.Fc", w / "db.sql.zst"
        q_plain, q_fc, q_zst = (shlex.quote(str(f)) for f in (plain, fc, zst))
        s = self.shell(REF, rnd, f"pg_dump {conn} -Fp -f {q_plain} {db}")
        s.out_bytes = plain.stat().st_size
        plain.unlink()

        # The stream vaultflow stores, with nowhere to go: what vaultflow adds is the rest.
        self.shell(REF_Z0, rnd, f"pg_dump {conn} -Fc -Z0 {db} > /dev/null")

        s = self.shell(FC, rnd, f"pg_dump {conn} -Fc -f {q_fc} {db}")
        s.out_bytes = fc.stat().st_size

        s = self.shell(ZSTD, rnd, f"pg_dump {conn} -Fp {db} | zstd -3 -T1 -q > {q_zst} && sync {q_zst}")
        s.out_bytes = zst.stat().st_size
        zst.unlink()

        repo = self.new_repository(f"repo_{rnd}")
        s = self.vaultflow(VF, rnd, ["backup", "--repo", str(repo), "--url", f"{url}/{db}"])
        s.out_bytes = tree_bytes(repo)
        snapshot = str(s.detail["snapshot_id"])

        repo_nochk = self.new_repository(f"repo_nochk_{rnd}")
        s = self.vaultflow(VF_NOCHK, rnd, ["backup", "--repo", str(repo_nochk), "--url",
                                           f"{url}/{db}", "--no-table-checksums"])
        s.out_bytes = tree_bytes(repo_nochk)
        shutil.rmtree(repo_nochk)

        source = row_counts(db) if check else {}
        for key, target, run in (
            (PG_RESTORE, f"{db}_pgr", lambda t: self.shell(
                PG_RESTORE, rnd, f"createdb {conn} -T template0 {t} && "
                                 f"pg_restore {conn} --exit-on-error -d {t} {q_fc}")),
            (VF_RESTORE, f"{db}_vfr", lambda t: self.vaultflow(
                VF_RESTORE, rnd, ["restore", "--repo", str(repo), "--snapshot", snapshot,
                                  "--url", f"{url}/{t}"])),
        ):
            drop_database(target)
            try:
                s = run(target)
                s.out_bytes = database_size(target)
                if check:
                    got = row_counts(target)
                    self.checks[key] = {"source": source, "restored": got, "ok": got == source}
                    if got != source:
                        log(f"WARNING: {key} restored {got}, source has {source}")
            finally:
                drop_database(target)
        fc.unlink()
        shutil.rmtree(repo)


# -- reporting ----------------------------------------------------------------------------


def summarise(samples: list[Sample]) -> dict[str, Any]:
    walls = [s.wall_s for s in samples]
    out: dict[str, Any] = {
        "n": len(samples),
        "wall_min_s": min(walls),
        "wall_median_s": round(statistics.median(walls), 3),
        "cpu_median_s": round(statistics.median(s.cpu_s for s in samples), 2),
        "machine_cpu_median_s": round(statistics.median(s.machine_cpu_s for s in samples), 2),
        "peak_rss_mb": round(max(s.max_rss_kb for s in samples) / 1024, 1),
        "tree_rss_mb": max(s.tree_rss_mb for s in samples),
        "out_bytes": samples[-1].out_bytes,
    }
    if samples[0].detail:
        py = max(int(s.detail["self_maxrss_kb"]) for s in samples) / 1024
        tool = max((v for s in samples for k, v in s.rss_by_process_mb.items()
                    if k in ("pg_dump", "pg_restore")), default=0.0)
        out.update({
            "python_rss_mb": round(py, 1),
            "python_rss_after_imports_mb": round(
                max(int(s.detail["rss_after_imports_kb"]) for s in samples) / 1024, 1),
            "tool_rss_mb": round(tool, 1),
            "rss_upper_bound_mb": round(py + tool, 1),
            "core_median_s": round(statistics.median(float(s.detail["core_s"]) for s in samples), 3),
            "import_median_s": round(statistics.median(float(s.detail["import_s"]) for s in samples), 3),
            "open_median_s": round(statistics.median(float(s.detail["open_s"]) for s in samples), 3),
            "python_cpu_median_s": round(statistics.median(float(s.detail["self_cpu_s"]) for s in samples), 2),
            "tool_cpu_median_s": round(statistics.median(float(s.detail["children_cpu_s"]) for s in samples), 2),
        })
        if "stream_bytes" in samples[0].detail:
            out["stream_bytes"] = samples[-1].detail["stream_bytes"]
    return out


@dataclass
class Ratio:
    name: str
    value: float
    target: str
    ok: bool
    basis: str


def ratios(summary: dict[str, dict[str, Any]]) -> list[Ratio]:
    """The issue-2 targets; wall ratios use medians (the JSON has the mins too)."""
    out: list[Ratio] = []
    for name, num, den, limit in (
        ("vaultflow / (pg_dump | zstd -3)", VF, ZSTD, 1.15),
        ("vaultflow / pg_dump -Fc", VF, FC, 0.5),
        ("vaultflow no-chk / (pg_dump | zstd -3)", VF_NOCHK, ZSTD, 1.15),
        ("vaultflow no-chk / pg_dump -Fc", VF_NOCHK, FC, 0.5),
        ("vaultflow restore / pg_restore", VF_RESTORE, PG_RESTORE, 1.15),
    ):
        value = float(summary[num]["wall_median_s"]) / float(summary[den]["wall_median_s"])
        at_min = float(summary[num]["wall_min_s"]) / float(summary[den]["wall_min_s"])
        out.append(Ratio(name, round(value, 3), f"<= {limit:.2f}", value <= limit,
                         f"median wall; {at_min:.3f} at min wall"))
    for key in (VF, VF_NOCHK, VF_RESTORE):
        mb = float(summary[key]["rss_upper_bound_mb"])
        out.append(Ratio(f"{LABELS[key]}: peak RSS MB (python + tool)", mb, "< 300", mb < 300,
                         "max over runs"))
    return out


def fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def print_report(summary: dict[str, dict[str, Any]], rs: list[Ratio], header: str) -> None:
    print()
    print(header)
    cols = ["row", "n", "wall min", "wall med", "CPU med", "mach CPU", "RSS MB", "tree MB", "bytes"]
    rows: list[list[str]] = []
    for key, label in LABELS.items():
        s = summary[key]
        rows.append([label, str(s["n"]), f"{s['wall_min_s']:.2f}", f"{s['wall_median_s']:.2f}",
                     f"{s['cpu_median_s']:.2f}", f"{s['machine_cpu_median_s']:.2f}",
                     f"{s['peak_rss_mb']:.0f}", f"{s['tree_rss_mb']:.0f}", fmt_bytes(s["out_bytes"])])
    widths = [max(len(r[i]) for r in [cols, *rows]) for i in range(len(cols))]
    line = "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cols))
    print(line)
    print("-" * len(line))
    for cells in rows:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)))
    print()
    print("vaultflow detail (medians; RSS = max over runs):")
    for key in (VF, VF_NOCHK, VF_RESTORE):
        s = summary[key]
        extra = f", stream {fmt_bytes(s.get('stream_bytes'))} B" if "stream_bytes" in s else ""
        print(f"  {LABELS[key]}: imports {s['import_median_s']:.2f} s, open repo {s['open_median_s']:.2f} s, "
              f"core {s['core_median_s']:.2f} s; python RSS {s['python_rss_mb']:.0f} MB "
              f"({s['python_rss_after_imports_mb']:.0f} after imports) / "
              f"{s['python_cpu_median_s']:.2f} CPU-s, tool RSS {s['tool_rss_mb']:.0f} MB (sampled) / "
              f"{s['tool_cpu_median_s']:.2f} CPU-s{extra}")
    print()
    print("targets:")
    for r in rs:
        print(f"  {'PASS' if r.ok else 'MISS'}  {r.name} = {r.value:g}  (target {r.target}; {r.basis})")


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scale", type=int, default=100, help="pgbench scale (default 100; 5 for a quick check)")
    p.add_argument("--runs", type=int, default=3, help="timed runs of every row (default 3)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep", dest="drop", action="store_false",
                      help="keep the generated database for the next run (the default)")
    keep.add_argument("--drop", dest="drop", action="store_true",
                      help="drop the generated database at the end")
    p.set_defaults(drop=False)
    p.add_argument("--format-version", type=int, choices=[1, 2], default=2,
                   help="repository format of the vaultflow rows: 2 (key roles, the default) or 1 (one key)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out",
                   help="output directory (default bench/out, gitignored)")
    args = p.parse_args(argv)
    if args.scale < 1 or args.runs < 1:
        p.error("--scale and --runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("pg_dump", "pg_restore", "pgbench", "createdb", "zstd", "bash"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH")
    out: Path = args.out.expanduser().absolute()
    work, logs = out / "work", out / "logs"
    shutil.rmtree(work, ignore_errors=True)
    for d in (work, logs):
        d.mkdir(parents=True, exist_ok=True)
    nice, niceness = nice_prefix()
    db = f"vaultflow_bench_s{args.scale}"

    started = datetime.now(UTC)
    load_before = os.getloadavg()
    generation_s: float | None = None
    if marker_scale(db) == args.scale:
        log(f"reusing database {db}")
    else:
        log(f"generating database {db} (scale {args.scale})")
        generation_s = round(generate_database(db, args.scale, nice, logs), 1)
        log(f"generated in {generation_s:.1f} s")
    dbinfo = describe_database(db)
    log(f"{db}: {dbinfo['database_bytes'] / MB:,.0f} MiB "
        f"(documents {dbinfo['documents_bytes'] / MB:,.0f} MiB)")

    bench = Bench(db=db, work=work, logs=logs, nice=nice, format_version=args.format_version)
    try:
        for rnd in range(1, args.runs + 1):
            log(f"round {rnd}/{args.runs}")
            bench.round(rnd, check=rnd == 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.drop:
            log(f"dropping {db}")
            drop_database(db)

    summary = {key: summarise(bench.samples[key]) for key in LABELS}
    rs = ratios(summary)
    with admin() as c:
        server_version = str(c.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    postmaster_nice = [p.nice() for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"][:1]
    meta = {
        "started_at": started.isoformat(), "finished_at": datetime.now(UTC).isoformat(),
        "scale": args.scale, "runs": args.runs, "format_version": args.format_version, "database": db,
        "generated_s": generation_s,
        **dbinfo, "documents_rows": args.scale * DOC_ROWS_PER_SCALE,
        "niceness": niceness, "postgres_server_niceness": postmaster_nice[0] if postmaster_nice else None,
        "cpus": os.cpu_count(), "cpu_model": platform.processor() or platform.machine(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "postgresql": server_version,
        "pg_dump": tool_version(["pg_dump", "--version"]), "zstd": tool_version(["zstd", "--version"]),
    }
    header = (f"vaultflow vs pg_dump, database {db} ({dbinfo['database_bytes'] / MB:,.0f} MiB), "
              f"{args.runs} run(s), niceness {niceness}, wall in s, RSS = largest process")
    print_report(summary, rs, header)
    if bench.checks:
        bad = [k for k, v in bench.checks.items() if not v["ok"]]
        print(f"\nrow-count check of restored databases: {'FAILED for ' + ', '.join(bad) if bad else 'ok'}")

    result = {
        "meta": meta, "commands": bench.commands, "summary": summary,
        "ratios": [asdict(r) for r in rs], "restore_checks": bench.checks,
        "samples": {k: [asdict(s) for s in v] for k, v in bench.samples.items()},
    }
    json_path = out / "backup_vs_pg_dump.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
