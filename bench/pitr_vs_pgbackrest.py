"""Issue 18 benchmark: PostgreSQL point-in-time recovery, vaultflow against pgBackRest, in one run.

    .venv/bin/python bench/pitr_vs_pgbackrest.py                 # scale 20 (~450 MiB), about 5 minutes
    .venv/bin/python bench/pitr_vs_pgbackrest.py --scale 100     # the ~2 GB cluster of backup_vs_pg_dump.py

Run as root from the checkout after `make wal-venv` (the server runs `.wal-venv/bin/vaultflow-wal push %p`
as the postgres OS user). On a private cluster (initdb as postgres on a free port, `pgbench -i -s SCALE`
plus the `documents` table of backup_vs_pg_dump.py) that archives every segment into both a vaultflow
repository and a pgBackRest stanza (archive_command = `vaultflow-wal push %p && pgbackrest archive-push
%p`), it times side by side:

1. base backup: `pg_basebackup -Ft -X none | zstd -3` (reference), `vaultflow pitr base-backup`,
   `pgbackrest backup --type=full` (zstd level 3, process-max 1, aes-256-cbc: both tools encrypt);
2. after a 1 % change of pgbench_accounts (scattered, `aid % 100 = 0`, or `--change contiguous`): the
   bytes a second `vaultflow pitr base-backup` stores against `pgbackrest backup --type=incr`;
3. restore to a time (a moment after a pgbench run that follows the second backups): `vaultflow pitr
   restore --to-time T --start` against `pgbackrest restore --type=time` + `pg_ctl start`, each until the
   copy promoted; both copies are checked (pgbench_history rows and a marker row of the moment);
4. WAL push throughput, segments/s, on `--segments` real segments staged like pg_wal (with .ready
   files): `vaultflow-wal push` once per segment, `pgbackrest archive-push` sync and async (spool,
   process-max 1), as the archiver calls them; and whether each keeps up with `pgbench -c 2 -j 2` at full
   speed (the archiver's backlog of .ready files sampled during the run, and the catch-up time after it).

Prints the rows, the ratios with PASS/MISS against the issue's targets, and writes OUT/pitr_vs_pgbackrest.json.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backup_vs_pg_dump import (  # noqa: E402 - after the path
    _DOCUMENTS_DDL,
    _DOCUMENTS_INSERT,
    _SENTENCES,
    DOC_ROWS_PER_SCALE,
    CommandFailed,
    Sample,
    log,
    nice_prefix,
    run_measured,
    tool_version,
)

PASSPHRASE = "vaultflow pitr bench passphrase"  # throwaway repositories, benchmark only
CIPHER_PASS = "pgbackrest pitr bench cipher pass"
SEGMENT = 16 << 20
STANZA, PUSH_STANZA = "bench", "push"
POLL_S = 0.3  # vaultflow's --start polls pg_is_in_recovery() this often; the pgBackRest row does the same
WAL_COMMAND = ROOT / ".wal-venv" / "bin" / "vaultflow-wal"
PG_BIN = Path("/usr/lib/postgresql/15/bin")

BASE_REF, BASE_VF, BASE_BR = "pg_basebackup_zstd", "vaultflow_base", "pgbackrest_full"
INCR_VF, INCR_BR = "vaultflow_second_base", "pgbackrest_incr"
RESTORE_VF, RESTORE_BR = "vaultflow_restore_time", "pgbackrest_restore_time"
PUSH_VF, PUSH_BR, PUSH_BR_ASYNC = "vaultflow_wal_push", "pgbackrest_archive_push", "pgbackrest_archive_push_async"
LABELS = {
    BASE_REF: "pg_basebackup -Ft -X none | zstd -3 (ref)",
    BASE_VF: "vaultflow pitr base-backup",
    BASE_BR: "pgbackrest backup --type=full",
    INCR_VF: "vaultflow pitr base-backup, after 1 % change",
    INCR_BR: "pgbackrest backup --type=incr",
    RESTORE_VF: "vaultflow pitr restore --to-time --start",
    RESTORE_BR: "pgbackrest restore --type=time + start",
    PUSH_VF: "vaultflow-wal push, per segment",
    PUSH_BR: "pgbackrest archive-push (sync)",
    PUSH_BR_ASYNC: "pgbackrest archive-push (async)",
}


def as_postgres(argv: Sequence[str], **env: str) -> list[str]:
    """argv run as the postgres OS user with exactly PATH and `env` (never this process's passphrase)."""
    path = f"{PG_BIN}:/usr/bin:/bin"
    return ["runuser", "-u", "postgres", "--", "env", "-i", f"PATH={path}",
            *(f"{k}={v}" for k, v in env.items()), *argv]


def run(argv: Sequence[str], what: str, timeout: float = 3600) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise CommandFailed(f"{what} exited with {out.returncode}: {shlex.join(argv)}\n"
                            f"{(out.stdout + out.stderr)[-3000:]}")
    return out.stdout


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class Cluster:
    base: Path
    port: int

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def repo(self) -> Path:
        return self.base / "vf-repo"

    @property
    def passphrase_file(self) -> Path:
        return self.base / "passphrase"

    @property
    def pgbackrest_conf(self) -> Path:
        return self.base / "pgbackrest.conf"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def connect(self, port: int | None = None) -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=port or self.port, user="postgres", dbname="postgres",
                               autocommit=True, connect_timeout=10)

    def one(self, query: str, port: int | None = None) -> Any:
        with self.connect(port) as c:
            row = c.execute(query).fetchone()
        return row[0] if row else None

    def vaultflow_push(self, repo: Path) -> str:
        return (f"VAULTFLOW_REPO={repo} VAULTFLOW_PASSPHRASE_FILE={self.passphrase_file} {WAL_COMMAND} push %p")

    def pgbackrest(self, *args: str, stanza: str = STANZA) -> list[str]:
        return ["pgbackrest", f"--config={self.pgbackrest_conf}", f"--stanza={stanza}", *args]

    def pg_ctl(self, data: Path, *args: str) -> list[str]:
        return as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), *args])

    def set_archive_command(self, command: str) -> None:
        with self.connect() as c:
            c.execute(f"ALTER SYSTEM SET archive_command = {_literal(command)}")
            c.execute("SELECT pg_reload_conf()")
        time.sleep(1)

    def archived_up_to(self, name: str, timeout: float = 300) -> float:
        """Wait until the archiver archived `name` (or later); the seconds waited."""
        t0 = time.perf_counter()
        while True:
            last = self.one("SELECT last_archived_wal FROM pg_stat_archiver")
            if last is not None and str(last) >= name:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                failed = self.one("SELECT last_failed_wal FROM pg_stat_archiver")
                raise CommandFailed(f"the archiver did not reach {name} in {timeout:.0f} s (last {last}, "
                                    f"failed {failed}); see {self.base / 'server.log'}")
            time.sleep(0.05)

    def switch_and_wait(self) -> str:
        """Close the current segment and wait until it is archived; its name."""
        with self.connect() as c:
            c.execute("CREATE TABLE IF NOT EXISTS bench_tick (t timestamptz)")
            c.execute("INSERT INTO bench_tick VALUES (clock_timestamp())")
            name = str(c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0])  # type: ignore[index]
            c.execute("SELECT pg_switch_wal()")
        self.archived_up_to(name)
        return name

    def ready_count(self) -> int:
        return sum(1 for p in (self.data / "pg_wal" / "archive_status").iterdir() if p.name.endswith(".ready"))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def start_cluster(args: argparse.Namespace) -> Cluster:
    base = Path(tempfile.mkdtemp(prefix="vf-pitrbench-", dir=args.work))
    base.chmod(0o755)
    pg = pwd.getpwnam("postgres")
    cluster = Cluster(base, free_port())
    from vaultflow.repository import Repository
    from vaultflow.storage import LocalStore

    levels = {} if args.compression_level is None else {"compression_level": args.compression_level}
    Repository.init(LocalStore(cluster.repo), PASSPHRASE, **levels)
    cluster.passphrase_file.write_text(PASSPHRASE + "\n")
    cluster.passphrase_file.chmod(0o600)
    cluster.pgbackrest_conf.write_text(
        "[global]\n"
        f"repo1-path={base / 'pgbr-repo'}\nrepo1-retention-full=99\n"
        f"repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={CIPHER_PASS}\n"
        "compress-type=zst\ncompress-level=3\nprocess-max=1\nstart-fast=y\n"
        f"log-path={base / 'pgbr-log'}\nlock-path={base / 'pgbr-lock'}\nspool-path={base / 'pgbr-spool'}\n"
        "log-level-console=warn\nlog-level-file=info\n"
        f"[{STANZA}]\npg1-path={cluster.data}\npg1-port={cluster.port}\npg1-socket-path={base}\npg1-user=postgres\n"
        f"[{PUSH_STANZA}]\npg1-path={base / 'staged'}\n")
    cluster.pgbackrest_conf.chmod(0o600)
    for d in ("pgbr-repo", "pgbr-log", "pgbr-lock", "pgbr-spool", "restores"):
        (base / d).mkdir()
    for path in [base, *base.rglob("*")]:
        os.chown(path, pg.pw_uid, pg.pw_gid)
    run(as_postgres([str(PG_BIN / "initdb"), "-D", str(cluster.data), "--auth=trust", "-U", "postgres",
                     "--encoding=UTF8", "--locale=C", "--no-sync"]), "initdb")
    both = f"{cluster.vaultflow_push(cluster.repo)} && {shlex.join(cluster.pgbackrest('archive-push'))} %p"
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write(f"wal_level = replica\narchive_mode = on\narchive_command = {_literal(both)}\n"
                   f"listen_addresses = '127.0.0.1'\nport = {cluster.port}\nunix_socket_directories = '{base}'\n"
                   "max_wal_size = '4GB'\nwal_keep_size = '2GB'\nshared_buffers = '256MB'\n")
    run(cluster.pg_ctl(cluster.data, "-l", str(base / "server.log"), "-w", "-t", "120", "start"), "pg_ctl start")
    run(as_postgres(cluster.pgbackrest("stanza-create")), "pgbackrest stanza-create")
    return cluster


