"""Restore a MySQL/MariaDB database to a moment, a binlog position or a GTID: the newest snapshot
before it, then the archived binlogs replayed from the snapshot's recorded position up to it.

The binlog files come from the repository (`binlog-stream`), are decoded by `mariadb-binlog`
(with TZ=UTC, so `--stop-datetime` and the event times are UTC) filtered to the one
database (`--rewrite-db` when the target has another name), and applied through one
`mariadb` session, so temporary tables that span files survive. Binlog event times have one
second of resolution: events in the same second as the target are not applied. Nothing is
replayed past the last archived event; a target after it, or one before the oldest usable
snapshot, or a file missing between them, is refused before the target is touched.

A position `FILE:POS` must be where no transaction is open (the start of a transaction, as
`SHOW MASTER STATUS` or a `# at` line before a GTID event gives it): the replay applies every
transaction that ends at or before it. A GTID `D-S-N` is found in the archived files and
becomes the position right after its transaction, so the copy holds every transaction logged
before it in every domain (mariadb-binlog's own GTID `--stop-position` prints only the listed
domains' events, which would drop the others).

The replayed transactions are new writes on the target server: the GTID sequence numbers
mariadb-binlog sets (`SET @@session.gtid_seq_no`) are left out, so the server numbers them
itself. Replaying the source's numbers into a server that already logged later ones fails
under gtid_strict_mode (ERROR 1950) and, without it, logs duplicate GTIDs replicas trip over.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vaultflow.engines.mysql.binlog import MAX_BINLOG_SIZE, binlog_file_number, binlog_sources, is_partial_key
from vaultflow.engines.mysql.binlog_events import FileEvents, Gtid, gtid_positions, read_events
from vaultflow.engines.mysql.engine import MySQLEngine
from vaultflow.engines.process import ToolProcess
from vaultflow.errors import InputError, ToolFailed, VaultflowError
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import Repository

_log = logging.getLogger("vaultflow.mysql")
_EVENT = re.compile(rb"^#(\d{6} [ \d]\d:\d\d:\d\d) server id \d+\s+end_log_pos (\d+)", re.MULTILINE)
_POSITION = re.compile(r"^(?P<file>[A-Za-z0-9_.-]+\.\d{6,}):(?P<position>\d{1,20})$")


@dataclass(frozen=True)
class ReplayResult:
    """What a restore to a moment did: the snapshot it started from, the binlog files read,
    and the last event applied (its time, end position and the last GTID), None when none was needed."""

    snapshot: SnapshotManifest
    files: list[str]
    last_event_at: datetime | None
    last_event_position: str | None
    last_gtid: str | None = None


@dataclass(frozen=True)
class PositionPlan:
    """A replay from `snapshot` up to `position` of `file` (exclusive: events from there are not
    applied); `gtid` when the position was found for one."""

    snapshot: SnapshotManifest
    file: str
    position: int
    gtid: Gtid | None = None

    def describe(self) -> str:
        where = f"{self.file}:{self.position}"
        return f"GTID {self.gtid} (up to {where})" if self.gtid else f"position {where}"


@dataclass
class ArchivedBinlogs:
    """The archived binlog files of one server, decrypted into a private scratch directory on
    first use (one file at a time, kept until the context ends)."""

    repo: Repository
    server: str
    scratch: Path
    keys: dict[str, str] = field(default_factory=dict)
    _events: dict[str, FileEvents] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.keys)

    def is_partial(self, name: str) -> bool:
        return is_partial_key(self.keys[name])

    def path(self, name: str) -> Path:
        path = self.scratch / name
        if not path.exists():
            key = self.keys[name]
            path.write_bytes(self.repo.sealer.open(self.repo.store.get(key), b"binlog:" + key.encode(),
                                                   max_size=MAX_BINLOG_SIZE))
        return path

    def events(self, name: str) -> FileEvents:
        if name not in self._events:
            self._events[name] = read_events(self.path(name).read_bytes())
        return self._events[name]

    def files_from(self, snapshot: SnapshotManifest) -> Iterator[str]:
        """The archived files from the snapshot's on, in order, while they follow without a gap:
        InputError when the caller asks past a missing file (a replay that stops before it does not)."""
        assert snapshot.binlog is not None
        start = snapshot.binlog.file.lower()
        if start not in self.keys:
            raise InputError(f"binlog file {snapshot.binlog.file} of {snapshot.server}, where snapshot "
                             f"{snapshot.short_id} starts, is not archived",
                             "run vaultflow binlog-stream for the server")
        previous = None
        for name in self.names[self.names.index(start):]:
            if previous is not None and binlog_file_number(name) != binlog_file_number(previous) + 1:
                missing = range(binlog_file_number(previous) + 1, binlog_file_number(name))
                listed = ", ".join(map(str, missing)) if len(missing) <= 5 else f"{missing[0]} to {missing[-1]}"
                raise InputError(f"binlog files {listed} of {snapshot.server} are "
                                 "missing from the repository: no replay can cross them",
                                 "restore to a moment before the gap, or from a snapshot after it")
            yield name
            previous = name

    def files_to(self, snapshot: SnapshotManifest, last: str) -> list[str]:
        """The archived files from the snapshot's to `last`, which must follow without a gap."""
        files = []
        for name in self.files_from(snapshot):
            files.append(name)
            if name == last:
                return files
        raise InputError(f"binlog file {last} of {snapshot.server} is not archived", "run vaultflow binlog-stream")


