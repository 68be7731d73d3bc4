"""What prune may delete of a server's archived binlogs, and the gaps `verify` reports (the
`LogArchive` hook of MySQL/MariaDB, vaultflow/engines/log_archive.py).

Retention keeps binlogs back to the oldest kept snapshot: per server directory `binlog/<server>/`,
the lowest file number among the binlog coordinates of the kept snapshots of that server is the
cutoff, and every archived file numbered below it goes (replay of a kept snapshot starts at its own
file). A server with archived binlogs but no kept snapshot with binlog coordinates keeps them all,
and the prune report says so. A gap is a missing file number after the start file of the oldest
snapshot with coordinates: replay cannot cross it, so it cuts off every moment after the file
before it (whose archive time, when the store gives one, is when the server rotated away from it).
"""

from __future__ import annotations

from datetime import datetime

from vaultflow.engines.log_archive import LogProblem, LogRetention
from vaultflow.engines.mysql.binlog import BINLOG_PREFIX, MAX_BINLOG_SIZE, binlog_key, is_partial_key
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import Repository

ArchivedFile = tuple[str, int, int, datetime | None, bool]  # key, stored size, file number, archive time, partial


def _number(name: str) -> int | None:
    """The file number of a binlog file name or of a partial's key name (`<file>.partial.<size>`)."""
    if is_partial_key(name):
        name = name.rsplit(".partial.", 1)[0]
    base, _, digits = name.rpartition(".")
    return int(digits) if base and digits.isdigit() else None


def _file_base(key: str) -> str:
    """`binlog` of `.../binlog.000007` and of `.../binlog.000007.partial.<size>`."""
    name = key.rpartition("/")[2]
    if is_partial_key(name):
        name = name.rsplit(".partial.", 1)[0]
    return name.rpartition(".")[0]


def _archived_by_server(repo: Repository) -> dict[str, list[ArchivedFile]]:
    """One listing of `binlog/`: each server directory's files, by number."""
    found: dict[str, list[ArchivedFile]] = {}
    for info in repo.store.list(BINLOG_PREFIX):
        directory, _, name = info.key[len(BINLOG_PREFIX):].partition("/")
        number = _number(name)
        if number is not None and "/" not in name:
            found.setdefault(directory, []).append((info.key, info.size, number, info.modified,
                                                    is_partial_key(name)))
    return {d: sorted(files, key=lambda f: f[2]) for d, files in found.items()}


def _directory(server: str) -> str:
    return binlog_key(server, "x.000001")[len(BINLOG_PREFIX):].rpartition("/")[0]


def _starts(manifests: list[SnapshotManifest]) -> dict[str, int]:
    """Server directory -> the lowest binlog file number any of `manifests` starts replay from."""
    starts: dict[str, int] = {}
    for m in manifests:
        number = _number(m.binlog.file) if m.engine == "mysql" and m.binlog is not None else None
        if m.binlog is not None and number is not None:
            directory = _directory(m.server)
            starts[directory] = min(starts.get(directory, number), number)
    return starts


class BinlogArchive:
    """MySQL/MariaDB's archived binlogs as prune and verify see them."""

    def expendable(self, repo: Repository, kept: list[SnapshotManifest]) -> LogRetention:
        out = LogRetention()
        starts = _starts(kept)
        for directory, files in sorted(_archived_by_server(repo).items()):
            if directory not in starts:
                out.notes.append(f"binlogs of {directory}: no kept snapshot with binlog coordinates, its "
                                 f"{len(files)} archived file(s) are kept")
                continue
            finished = {number for _key, _size, number, _when, partial in files if not partial}
            # A partial goes once its file is finished and stored, or with its file.
            out.expendable.update((key, size) for key, size, number, _when, partial in files
                                  if number < starts[directory] or (partial and number in finished))
        return out

    def problems(self, repo: Repository, manifests: list[SnapshotManifest], *, deep: bool) -> list[LogProblem]:
        problems: list[LogProblem] = []
        starts = _starts(manifests)
        for directory, files in sorted(_archived_by_server(repo).items()):
            numbers = {f[2]: f for f in files}
            base = _file_base(files[-1][0])
            start = starts.get(directory)
            if start is not None:
                missing = sorted(set(range(start, files[-1][2] + 1)) - set(numbers))
                for first in _run_starts(missing):
                    before = numbers.get(first - 1)
                    name = f"{base}.{first:06d}"
                    cut = (f"replay stops at the end of {base}.{first - 1:06d}"
                           + (f" (archived {before[3].isoformat(sep=' ', timespec='seconds')})"
                              if before and before[3] else "") + "; every later moment is lost")
                    problems.append(LogProblem("mysql", f"server {directory}", name,
                                               f"binlogs of {directory}: gap, {name} is missing: {cut}"))
            if deep:
                problems.extend(_damaged(repo, directory, files))
        return problems


def _run_starts(missing: list[int]) -> list[int]:
    return [n for n in missing if n - 1 not in missing]


def _damaged(repo: Repository, directory: str, files: list[ArchivedFile]) -> list[LogProblem]:
    found = []
    for key, *_rest in files:
        try:
            repo.sealer.open(repo.store.get(key), b"binlog:" + key.encode(), max_size=MAX_BINLOG_SIZE)
        except Exception as exc:  # noqa: BLE001 - SealError, a missing object or a bad frame: reported, not raised
            name = key.rpartition("/")[2]
            found.append(LogProblem("mysql", f"server {directory}", name,
                                    f"binlogs of {directory}: archived file {name} is damaged ({exc}); replay "
                                    "stops before it"))
    return found


BINLOG_ARCHIVE = BinlogArchive()
