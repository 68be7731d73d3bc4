"""Restore a MySQL/MariaDB database to a moment: the newest snapshot that finished before it,
then the archived binlogs replayed from the snapshot's recorded position up to that moment.

The binlog files come from the repository (`binlog-stream`), are decoded by `mariadb-binlog`
(with TZ=UTC, so `--stop-datetime` and the event times are UTC) filtered to the one
database (`--rewrite-db` when the target has another name), and applied through one
`mariadb` session, so temporary tables that span files survive. Binlog event times have one
second of resolution: events in the same second as the target are not applied. Nothing is
replayed past the last archived event; a target after it, or one before the oldest usable
snapshot, or a file missing between them, is refused before the target is touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vaultflow.engines.mysql.binlog import MAX_BINLOG_SIZE, binlog_sources
from vaultflow.engines.mysql.engine import MySQLEngine
from vaultflow.engines.process import ToolProcess
from vaultflow.errors import InputError, ToolFailed
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import Repository

_EVENT = re.compile(rb"^#(\d{6} [ \d]\d:\d\d:\d\d) server id \d+\s+end_log_pos (\d+)", re.MULTILINE)


@dataclass(frozen=True)
class ReplayResult:
    """What a restore to a moment did: the snapshot it started from, the binlog files read,
    and the last event applied (its time and end position), None when none was needed."""

    snapshot: SnapshotManifest
    files: list[str]
    last_event_at: datetime | None
    last_event_position: str | None


def pick_snapshot(repo: Repository, server: str, database: str, to_time: datetime) -> SnapshotManifest:
    """The newest snapshot of `database` on `server` with a binlog position that finished at
    or before `to_time`; InputError naming the oldest usable one otherwise."""
    usable = sorted((m for m in repo.manifests() if m.engine == "mysql" and m.server == server
                     and m.database == database and m.binlog is not None), key=lambda m: m.finished_at)
    if not usable:
        raise InputError(f"no snapshot of {database} on {server} records a binlog position",
                         "turn on log_bin and back the database up (vaultflow pitr check)")
    before = [m for m in usable if m.finished_at <= to_time]
    if not before:
        raise InputError(f"{to_time.isoformat()} is before the oldest snapshot of {database} that can start a "
                         f"replay (finished {usable[0].finished_at.isoformat()})", "pick a later moment")
    return before[-1]


def restore_to_time(repo: Repository, snapshot: SnapshotManifest, target: MySQLEngine, to_time: datetime,
                    restore: Callable[[], object]) -> ReplayResult:
    """Check the replay can reach `to_time`, load `snapshot` into `target` (`restore`), then
    replay its server's archived binlogs up to `to_time`. `to_time` must carry its zone."""
    if to_time.tzinfo is None:
        raise InputError(f"the moment {to_time.isoformat()} has no time zone", "give it with an offset or Z")
    assert snapshot.binlog is not None
    files = _files_from(repo, snapshot)
    keys = dict(binlog_sources(repo, snapshot.server))
    with tempfile.TemporaryDirectory(prefix="vaultflow-binlog-") as scratch:
        paths = []
        for name in files:
            key = keys[name]
            path = Path(scratch) / name
            path.write_bytes(repo.sealer.open(repo.store.get(key), b"binlog:" + key.encode(), max_size=MAX_BINLOG_SIZE))
            paths.append(path)
        last = binlog_events(_decode(target, paths[-1:], []))[-1:]
        if not last or last[0][0] < to_time.replace(microsecond=0):
            until = last[0][0].isoformat() if last else "none"
            raise InputError(f"{to_time.isoformat()} is after the last archived binlog event of {snapshot.server} "
                             f"({until})", "pick an earlier moment, or wait for binlog-stream to archive more")
        stop = to_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        # mariadb-binlog filters on the logged name, then rewrites it (MySQL's mysqlbinlog
        # rewrites first): filter on the source's name.
        options = [f"--start-position={snapshot.binlog.position}", f"--stop-datetime={stop}",
                   f"--database={snapshot.database}"]
        if target.database != snapshot.database:
            options.append(f"--rewrite-db={snapshot.database}->{target.database}")
        sql = _decode(target, paths, options)
        restore()
        _apply(target, sql)
    applied = binlog_events(sql)
    return ReplayResult(snapshot, files, applied[-1][0] if applied else None,
                        applied[-1][1] if applied else None)


def _files_from(repo: Repository, snapshot: SnapshotManifest) -> list[str]:
    """The archived binlog files from the snapshot's onwards; InputError for one missing."""
    assert snapshot.binlog is not None
    archived = [name for name, _ in binlog_sources(repo, snapshot.server)]
    start = snapshot.binlog.file.lower()
    if start not in archived:
        raise InputError(f"binlog file {snapshot.binlog.file} of {snapshot.server}, where snapshot "
                         f"{snapshot.short_id} starts, is not archived", "run vaultflow binlog-stream for the server")
    files = archived[archived.index(start):]
    numbers = [int(n.rsplit(".", 1)[1]) for n in files]
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if missing:
        raise InputError(f"binlog files {', '.join(str(n) for n in missing)} of {snapshot.server} are missing from "
                         "the repository: no replay can cross them", "restore to a moment before the gap")
    return files


def _decode(engine: MySQLEngine, paths: list[Path], options: list[str]) -> bytes:
    """mariadb-binlog's SQL for `paths`, with event times in UTC."""
    tool = engine._tool("mariadb-binlog", "mysqlbinlog")
    out = subprocess.run([tool, *options, *map(str, paths)], capture_output=True, timeout=3600, check=False,
                         env={**os.environ, "TZ": "UTC"})
    if out.returncode != 0:
        line = (out.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
        raise ToolFailed(f"mariadb-binlog could not read the archived binlogs: {line[:300]}",
                         "check the files with vaultflow verify")
    return out.stdout


def binlog_events(sql: bytes) -> list[tuple[datetime, str]]:
    """(time, end position) of every event header in mariadb-binlog's output (decoded with TZ=UTC)."""
    return [(datetime.strptime(m.group(1).decode().replace("  ", " 0"), "%y%m%d %H:%M:%S").replace(tzinfo=UTC),
             m.group(2).decode()) for m in _EVENT.finditer(sql)]


def _apply(target: MySQLEngine, sql: bytes) -> None:
    """Run the replay through one client session in the target database."""
    tool = target._tool("mariadb", "mysql")
    with target.option_file() as options:
        argv = [*target.tool_argv(tool, options), "--binary-mode", "--max-allowed-packet=1G", target.database]
        with ToolProcess(argv, stdin=subprocess.PIPE, timeout=None) as proc:
            try:
                proc.stdin.write(sql)
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped early; its error follows
            if proc.wait() != 0:
                failure = target.tool_failure(os.path.basename(tool), proc, None)
                raise type(failure)(f"replaying the binlog into {target.database!r}: {failure.what}", failure.fix)