def stop_cluster(cluster: Cluster, keep: bool) -> None:
    for data in [cluster.data, *(cluster.base / "restores").glob("*")]:
        if (data / "postmaster.pid").exists():
            subprocess.run(cluster.pg_ctl(data, "-m", "immediate", "-w", "stop"), capture_output=True, check=False)
    if not keep:
        shutil.rmtree(cluster.base, ignore_errors=True)


def generate(cluster: Cluster, scale: int, documents: bool) -> tuple[float, int]:
    """pgbench -i (and the documents); the seconds it took and the WAL bytes it wrote."""
    t0 = time.perf_counter()
    lsn0 = cluster.one("SELECT pg_current_wal_lsn()")
    log(f"pgbench -i -s {scale}")
    run(["pgbench", "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
         "postgres"], "pgbench -i")
    if documents:
        rows, batch = scale * DOC_ROWS_PER_SCALE, 10 * DOC_ROWS_PER_SCALE
        with cluster.connect() as c:
            c.execute(_DOCUMENTS_DDL)
            for lo in range(1, rows + 1, batch):
                c.execute(_DOCUMENTS_INSERT, {"lo": lo, "hi": min(lo + batch - 1, rows), "sentences": _SENTENCES})
            c.execute("VACUUM (ANALYZE) documents")
        log(f"documents: {rows:,} rows")
    with cluster.connect() as c:
        c.execute("CHECKPOINT")
        wal = int(c.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (lsn0,)).fetchone()[0])  # type: ignore[index]
    loaded = time.perf_counter() - t0
    cluster.switch_and_wait()
    return loaded, wal