@contextmanager
def archived_binlogs(repo: Repository, server: str) -> Iterator[ArchivedBinlogs]:
    with tempfile.TemporaryDirectory(prefix="vaultflow-binlog-") as scratch:
        yield ArchivedBinlogs(repo, server, Path(scratch), dict(binlog_sources(repo, server)))


def usable_snapshots(repo: Repository, server: str, database: str) -> list[SnapshotManifest]:
    """The snapshots of `database` on `server` that record a binlog position, oldest first;
    InputError when there is none."""
    usable = sorted((m for m in repo.manifests() if m.engine == "mysql" and m.server == server
                     and m.database == database and m.binlog is not None), key=lambda m: m.finished_at)
    if not usable:
        raise InputError(f"no snapshot of {database} on {server} records a binlog position",
                         "turn on log_bin and back the database up (vaultflow pitr check)")
    return usable


def pick_snapshot(repo: Repository, server: str, database: str, to_time: datetime) -> SnapshotManifest:
    """The newest snapshot of `database` on `server` with a binlog position that finished at
    or before `to_time`; InputError naming the oldest usable one otherwise."""
    usable = usable_snapshots(repo, server, database)
    before = [m for m in usable if m.finished_at <= to_time]
    if not before:
        raise InputError(f"{to_time.isoformat()} is before the oldest snapshot of {database} that can start a "
                         f"replay (finished {usable[0].finished_at.isoformat()})", "pick a later moment")
    return before[-1]


def parse_binlog_position(text: str) -> tuple[str, int]:
    """`FILE:POS` (binlog.000012:4711) as (file name in lower case, position); InputError otherwise."""
    found = _POSITION.match(text.strip())
    if not found or int(found.group("position")) < 4:
        raise InputError(f"{text!r} is not a binlog position", "write it as FILE:POS, e.g. binlog.000012:4711 "
                                                               "(SHOW MASTER STATUS shows the current one)")
    return found.group("file").lower(), int(found.group("position"))


def _coordinates(snapshot: SnapshotManifest) -> tuple[int, int]:
    assert snapshot.binlog is not None
    return binlog_file_number(snapshot.binlog.file), snapshot.binlog.position


