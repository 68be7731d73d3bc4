"""Issue 19 benchmark: MySQL/MariaDB binlog intake under load, and restore to a moment against doing it by hand.

    .venv/bin/python bench/mysql_pitr.py [--rows 300000] [--seconds 60] [--push-interval 5] [--runs 2]
                                         [--clients 4] [--replay-seconds 15]

Starts a private mariadbd (log-bin, ROW, 256 MiB buffer pool, 16 MiB binlog files) on a free port, loads
ROWS rows into `bench.events` and takes a vaultflow snapshot plus a plain `mariadb-dump
--single-transaction --master-data=2` of it (the by-hand side's dump). Then:

(a) Intake: `binlog-stream --push-interval` (BinlogStream, in this process) runs while CLIENTS (4) commit
    transactions for SECONDS (4 inserted rows and one updated row each). Prints transactions/s and binlog
    events/s written, binlog bytes/s written against bytes/s stored in the repository, and the lag when the
    load stops: the bytes the repository was behind and the seconds until it held the last commit.
(b) Restore to a moment REPLAY_SECONDS (15) into the load, RUNS times each, alternating which goes first:
    `vaultflow pitr restore mysql://.../bench --to-time T --into mysql://.../vf_copy` (the CLI, as users run
    it: snapshot from the repository, binlogs from the repository, decrypted) against by hand
    `mariadb hand_copy < dump.sql` then `mariadb-binlog --start-position P --stop-datetime T --database bench
    --rewrite-db bench->hand_copy <the server's binlog files> | mariadb hand_copy`. Both copies are compared
    (CHECKSUM TABLE). Prints min wall seconds per side and the ratio (target <= 1.15).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.engines.mysql.private_server import PrivateMariaDB, private_mariadb  # noqa: E402
from vaultflow.engines import engine_from_url  # noqa: E402
from vaultflow.engines.intake import IntakeHealth  # noqa: E402
from vaultflow.engines.mysql.binlog import BinlogStream, binlog_key, binlog_sources  # noqa: E402
from vaultflow.engines.mysql.engine import MySQLEngine  # noqa: E402
from vaultflow.operations.backup import backup_database  # noqa: E402
from vaultflow.repository import Repository, new_object_id  # noqa: E402
from vaultflow.storage import LocalStore  # noqa: E402

PASSPHRASE = "vaultflow bench passphrase"  # a throwaway repository, benchmark only
_MASTER = re.compile(rb"-- CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+);")


def load_rows(server: PrivateMariaDB, rows: int) -> None:
    server.execute("CREATE DATABASE bench", "CREATE TABLE bench.events (id bigint AUTO_INCREMENT PRIMARY KEY, "
                   "account int NOT NULL, amount int NOT NULL, note varchar(64), KEY (account))",
                   "CREATE TABLE bench.accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
    with server.connect("bench") as c, c.cursor() as cur:
        cur.execute("INSERT INTO accounts SELECT seq, 0 FROM seq_1_to_1000")
        cur.execute(f"INSERT INTO events (account, amount, note) SELECT seq % 1000 + 1, seq % 9973, "
                    f"concat('preloaded row ', seq) FROM seq_1_to_{rows}")


def write_load(server: PrivateMariaDB, seconds: float, done: list[int], client: int) -> None:
    """Commit transactions for `seconds`: 4 inserted rows and one updated account each."""
    rnd = random.Random(19 + client)
    with server.connect("bench") as c, c.cursor() as cur:
        cur.execute("SET autocommit = 0")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            account = rnd.randint(1, 1000)
            amounts = [rnd.randint(1, 10_000) for _ in range(4)]
            cur.execute("INSERT INTO events (account, amount, note) VALUES " + ", ".join(["(%s, %s, %s)"] * 4),
                        [v for a in amounts for v in (account, a, f"load {account}")])
            cur.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (sum(amounts), account))
            c.commit()
            done[client] += 1


def count_events(path: Path, start: int) -> int:
    """Events of a binlog file from `start` on (header walk)."""
    data = path.read_bytes()
    position, n = max(start, 4), 0
    while position + 19 <= len(data):
        length = int.from_bytes(data[position + 9:position + 13], "little")
        if length < 19:
            break
        position, n = position + length, n + 1
    return n


def number(name: str) -> int:
    return int(name.rsplit(".", 1)[1])


def stored_bytes(repo_path: Path, server: str) -> int:
    prefix = repo_path / binlog_key(server, "x.000001").rsplit("/", 1)[0]
    return sum(p.stat().st_size for p in prefix.rglob("*") if p.is_file()) if prefix.exists() else 0


def covered(repo: Repository, server: str, file: str, position: int) -> bool:
    """Whether the repository holds `file` up to `position` (finished, or a partial that long)."""
    for name, key in binlog_sources(repo, server):
        if name == file.lower():
            tail = key.rsplit(".partial.", 1)
            return len(tail) == 1 or int(tail[1]) >= position
    return False


def timed(step: Callable[[], None]) -> float:
    began = time.perf_counter()
    step()
    return time.perf_counter() - began


def run(cmd: list[str], **kwargs: object) -> None:
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    out = subprocess.run(cmd, stderr=subprocess.PIPE, check=False, **kwargs)  # type: ignore[call-overload]
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {out.stderr.decode(errors='replace')[-500:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--push-interval", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4, help="Writer connections during the load.")
    parser.add_argument("--replay-seconds", type=float, default=15.0,
                        help="Restore to this many seconds into the load (a single session replays it).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vaultflow-bench-mypitr-"))
    try:
        with private_mariadb("--log-bin=binlog", "--server-id=41", "--binlog-format=ROW",
                             "--innodb-buffer-pool-size=256M", "--max-binlog-size=16M") as server:
            bench(server, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(server: PrivateMariaDB, work: Path, args: argparse.Namespace) -> None:
    url = server.url("bench")
    source = engine_from_url(url)
    assert isinstance(source, MySQLEngine)
    Repository.init(LocalStore(work / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(work / "repo"), PASSPHRASE)
    began = time.perf_counter()
    load_rows(server, args.rows)
    print(f"loaded {args.rows} rows in {time.perf_counter() - began:.1f} s")
    snapshot = backup_database(source, repo, snapshot_id=new_object_id())
    dump = work / "dump.sql"
    with source.option_file() as options, open(dump, "wb") as out:
        run([*source.tool_argv("mariadb-dump", options), "--single-transaction", "--master-data=2", "--routines",
             "--triggers", "--events", "--hex-blob", "bench"], stdout=out)
    found = _MASTER.search(dump.read_bytes()[:100_000])
    assert found, "the dump holds no binlog position"
    hand_file, hand_position = found.group(1).decode(), int(found.group(2))
    print(f"snapshot {snapshot.short_id} at {snapshot.binlog.file}:{snapshot.binlog.position}, "  # type: ignore[union-attr]
          f"hand dump at {hand_file}:{hand_position} ({dump.stat().st_size / 2**20:.1f} MiB)")

    # (a) intake under load
    stop, health = threading.Event(), []
    stream = BinlogStream(source, repo, work / "spool", push_interval=args.push_interval, poll_every=0.25,
                          report=lambda h: health.append(h) if isinstance(h, IntakeHealth) else None)
    streamer = threading.Thread(target=stream.run, args=(stop,))
    streamer.start()
    caught_up = server.master_status()
    while not covered(repo, snapshot.server, *caught_up):  # the preload's binlog first
        if os.environ.get("BENCH_DEBUG"):
            print("waiting", caught_up, binlog_sources(repo, snapshot.server), health[-1:], flush=True)
        time.sleep(0.2)
    stored_before = stored_bytes(work / "repo", snapshot.server)
    start_file, start_position = server.master_status()
    done = [0] * args.clients  # transactions per client
    load_began, load_start = time.perf_counter(), datetime.now(UTC)
    writers = [threading.Thread(target=write_load, args=(server, args.seconds, done, n)) for n in range(args.clients)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    load_s = time.perf_counter() - load_began
    load_ended = time.perf_counter()
    end_file, end_position = server.master_status()
    sizes = {p.name: p.stat().st_size for p in server.data.glob("binlog.[0-9]*")
             if number(p.name) >= number(start_file)}
    base = {n: (start_position if n == start_file else 4) for n in sizes}
    held = {n: (int(k.rsplit(".partial.", 1)[1]) if ".partial." in k else sizes[n])
            for n, k in binlog_sources(repo, snapshot.server) if n in sizes}
    behind = sum(sizes[n] - max(held.get(n, base[n]), base[n]) for n in sizes)
    while not covered(repo, snapshot.server, end_file, end_position):
        time.sleep(0.1)
    lag = time.perf_counter() - load_ended
    written = sum(sizes[n] - base[n] for n in sizes)
    events = sum(count_events(server.data / n, base[n]) for n in sizes)
    stop.set()
    streamer.join()
    stored = stored_bytes(work / "repo", snapshot.server) - stored_before
    print(f"(a) intake: {sum(done)} transactions in {load_s:.1f} s = {sum(done) / load_s:.0f} tx/s, "
          f"{events / load_s:.0f} binlog events/s; binlog written {written / load_s / 2**20:.2f} MiB/s, stored "
          f"{stored / load_s / 2**20:.2f} MiB/s (compressed, encrypted, partials included); at the end "
          f"{behind / 2**20:.2f} MiB behind, all of it stored {lag:.1f} s after the last commit; "
          f"{stream.archived} finished files, {stream.restarts} restarts")

    # (b) restore to a moment, vaultflow against by hand
    moment = (load_start + timedelta(seconds=min(args.replay_seconds, args.seconds - 2))).replace(microsecond=0)
    files = sorted((str(p) for p in server.data.glob("binlog.[0-9]*") if number(p.name) >= number(hand_file)),
                   key=lambda p: number(p))
    env = {**os.environ, "VAULTFLOW_PASSPHRASE": PASSPHRASE, "VAULTFLOW_HOME": str(work / "home")}

    def with_vaultflow() -> None:
        run([sys.executable, "-m", "vaultflow.cli.main", "pitr", "restore", url, "--to-time", moment.isoformat(),
             "--into", server.url("vf_copy"), "--repo", str(work / "repo")], env=env, cwd=ROOT)

    def by_hand() -> None:
        with source.option_file() as options:
            client = [*source.tool_argv("mariadb", options), "--binary-mode", "--max-allowed-packet=1G"]
            run([*client, "-e", "CREATE DATABASE hand_copy"])
            with open(dump, "rb") as f:
                run([*client, "hand_copy"], stdin=f)
            decode = subprocess.Popen(["mariadb-binlog", f"--start-position={hand_position}",
                                       f"--stop-datetime={moment:%Y-%m-%d %H:%M:%S}", "--database=bench",
                                       "--rewrite-db=bench->hand_copy", *files], stdout=subprocess.PIPE,
                                      env={**os.environ, "TZ": "UTC"})
            run([*client, "hand_copy"], stdin=decode.stdout)
            assert decode.wait() == 0

    vf_times, hand_times = [], []
    for n in range(args.runs):
        server.execute("DROP DATABASE IF EXISTS vf_copy", "DROP DATABASE IF EXISTS hand_copy")
        if n % 2:  # alternate which side goes first
            hand_times.append(timed(by_hand))
            vf_times.append(timed(with_vaultflow))
        else:
            vf_times.append(timed(with_vaultflow))
            hand_times.append(timed(by_hand))
        print(f"run {n + 1}: vaultflow pitr restore {vf_times[-1]:.1f} s, by hand {hand_times[-1]:.1f} s")
    with server.connect() as c, c.cursor() as cur:
        sums = []
        for db in ("vf_copy", "hand_copy"):
            cur.execute(f"CHECKSUM TABLE {db}.events, {db}.accounts")
            sums.append([int(r[1]) for r in cur.fetchall()])
            cur.execute(f"SELECT count(*) FROM {db}.events")
            sums[-1].append(int(cur.fetchone()[0]))
    assert sums[0] == sums[1], f"the copies differ: {sums}"
    vf, hand = min(vf_times), min(hand_times)
    print(f"(b) restore to {moment.isoformat()}: {sums[0][2]} rows in both copies, equal checksums; vaultflow "
          f"{vf:.1f} s, by hand {hand:.1f} s (min of {args.runs}), ratio {vf / hand:.2f}; of the medians "
          f"{statistics.median(vf_times) / statistics.median(hand_times):.2f} (target <= 1.15)")


if __name__ == "__main__":
    main()