# -- the rows -------------------------------------------------------------------------------------


@dataclass
class Bench:
    cluster: Cluster
    logs: Path
    nice: list[str]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def measure(self, key: str, argv: Sequence[str], tag: str, env: dict[str, str] | None = None) -> Sample:
        argv = [*self.nice, *argv]
        sample = run_measured(argv, log_dir=self.logs, tag=tag, env=env)
        self.samples.setdefault(key, []).append(sample)
        self.commands[key] = shlex.join(argv)
        return sample

    def vaultflow(self, key: str, tag: str, args: list[str]) -> Sample:
        env = {"PYTHONPATH": str(ROOT), "VAULTFLOW_REPO": str(self.cluster.repo), "VAULTFLOW_PASSPHRASE": PASSPHRASE,
               "VAULTFLOW_HOME": str(self.cluster.base / "vf-home")}
        sample = self.measure(key, [sys.executable, "-m", "vaultflow.cli.main", *args], tag, env=env)
        sample.detail = json.loads((self.logs / f"{tag}.stdout").read_text())
        return sample

    def pgbackrest_backup(self, key: str, tag: str, kind: str) -> Sample:
        sample = self.measure(key, as_postgres(self.cluster.pgbackrest("backup", f"--type={kind}")), tag)
        info = json.loads(run(as_postgres(self.cluster.pgbackrest("info", "--output=json")), "pgbackrest info"))
        newest = info[0]["backup"][-1]
        sample.out_bytes = int(newest["info"]["repository"]["delta"])
        sample.detail = {"label": newest["label"], "type": newest["type"],
                         "size": int(newest["info"]["size"]), "delta": int(newest["info"]["delta"]),
                         "repository_size": int(newest["info"]["repository"]["size"]),
                         "repository_delta": int(newest["info"]["repository"]["delta"])}
        return sample

    # 1. base backups
    def base_backups(self, rnd: int) -> None:
        c = self.cluster
        out = c.base / "base.tar.zst"
        s = self.measure(BASE_REF, ["bash", "-c", "set -euo pipefail; "
                                    f"pg_basebackup -h 127.0.0.1 -p {c.port} -U postgres -D - -Ft -X none "
                                    f"--checkpoint=fast | zstd -3 -T1 -q > {out} && sync {out}"], f"{BASE_REF}.{rnd}")
        s.out_bytes = out.stat().st_size
        s.detail = {"tar_bytes": int(run(["bash", "-c", f"zstd -dcq {out} | wc -c"], "zstd -d").strip())}
        out.unlink()
        s = self.vaultflow(BASE_VF, f"{BASE_VF}.{rnd}", ["pitr", "base-backup", c.url, "--new-chain", "--json"])
        s.out_bytes = int(s.detail["added_bytes"])
        self.pgbackrest_backup(BASE_BR, f"{BASE_BR}.{rnd}", "full")

    # 2. a 1 % change, second backups
    def second_backups(self, change: str, scale: int) -> None:
        rows = scale * 100_000
        where = "aid % 100 = 0" if change == "scattered" else f"aid <= {rows // 100}"
        with self.cluster.connect() as conn:
            t0 = time.perf_counter()
            updated = conn.execute(f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE {where}").rowcount
            conn.execute("CHECKPOINT")
            self.facts["change"] = {"kind": change, "where": where, "rows": updated,
                                    "seconds": round(time.perf_counter() - t0, 2)}
        self.cluster.switch_and_wait()
        s = self.vaultflow(INCR_VF, f"{INCR_VF}.1", ["pitr", "base-backup", self.cluster.url, "--json"])
        s.out_bytes = int(s.detail["added_bytes"])
        self.pgbackrest_backup(INCR_BR, f"{INCR_BR}.1", "incr")
        self.facts["second_base_added_by_member"] = self.added_by_member(str(s.detail["snapshot"]))

    def added_by_member(self, snapshot_id: str) -> dict[str, int]:
        """The stored bytes a base backup added against its parent, by what the tar holds there: the WAL
        segments `-X fetch` puts in pg_wal/, each relation (by file node), the rest. A chunk that spans
        members is shared out by plaintext bytes. Reads the tar back from the repository (not timed)."""
        from vaultflow.repository import Repository
        from vaultflow.storage import LocalStore

        repo = Repository.open(LocalStore(self.cluster.repo), PASSPHRASE)
        manifest = repo.load_manifest(snapshot_id)
        assert manifest.parent is not None
        have = {c.id for st in repo.load_manifest(manifest.parent).streams for c in st.chunks}
        stream = manifest.streams[0]
        tar_path = self.cluster.base / "second-base.tar"
        with tar_path.open("wb") as sink:
            repo.read_stream(manifest.id, stream, sink, manifest.chain)
        with self.cluster.connect() as conn:
            names = {str(r[0]): str(r[1]) for r in conn.execute(
                "SELECT pg_relation_filenode(oid), relname FROM pg_class WHERE pg_relation_filenode(oid) IS NOT NULL "
                "AND relname IN ('pgbench_accounts', 'pgbench_accounts_pkey', 'documents', 'pgbench_history')")}
        spans: list[tuple[int, int, str]] = []
        with tarfile.open(tar_path, "r:") as tar:
            for member in tar:
                end = member.offset_data + (member.size + 511) // 512 * 512
                parts = member.name.split("/")
                if parts[0] == "pg_wal" and member.size:
                    what = "WAL segments in the tar (pg_wal/)"
                elif parts[0] == "base" and len(parts) == 3:
                    what = names.get(parts[2].split(".")[0].split("_")[0], "other relations")
                else:
                    what = "other files"
                spans.append((member.offset, end, what))
        tar_path.unlink()
        added: dict[str, float] = {}
        pos, seen, i = 0, set(), 0
        for chunk in stream.chunks:
            start, stop = pos, pos + chunk.size
            pos = stop
            if chunk.id in have or chunk.id in seen:
                continue
            seen.add(chunk.id)
            while i < len(spans) and spans[i][1] <= start:
                i += 1
            j = i
            while j < len(spans) and spans[j][0] < stop:
                overlap = min(stop, spans[j][1]) - max(start, spans[j][0])
                added[spans[j][2]] = added.get(spans[j][2], 0.0) + chunk.stored * overlap / chunk.size
                j += 1
        return {k: round(v) for k, v in sorted(added.items(), key=lambda kv: -kv[1])}

    # 3. restore to a time
    def workload_and_target(self, seconds: int) -> dict[str, Any]:
        """pgbench for `seconds`, then the target: a marker row committed before it, one after it."""
        c = self.cluster
        log(f"pgbench -T {seconds} (the WAL the restores replay)")
        lsn0 = c.one("SELECT pg_current_wal_lsn()")
        run(["pgbench", "-n", "-c", "2", "-j", "2", "-T", str(seconds), "-h", "127.0.0.1", "-p", str(c.port),
             "-U", "postgres", "postgres"], "pgbench")
        with c.connect() as conn:
            conn.execute("CREATE TABLE bench_marker (note text, at timestamptz DEFAULT clock_timestamp())")
            conn.execute("INSERT INTO bench_marker (note) VALUES ('before')")
            history = int(conn.execute("SELECT count(*) FROM pgbench_history").fetchone()[0])  # type: ignore[index]
            time.sleep(1.0)
            target = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            time.sleep(1.0)
            conn.execute("INSERT INTO bench_marker (note) VALUES ('after')")
            replay = int(conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (lsn0,)).fetchone()[0])  # type: ignore[index]
        c.switch_and_wait()
        c.switch_and_wait()
        return {"target": target, "history_rows": history, "replay_bytes": replay}

    def check_copy(self, key: str, port: int, want: dict[str, Any]) -> None:
        got = {"history_rows": int(self.cluster.one("SELECT count(*) FROM pgbench_history", port)),
               "markers": [r[0] for r in self._rows("SELECT note FROM bench_marker ORDER BY at", port)]}
        ok = got == {"history_rows": want["history_rows"], "markers": ["before"]}
        self.facts.setdefault("restore_checks", {})[key] = {**got, "ok": ok}
        if not ok:
            log(f"WARNING: {key} restored {got}; expected {want['history_rows']} history rows and ['before']")

    def _rows(self, query: str, port: int) -> list[Any]:
        with self.cluster.connect(port) as conn:
            return conn.execute(query).fetchall()

    def restores(self, rnd: int, want: dict[str, Any]) -> None:
        c = self.cluster
        target = want["target"].isoformat(sep=" ")
        pgdata, port = c.base / "restores" / f"vf{rnd}", free_port()
        sysid = str(c.one("SELECT system_identifier FROM pg_control_system()"))
        s = self.vaultflow(RESTORE_VF, f"{RESTORE_VF}.{rnd}", [
            "pitr", "restore", sysid, "--to-time", target, "--pgdata", str(pgdata), "--wal-command", str(WAL_COMMAND),
            "--passphrase-file", str(c.passphrase_file), "--start", "--port", str(port), "--json"])
        s.out_bytes = tree_bytes(pgdata)
        s.detail["restore_command_calls"] = restore_command_calls(pgdata / "vaultflow-start.log")
        self.check_copy(RESTORE_VF, port, want)
        run(c.pg_ctl(pgdata, "-m", "immediate", "-w", "stop"), "pg_ctl stop")
        shutil.rmtree(pgdata)

        pgdata, port = c.base / "restores" / f"br{rnd}", free_port()
        pgdata.mkdir(mode=0o700)
        shutil.chown(pgdata, "postgres", "postgres")
        restore = shlex.join(c.pgbackrest("restore", f"--pg1-path={pgdata}", "--type=time", f"--target={target}",
                                          "--target-action=promote", "--archive-mode=off"))
        start = shlex.join(["pg_ctl", "-D", str(pgdata), "-l", str(pgdata.parent / f"br{rnd}.log"), "-w", "-t", "3600",
                            "-o", f"-p {port} -c listen_addresses=127.0.0.1", "start"])
        wait = (f"until [ \"$(psql -qAt -h 127.0.0.1 -p {port} -U postgres -c 'select pg_is_in_recovery()' postgres "
                f"2>/dev/null)\" = f ]; do sleep {POLL_S}; done")
        s = self.measure(RESTORE_BR, as_postgres(["bash", "-c", f"set -euo pipefail; {restore} && {start} && {wait}"]),
                         f"{RESTORE_BR}.{rnd}")
        s.out_bytes = tree_bytes(pgdata)
        s.detail = {"restore_command_calls": restore_command_calls(pgdata.parent / f"br{rnd}.log")}
        self.check_copy(RESTORE_BR, port, want)
        run(c.pg_ctl(pgdata, "-m", "immediate", "-w", "stop"), "pg_ctl stop")
        shutil.rmtree(pgdata)

    # 4. WAL push
    def stage_segments(self, count: int) -> list[str]:
        """Copy the newest `count` archived segments (kept in pg_wal by wal_keep_size) and pg_control into
        a pg_wal-like directory `staged/`, each with its .ready file, as the archiver would see them."""
        c = self.cluster
        last = str(c.one("SELECT last_archived_wal FROM pg_stat_archiver"))
        names = sorted(p.name for p in (c.data / "pg_wal").iterdir()
                       if len(p.name) == 24 and p.name.startswith(last[:8]) and p.name <= last)[-count:]
        staged = c.base / "staged"
        (staged / "global").mkdir(parents=True, exist_ok=True)
        shutil.copy2(c.data / "global" / "pg_control", staged / "global" / "pg_control")
        shutil.copy2(c.data / "PG_VERSION", staged / "PG_VERSION")
        (staged / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy2(c.data / "pg_wal" / name, staged / "pg_wal" / name)
        for path in [staged, *staged.rglob("*")]:
            shutil.chown(path, "postgres", "postgres")
        return names

    def push_rows(self, names: list[str]) -> None:
        c = self.cluster
        staged = c.base / "staged"
        from vaultflow.repository import Repository
        from vaultflow.storage import LocalStore

        push_repo = c.base / "vf-push-repo"
        Repository.init(LocalStore(push_repo), PASSPHRASE)
        for path in [push_repo, *push_repo.rglob("*")]:
            shutil.chown(path, "postgres", "postgres")
        run(as_postgres(c.pgbackrest("stanza-create", "--no-online", stanza=PUSH_STANZA)), "stanza-create push")
        listed = " ".join(names)
        rows = [
            (PUSH_VF, f"VAULTFLOW_REPO={push_repo} VAULTFLOW_PASSPHRASE_FILE={c.passphrase_file} {WAL_COMMAND} push"),
            (PUSH_BR, shlex.join(c.pgbackrest("archive-push", stanza=PUSH_STANZA))),
            (PUSH_BR_ASYNC, shlex.join(c.pgbackrest("--archive-async", "archive-push", stanza=PUSH_STANZA))),
        ]
        for i, (key, command) in enumerate(rows):
            if i == 2:  # the async row pushes into a fresh stanza too (the sync row filled the first)
                shutil.rmtree(c.base / "pgbr-repo" / "archive" / PUSH_STANZA, ignore_errors=True)
                shutil.rmtree(c.base / "pgbr-repo" / "backup" / PUSH_STANZA, ignore_errors=True)
                run(as_postgres(c.pgbackrest("stanza-create", "--no-online", stanza=PUSH_STANZA)), "stanza-create")
            status = staged / "pg_wal" / "archive_status"
            for name in names:
                (status / f"{name}.done").unlink(missing_ok=True)
                (status / f"{name}.ready").touch()
                shutil.chown(status / f"{name}.ready", "postgres", "postgres")
            # As the archiver: one call per .ready segment, in order, marked .done when it returned 0.
            loop = (f"cd {staged}; for f in {listed}; do {command} pg_wal/$f || exit 1; "
                    "mv pg_wal/archive_status/$f.ready pg_wal/archive_status/$f.done; done")
            s = self.measure(key, as_postgres(["bash", "-c", loop]), f"{key}.1")
            s.detail = {"segments": len(names), "segments_per_s": round(len(names) / s.wall_s, 2)}
        self.facts["pushed_vaultflow_bytes"] = tree_bytes(push_repo / "wal")
        self.facts["pushed_pgbackrest_async_bytes"] = tree_bytes(c.base / "pgbr-repo" / "archive" / PUSH_STANZA)

    def profile_wal_command(self, segment: str, times: int = 5) -> None:
        """Where one `vaultflow-wal fetch` goes, as the server runs it (as postgres, a fresh process each
        time): the interpreter alone, the imports, and a whole fetch of one segment (scrypt included);
        against `pgbackrest archive-get` of the same segment. Medians of `times` runs, in seconds."""
        c = self.cluster
        python = str(WAL_COMMAND.parent / "python")
        out = c.base / "staged" / "pg_wal" / "RECOVERYXLOG"  # where the server has restore_command write
        env = {"VAULTFLOW_REPO": str(c.repo), "VAULTFLOW_PASSPHRASE_FILE": str(c.passphrase_file)}
        steps = {
            "interpreter": [python, "-c", "pass"],
            "imports": [python, "-c", "import vaultflow.wal.command"],
            "vaultflow-wal fetch": [str(WAL_COMMAND), "fetch", segment, str(out)],
            "pgbackrest archive-get": c.pgbackrest("archive-get", segment, str(out)),
        }
        found: dict[str, float] = {}
        for step, argv in steps.items():
            walls = []
            for _ in range(times):
                subprocess.run(as_postgres(["rm", "-f", str(out)]), check=False)
                t0 = time.perf_counter()
                run([*self.nice, *as_postgres(argv, **env)], step)
                walls.append(time.perf_counter() - t0)
            found[step] = round(statistics.median(walls), 3)
        self.facts["wal_command_profile_s"] = found
        log(f"one WAL file fetched, median s: {found}")

    def keeps_up(self, seconds: int) -> None:
        """pgbench at full speed with each archive_command alone: WAL rate, the archiver's backlog."""
        c = self.cluster
        commands = {
            PUSH_VF: c.vaultflow_push(c.repo),
            PUSH_BR: f"{shlex.join(c.pgbackrest('archive-push'))} %p",
            PUSH_BR_ASYNC: f"{shlex.join(c.pgbackrest('--archive-async', 'archive-push'))} %p",
        }
        results: dict[str, Any] = {}
        try:
            for key, command in commands.items():
                c.set_archive_command(command)
                c.switch_and_wait()
                lsn0 = c.one("SELECT pg_current_wal_lsn()")
                backlog: list[int] = []
                halt = threading.Event()
                sampler = threading.Thread(target=_sample_backlog, args=(c, backlog, halt), daemon=True)
                sampler.start()
                t0 = time.perf_counter()
                bench = run([*self.nice, "pgbench", "-n", "-c", "2", "-j", "2", "-T", str(seconds), "-h", "127.0.0.1",
                             "-p", str(c.port), "-U", "postgres", "postgres"], "pgbench")
                ran = time.perf_counter() - t0
                with c.connect() as conn:
                    produced = int(conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (lsn0,)).fetchone()[0])  # type: ignore[index]
                    at_end = str(conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0])  # type: ignore[index]
                ready_at_end = c.ready_count()
                catch_up = c.archived_up_to(_previous_segment(at_end))  # every segment pgbench filled
                halt.set()
                sampler.join()
                tps = next((ln.split("=")[1].split()[0] for ln in bench.splitlines() if ln.startswith("tps")), "?")
                results[key] = {"pgbench_s": round(ran, 1), "tps": tps, "wal_bytes": produced,
                                "segments_per_s": round(produced / SEGMENT / ran, 2),
                                "max_ready": max(backlog, default=0), "ready_at_end": ready_at_end,
                                "catch_up_s": round(catch_up, 2)}
                log(f"{LABELS[key]}: {results[key]}")
        finally:
            both = f"{c.vaultflow_push(c.repo)} && {shlex.join(c.pgbackrest('archive-push'))} %p"
            c.set_archive_command(both)
        self.facts["keeps_up"] = results