def plan_to_position(archive: ArchivedBinlogs, database: str, file: str, position: int) -> PositionPlan:
    """The newest snapshot of `database` at or before `file:position`, checked against the archive:
    the file archived without a gap from the snapshot's, the position within it and outside every
    transaction. InputError (one line) otherwise; nothing is touched."""
    usable = usable_snapshots(archive.repo, archive.server, database)
    if file not in archive.keys:
        have = f"{archive.names[0]} .. {archive.names[-1]}" if archive.names else "none"
        raise InputError(f"binlog file {file} of {archive.server} is not archived (archived: {have})",
                         "give a position in an archived file (vaultflow pitr window)")
    wanted = (binlog_file_number(file), position)
    before = [m for m in usable if _coordinates(m) <= wanted]
    if not before:
        first = usable[0].binlog
        assert first is not None
        raise InputError(f"position {file}:{position} is before the oldest snapshot of {database} that can start a "
                         f"replay (at {first.file}:{first.position})", "give a later position")
    snapshot = before[-1]
    archive.files_to(snapshot, file)
    events = archive.events(file)
    if position > events.size:
        growing = " (the part of the growing file stored so far)" if archive.is_partial(file) else ""
        raise InputError(f"position {file}:{position} is after the last archived event of {archive.server} in that "
                         f"file, which ends at {events.size}{growing}",
                         "give an earlier position, or wait for binlog-stream to archive more")
    if position not in events.boundaries:
        start, end = events.around(position)
        raise InputError(f"position {file}:{position} is inside a transaction or event of {archive.server} "
                         f"(the nearest positions outside one are {start} and {end})",
                         f"give {file}:{start} or {file}:{end}")
    return PositionPlan(snapshot, file, position)


def plan_to_gtid(archive: ArchivedBinlogs, database: str, gtid: Gtid) -> PositionPlan:
    """The position right after transaction `gtid`, replayed from the newest snapshot that does
    not hold it yet. InputError (one line) for a GTID of a domain the server never logged, one the
    oldest snapshot already holds, one after the last archived transaction, or one not found."""
    usable = usable_snapshots(archive.repo, archive.server, database)
    held = [gtid_positions(m.binlog.gtid if m.binlog else None).get(gtid.domain) for m in usable]
    before = [m for m, h in zip(usable, held, strict=True) if h is None or h.sequence < gtid.sequence]
    domains = {d for m in usable for d in gtid_positions(m.binlog.gtid if m.binlog else None)}
    if not before:
        oldest = held[0]
        raise InputError(f"GTID {gtid} is before the oldest snapshot of {database} that can start a replay (it "
                         f"holds {oldest})", "give a later GTID")
    snapshot = before[-1]
    newest: Gtid | None = None
    for name in archive.files_from(snapshot):
        events = archive.events(name)
        for t in events.transactions:
            domains.add(t.gtid.domain)
            if t.gtid.domain == gtid.domain and (newest is None or t.gtid.sequence > newest.sequence):
                newest = t.gtid
            if t.gtid == gtid:
                if t.end is None:
                    raise InputError(f"GTID {gtid} is the last transaction archived from {archive.server}, and its "
                                     "end is not archived yet", "wait for binlog-stream to archive more")
                return PositionPlan(snapshot, name, t.end, gtid)
    if gtid.domain not in domains:
        raise InputError(f"GTID {gtid} is of domain {gtid.domain}, which the binlog of {archive.server} does not "
                         f"hold (domains {', '.join(map(str, sorted(domains))) or 'none'})",
                         "give a GTID of one of those domains (SELECT @@gtid_binlog_pos)")
    if newest is None or gtid.sequence > newest.sequence or (gtid.sequence == newest.sequence and gtid != newest):
        raise InputError(f"GTID {gtid} is after the last archived transaction of domain {gtid.domain} on "
                         f"{archive.server} ({newest or 'none'})",
                         "give an earlier GTID, or wait for binlog-stream to archive more")
    raise InputError(f"GTID {gtid} is not in the archived binlogs of {archive.server} after snapshot "
                     f"{snapshot.short_id} (the newest of domain {gtid.domain} is {newest})",
                     "check the server id and sequence number (mariadb-binlog lists the GTIDs)")


