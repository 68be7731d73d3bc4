"""`vaultflow pitr window` for MySQL/MariaDB: from when to when a database can be restored to any
moment, read from the repository alone (snapshots with a binlog position, archived binlogs).

A snapshot reaches from its finish to the last event of the archived binlog files that follow
its recorded file without a gap; a missing file number (purged before binlog-stream copied it,
or lost) ends the reach of every snapshot before it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from vaultflow.engines.mysql.binlog import MAX_BINLOG_SIZE, binlog_file_number, binlog_sources
from vaultflow.engines.mysql.binlog_replay import binlog_events
from vaultflow.errors import ToolFailed
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import Repository


@dataclass(frozen=True)
class SnapshotReach:
    """One snapshot with a binlog position and the last archived file its replay can reach."""

    snapshot: SnapshotManifest
    reaches_file: str | None  # None: its own start file is not archived
    reaches_to: datetime | None  # the last event of reaches_file (None when not decoded)


@dataclass(frozen=True)
class BinlogWindow:
    server: str
    database: str
    files: tuple[str, ...]
    missing: tuple[int, ...]
    reach: tuple[SnapshotReach, ...]  # oldest snapshot first

    @property
    def recoverable(self) -> tuple[datetime, datetime] | None:
        """From the oldest snapshot that reaches anything to the latest moment any reaches."""
        spans = [(r.snapshot.finished_at, r.reaches_to) for r in self.reach if r.reaches_to is not None]
        if not spans:
            return None
        return min(a for a, _ in spans), max(b for _, b in spans if b is not None)

    def as_dict(self) -> dict[str, Any]:
        window = self.recoverable
        return {
            "server": self.server, "database": self.database, "files": list(self.files),
            "missing_file_numbers": list(self.missing),
            "recoverable_from": window[0].isoformat() if window else None,
            "recoverable_to": window[1].isoformat() if window else None,
            "snapshots": [{"snapshot": r.snapshot.id, "finished_at": r.snapshot.finished_at.isoformat(),
                           "binlog_file": r.snapshot.binlog.file if r.snapshot.binlog else None,
                           "reaches_file": r.reaches_file,
                           "reaches_to": r.reaches_to.isoformat() if r.reaches_to else None} for r in self.reach],
        }


def binlog_window(repo: Repository, server: str, database: str, mariadb_binlog: str) -> BinlogWindow:
    """The window of `database` on `server`; `mariadb_binlog` decodes the last event times."""
    keys = dict(binlog_sources(repo, server))
    files = list(keys)
    numbers = [binlog_file_number(n) for n in files]
    missing = tuple(sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))) if numbers else ()
    snapshots = sorted((m for m in repo.manifests() if m.engine == "mysql" and m.server == server
                        and m.database == database and m.binlog is not None), key=lambda m: m.finished_at)
    last_times: dict[str, datetime | None] = {}
    reach = []
    for m in snapshots:
        assert m.binlog is not None
        start = m.binlog.file.lower()
        if start not in files:
            reach.append(SnapshotReach(m, None, None))
            continue
        end = binlog_file_number(start)
        while end + 1 in numbers:
            end += 1
        last = files[numbers.index(end)]
        if last not in last_times:
            last_times[last] = _last_event(repo, keys[last], last, mariadb_binlog)
        reach.append(SnapshotReach(m, last, last_times[last]))
    return BinlogWindow(server, database, tuple(files), missing, tuple(reach))


def _last_event(repo: Repository, key: str, name: str, tool: str) -> datetime | None:
    data = repo.sealer.open(repo.store.get(key), b"binlog:" + key.encode(), max_size=MAX_BINLOG_SIZE)
    with tempfile.TemporaryDirectory(prefix="vaultflow-binlog-") as scratch:
        path = Path(scratch) / name
        path.write_bytes(data)
        out = subprocess.run([tool, str(path)], capture_output=True, timeout=600, check=False,
                             env={**os.environ, "TZ": "UTC"})
    if out.returncode != 0:
        line = (out.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
        raise ToolFailed(f"mariadb-binlog could not read archived binlog {name}: {line[:300]}",
                         "check the file with vaultflow verify")
    events = binlog_events(out.stdout)
    return events[-1][0] if events else None