def restore_command_calls(server_log: Path) -> dict[str, int]:
    """How often the restored server ran restore_command: files it restored, and misses (history probes,
    the end of the WAL) as the tools print them to the server log."""
    text = server_log.read_text(errors="replace") if server_log.exists() else ""
    return {"restored": text.count("restored log file"),
            "missing": text.count("is not in the repository") + text.count("unable to find")}


def _sample_backlog(cluster: Cluster, backlog: list[int], halt: threading.Event) -> None:
    while not halt.is_set():
        backlog.append(cluster.ready_count())
        halt.wait(0.25)


def _previous_segment(name: str) -> str:
    number = int(name[8:16], 16) * 0x100 + int(name[16:], 16) - 1
    return f"{name[:8]}{number // 0x100:08X}{number % 0x100:08X}"


# -- reporting --------------------------------------------------------------------------------------


def summarise(samples: list[Sample]) -> dict[str, Any]:
    walls = [s.wall_s for s in samples]
    return {"n": len(samples), "wall_min_s": min(walls), "wall_median_s": round(statistics.median(walls), 3),
            "cpu_median_s": round(statistics.median(s.cpu_s for s in samples), 2),
            "machine_cpu_median_s": round(statistics.median(s.machine_cpu_s for s in samples), 2),
            "peak_rss_mb": round(max(s.max_rss_kb for s in samples) / 1024, 1),
            "out_bytes": samples[-1].out_bytes, "detail": samples[-1].detail}