def restore_to_position(archive: ArchivedBinlogs, plan: PositionPlan, target: MySQLEngine,
                        restore: Callable[[], object]) -> ReplayResult:
    """Load the plan's snapshot into `target` (`restore`), then replay from its position up to the
    plan's (nothing at or after it)."""
    snapshot = plan.snapshot
    assert snapshot.binlog is not None
    files = archive.files_to(snapshot, plan.file)
    paths = [archive.path(n) for n in files]
    tap = _restore_and_replay(target, restore, paths, [f"--start-position={snapshot.binlog.position}",
                                                       f"--stop-position={plan.position}",
                                                       *_database_options(snapshot, target)])
    return tap.result(snapshot, files)


def restore_to_time(repo: Repository, snapshot: SnapshotManifest, target: MySQLEngine, to_time: datetime,
                    restore: Callable[[], object]) -> ReplayResult:
    """Check the replay can reach `to_time`, load `snapshot` into `target` (`restore`), then
    replay its server's archived binlogs up to `to_time`. `to_time` must carry its zone."""
    if to_time.tzinfo is None:
        raise InputError(f"the moment {to_time.isoformat()} has no time zone", "give it with an offset or Z")
    assert snapshot.binlog is not None
    cutoff = to_time.replace(microsecond=0)
    with archived_binlogs(repo, snapshot.server) as archive:
        files: list[str] = []
        last: datetime | None = None
        for name in archive.files_from(snapshot):  # up to the file with an event at or after the moment
            files.append(name)
            last = archive.events(name).last_event_at or last
            if last is not None and last >= cutoff:
                break
        else:
            until = last.isoformat() if last else "none"
            raise InputError(f"{to_time.isoformat()} is after the last archived binlog event of {snapshot.server} "
                             f"({until})", "pick an earlier moment, or wait for binlog-stream to archive more")
        paths = [archive.path(n) for n in files]
        stop = to_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        tap = _restore_and_replay(target, restore, paths, [f"--start-position={snapshot.binlog.position}",
                                                           f"--stop-datetime={stop}",
                                                           *_database_options(snapshot, target)])
    return tap.result(snapshot, files)


def _database_options(snapshot: SnapshotManifest, target: MySQLEngine) -> list[str]:
    # mariadb-binlog filters on the logged name, then rewrites it (MySQL's mysqlbinlog
    # rewrites first): filter on the source's name.
    options = [f"--database={snapshot.database}"]
    if target.database != snapshot.database:
        options.append(f"--rewrite-db={snapshot.database}->{target.database}")
    return options


def binlog_events(sql: bytes) -> list[tuple[datetime, str]]:
    """(time, end position) of every event header in mariadb-binlog's output (decoded with TZ=UTC)."""
    return [(datetime.strptime(m.group(1).decode().replace("  ", " 0"), "%y%m%d %H:%M:%S").replace(tzinfo=UTC),
             m.group(2).decode()) for m in _EVENT.finditer(sql)]