@dataclass
class Ratio:
    name: str
    value: float
    target: str
    ok: bool


def ratios(summary: dict[str, dict[str, Any]], keeps_up: dict[str, Any]) -> list[Ratio]:
    def wall(key: str) -> float:
        return float(summary[key]["wall_median_s"])

    out = [Ratio("vaultflow base backup / pgbackrest full (wall)", round(wall(BASE_VF) / wall(BASE_BR), 3), "<= 1.2",
                 wall(BASE_VF) / wall(BASE_BR) <= 1.2),
           Ratio("vaultflow base backup / (pg_basebackup | zstd -3) (wall)", round(wall(BASE_VF) / wall(BASE_REF), 3),
                 "(reference)", True)]
    vf, br = int(summary[INCR_VF]["out_bytes"]), int(summary[INCR_BR]["out_bytes"])
    out.append(Ratio("vaultflow second base backup stored / pgbackrest incr stored (bytes)", round(vf / br, 3),
                     "<= 1.0", vf <= br))
    restore = wall(RESTORE_VF) / wall(RESTORE_BR)
    out.append(Ratio("vaultflow restore to time / pgbackrest restore --type=time (wall)", round(restore, 3),
                     "<= 1.2", restore <= 1.2))
    for key in (PUSH_BR, PUSH_BR_ASYNC):
        a = float(summary[PUSH_VF]["detail"]["segments_per_s"])
        b = float(summary[key]["detail"]["segments_per_s"])
        out.append(Ratio(f"vaultflow-wal push / {LABELS[key]} (segments/s)", round(a / b, 3), "(reference)", True))
    live = keeps_up.get(PUSH_VF)
    if live:
        ok = live["max_ready"] <= 2 and live["catch_up_s"] <= 5
        out.append(Ratio("vaultflow-wal push under pgbench at full speed: max .ready backlog", live["max_ready"],
                         "<= 2 (and catch-up <= 5 s)", ok))
    return out


def print_report(summary: dict[str, dict[str, Any]], rs: list[Ratio], facts: dict[str, Any], header: str) -> None:
    print()
    print(header)
    cols = ["row", "n", "wall min", "wall med", "CPU med", "mach CPU", "RSS MB", "bytes"]
    rows = []
    for key, label in LABELS.items():
        if key not in summary:
            continue
        s = summary[key]
        rows.append([label, str(s["n"]), f"{s['wall_min_s']:.2f}", f"{s['wall_median_s']:.2f}",
                     f"{s['cpu_median_s']:.2f}", f"{s['machine_cpu_median_s']:.2f}", f"{s['peak_rss_mb']:.0f}",
                     "-" if s["out_bytes"] is None else f"{s['out_bytes']:,}"])
    widths = [max(len(r[i]) for r in [cols, *rows]) for i in range(len(cols))]
    for cells in [cols, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)))
    print()
    for key in (PUSH_VF, PUSH_BR, PUSH_BR_ASYNC):
        if key in summary:
            print(f"  {LABELS[key]}: {summary[key]['detail']['segments_per_s']} segments/s "
                  f"({summary[key]['detail']['segments']} segments)")
    if "load_wal" in facts:
        lw = facts["load_wal"]
        print(f"  the bulk load (pgbench -i + documents) wrote WAL at {lw['segments_per_s']} segments/s "
              f"({lw['bytes']:,} B in {lw['seconds']} s; both archivers in one archive_command)")
    for key, live in facts.get("keeps_up", {}).items():
        print(f"  under pgbench, {LABELS[key]}: WAL {live['segments_per_s']} segments/s at {live['tps']} tps, "
              f"backlog max {live['max_ready']} / at end {live['ready_at_end']} .ready, "
              f"caught up {live['catch_up_s']} s after")
    tar = int(summary[BASE_REF]["detail"]["tar_bytes"])
    print(f"  {LABELS[BASE_REF]}: tar {tar:,} B before zstd")
    for key in (BASE_VF, INCR_VF):
        d = summary[key]["detail"]
        print(f"  {LABELS[key]}: read {d['logical_bytes']:,} B (the -X none tar + {d['logical_bytes'] - tar:,} B, "
              f"mostly the WAL segments -X fetch adds), stored {d['added_bytes']:,} B new, "
              f"its own timer {d['duration_s']} s")
    for key in (BASE_BR, INCR_BR):
        d = summary[key]["detail"]
        print(f"  {LABELS[key]}: copied {d['delta']:,} of {d['size']:,} B, repository +{d['repository_delta']:,} B")
    for key in (RESTORE_VF, RESTORE_BR):
        if key in summary:
            print(f"  {LABELS[key]}: restore_command ran {summary[key]['detail'].get('restore_command_calls')}")
    if "wal_command_profile_s" in facts:
        print(f"  one WAL file fetched by a fresh process, median s: {facts['wal_command_profile_s']}")
    if "second_base_added_by_member" in facts:
        print(f"  {LABELS[INCR_VF]}, stored bytes by what the tar holds: {facts['second_base_added_by_member']}")
    print(f"  restore checks: {facts.get('restore_checks')}")
    print()
    print("targets:")
    for r in rs:
        print(f"  {'PASS' if r.ok else 'MISS'}  {r.name} = {r.value:g}  (target {r.target})")


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scale", type=int, default=20, help="pgbench scale (default 20, ~450 MiB with documents; "
                                                          "100 gives the ~2 GB cluster)")
    p.add_argument("--no-documents", dest="documents", action="store_false",
                   help="pgbench tables only (no documents table of text and jsonb)")
    p.add_argument("--runs", type=int, default=1, help="timed runs of the base backup and restore rows (default 1)")
    p.add_argument("--change", choices=("scattered", "contiguous"), default="scattered",
                   help="the 1 %% change before the second backups: every 100th account, or the first 1 %%")
    p.add_argument("--pgbench-seconds", type=int, default=20, help="pgbench run the restores replay (default 20)")
    p.add_argument("--segments", type=int, default=32, help="segments pushed by each WAL push row (default 32)")
    p.add_argument("--keeps-up-seconds", type=int, default=20,
                   help="pgbench run per archive_command for the keeps-up check (default 20; 0 skips it)")
    p.add_argument("--compression-level", type=int, default=None,
                   help="zstd level of the vaultflow repository (default: the repository default, 1; "
                        "pgBackRest runs at 3)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="results and logs (default bench/out)")
    p.add_argument("--work", type=Path, default=Path("/tmp"), help="where the cluster and repositories go")
    p.add_argument("--keep", action="store_true", help="keep the cluster directory (stopped) at the end")
    args = p.parse_args(argv)
    if min(args.scale, args.runs, args.segments) < 1:
        p.error("--scale, --runs and --segments must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("run as root: the cluster and pgBackRest run as the postgres OS user")
    for tool in ("pgbackrest", "pgbench", "pg_basebackup", "zstd", "psql", "runuser"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (apt-get install pgbackrest postgresql-client zstd)")
    if not os.access(WAL_COMMAND, os.X_OK):
        sys.exit(f"{WAL_COMMAND} is missing: run `make wal-venv`")
    out = args.out.expanduser().absolute()
    logs = out / "logs-pitr"
    logs.mkdir(parents=True, exist_ok=True)
    nice, niceness = nice_prefix()
    started, load_before = datetime.now(UTC), os.getloadavg()
    cluster = start_cluster(args)
    bench = Bench(cluster, logs, nice)
    try:
        generated, load_wal = generate(cluster, args.scale, args.documents)
        bench.facts["load_wal"] = {"bytes": load_wal, "seconds": round(generated, 1),
                                   "segments_per_s": round(load_wal / SEGMENT / generated, 2)}
        size = int(cluster.one("SELECT sum(pg_database_size(datname)) FROM pg_database"))
        log(f"cluster {size / 2**20:,.0f} MiB, generated in {generated:.1f} s; base backups")
        for rnd in range(1, args.runs + 1):
            bench.base_backups(rnd)
        log(f"1 % {args.change} change, second backups")
        bench.second_backups(args.change, args.scale)
        want = bench.workload_and_target(args.pgbench_seconds)
        bench.facts["replay_bytes"] = want["replay_bytes"]
        log(f"restores to {want['target'].isoformat()} (replaying {want['replay_bytes'] / 2**20:,.0f} MiB of WAL)")
        for rnd in range(1, args.runs + 1):
            bench.restores(rnd, want)
        log(f"WAL push of {args.segments} staged segments")
        staged = bench.stage_segments(args.segments)
        bench.push_rows(staged)
        bench.profile_wal_command(staged[-1])
        if args.keeps_up_seconds:
            bench.keeps_up(args.keeps_up_seconds)
    finally:
        stop_cluster(cluster, args.keep)

    summary = {key: summarise(v) for key, v in bench.samples.items()}
    rs = ratios(summary, bench.facts.get("keeps_up", {}))
    meta = {"started_at": started.isoformat(), "finished_at": datetime.now(UTC).isoformat(), "scale": args.scale,
            "documents": args.documents, "cluster_bytes": size, "generated_s": round(generated, 1),
            "runs": args.runs, "vaultflow_compression_level": args.compression_level, "niceness": niceness,
            "cpus": os.cpu_count(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "pgbackrest": tool_version(["pgbackrest", "version"]), "zstd": tool_version(["zstd", "--version"]),
            "postgresql": tool_version([str(PG_BIN / "postgres"), "--version"])}
    header = (f"PITR: vaultflow vs pgBackRest, cluster {size / 2**20:,.0f} MiB (scale {args.scale}"
              f"{' + documents' if args.documents else ''}), {args.runs} run(s), niceness {niceness}, "
              f"load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    print_report(summary, rs, bench.facts, header)
    result = {"meta": meta, "commands": bench.commands, "summary": summary, "facts": bench.facts,
              "ratios": [asdict(r) for r in rs],
              "samples": {k: [asdict(s) for s in v] for k, v in bench.samples.items()}}
    path = out / "pitr_vs_pgbackrest.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