class ReplayFilter:
    """mariadb-binlog's SQL on its way to the client, cut after the last whole event block (`# at`
    line) of what came so far: the `SET @@session.gtid_seq_no` line of each GTID event is left out,
    and the last event header and GTID are noted (the last event applied)."""

    _SEQUENCE = b"/*M!100001 SET @@session.gtid_seq_no="
    _SEQUENCE_LINE = re.compile(rb"/\*M!100001 SET @@session\.gtid_seq_no=\d+\*//\*!\*/;")
    _GTID = re.compile(rb"\tGTID (\d+-\d+-\d+)")

    def __init__(self) -> None:
        self._carry = b""
        self.last_event: tuple[datetime, str] | None = None
        self.last_gtid: str | None = None

    def __call__(self, block: bytes) -> bytes:
        data = self._carry + block if self._carry else block
        cut = data.rfind(b"\n# at ")
        if cut < 0:
            self._carry = data
            return b""
        self._carry = data[cut + 1:]
        return self._pass(data[:cut + 1])

    def finish(self) -> bytes:
        data, self._carry = self._carry, b""
        return self._pass(data)

    def _pass(self, data: bytes) -> bytes:
        end = data.rfind(b" end_log_pos ")
        if end >= 0 and (found := _EVENT.match(data, data.rfind(b"\n", 0, end) + 1)):
            self.last_event = binlog_events(found.group(0))[0]
        gtid = data.rfind(b"\tGTID ")
        if gtid >= 0 and (named := self._GTID.match(data, gtid)):
            self.last_gtid = named.group(1).decode()
        parts, start = [], 0
        at = data.find(self._SEQUENCE)
        while at >= 0:
            line_end = data.find(b"\n", at)
            line_end = len(data) if line_end < 0 else line_end
            if data[at - 1:at] == b"\n" and self._SEQUENCE_LINE.fullmatch(data, at, line_end) and \
                    self._in_gtid_event(data, at):
                parts.append(data[start:at])
                start = line_end + 1
            at = data.find(self._SEQUENCE, line_end)
        parts.append(data[start:])
        return b"".join(parts)

    @staticmethod
    def _in_gtid_event(data: bytes, at: int) -> bool:
        """Whether the line at `at` follows a GTID event header, with only `/*...` lines between."""
        header = data.rfind(b"\n#", 0, at) + 1
        header_end = data.find(b"\n", header)
        return b"\tGTID " in data[header:header_end] and all(
            line.startswith(b"/*") for line in data[header_end + 1:at].split(b"\n")[:-1])

    def result(self, snapshot: SnapshotManifest, files: list[str]) -> ReplayResult:
        last = self.last_event
        return ReplayResult(snapshot, files, last[0] if last else None, last[1] if last else None, self.last_gtid)


def _restore_and_replay(target: MySQLEngine, restore: Callable[[], object], paths: list[Path],
                        options: list[str]) -> ReplayFilter:
    """`restore`, then the replay; a database the restore created is dropped again when the replay
    fails, so nothing partial is left."""
    existed = target.database_exists()
    restore()
    try:
        return _replay(target, paths, options)
    except BaseException:
        if not existed:
            try:
                target.drop_database()
            except VaultflowError as exc:
                _log.error("could not drop %s after the failed replay: %s", target.describe(), exc.line())
        raise


def _replay(target: MySQLEngine, paths: list[Path], options: list[str]) -> ReplayFilter:
    """mariadb-binlog (TZ=UTC) piped through a ReplayFilter into one client session in the target
    database; decoding and applying run at once."""
    decoder = target._tool("mariadb-binlog", "mysqlbinlog")
    client = target._tool("mariadb", "mysql")
    tap = ReplayFilter()
    with target.option_file() as login:
        argv = [*target.tool_argv(client, login), "--binary-mode", "--max-allowed-packet=1G", target.database]
        with (ToolProcess([decoder, *options, *map(str, paths)], stdout=subprocess.PIPE, env={"TZ": "UTC"}) as decode,
              ToolProcess(argv, stdin=subprocess.PIPE, timeout=None) as apply):
            try:
                for block in iter(lambda: decode.stdout.read(1 << 20), b""):
                    apply.stdin.write(tap(block))
                apply.stdin.write(tap.finish())
                apply.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                decode.kill()  # the client stopped early; its error follows
            applied, decoded = apply.wait(), decode.wait()
            if applied != 0:
                failure = target.tool_failure(os.path.basename(client), apply, None)
                raise type(failure)(f"replaying the binlog into {target.database!r}: {failure.what}", failure.fix)
            if decoded != 0:
                raise ToolFailed(f"mariadb-binlog could not read the archived binlogs: "
                                 f"{decode.last_error_line()[:300] or 'no message'}",
                                 "check the files with vaultflow verify")
    return tap
