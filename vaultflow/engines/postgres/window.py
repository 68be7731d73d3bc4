"""The recoverable window of a cluster: from its base backups and the WAL archived beside them.

A base backup can be recovered to any moment from its stop to the end of the WAL that follows it
without a hole: its own tar holds the segments from its start to its stop (`-X fetch`), and the
archive must hold every segment after that, one by one, on its timeline, then on the child
timelines that branched off after the backup's stop (from the `.history` files), as
`recovery_target_timeline = 'latest'` follows them.

Times: a base backup's stop is the server's clock (the backup history file). The end of the WAL
is the *archive time* of the last segment (the object's modification time in the store): the last
commit in that segment is earlier, and PostgreSQL fails a recovery whose target lies after the
last commit it finds ("recovery ended before configured recovery target was reached"). The
segment's end LSN is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vaultflow.engines.postgres.basebackup import format_lsn, parse_lsn, segment_file_name
from vaultflow.engines.postgres.wal import WAL_PREFIX, WalName, WalNotArchived, read_archived
from vaultflow.errors import IntegrityError
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import Repository

DEFAULT_SEGMENT_SIZE = 16 << 20


@dataclass
class ArchivedWal:
    """One cluster's archive: segment number -> archive time (None: the store does not say), per
    timeline, and each child timeline's (parent timeline, switch LSN) from its history file."""

    segments: dict[int, dict[int, datetime | None]] = field(default_factory=dict)
    branches: dict[int, tuple[int, int]] = field(default_factory=dict)


def file_name_of_key(last_part: str) -> str:
    """PostgreSQL's file name of an object key's last part (keys are lowercase, names upper hex)."""
    parts = last_part.split(".")
    hex_parts = 2 if len(parts) == 3 else 1  # <segment>.<offset>.backup has two hex parts
    return ".".join([p.upper() for p in parts[:hex_parts]] + parts[hex_parts:])


def list_archived(repo: Repository, system_identifier: int, segment_size: int) -> ArchivedWal:
    """One listing of `wal/<sysid>/`, plus each history file (a few bytes) read and checked."""
    archived = ArchivedWal()
    prefix = f"{WAL_PREFIX}{system_identifier}/"
    histories: list[str] = []
    for info in repo.store.list(prefix):
        rest = info.key[len(prefix):]
        directory, _, file_name = rest.partition("/")
        try:
            name = WalName.parse(file_name_of_key(file_name))
        except Exception:  # noqa: BLE001 - a foreign object under wal/ is not WAL: leave it out
            continue
        if name.kind == "history" and directory == "history":
            histories.append(name.name)
        elif name.kind == "segment":
            log, seg = name.segment_number
            archived.segments.setdefault(name.timeline, {})[log * (0x1_0000_0000 // segment_size) + seg] = info.modified
    for history in histories:
        timeline = WalName.parse(history).timeline
        try:
            text = read_archived(repo, system_identifier, history).decode("utf-8", "replace")
        except (WalNotArchived, IntegrityError):
            continue
        lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if lines and len(lines[-1]) >= 2:
            try:
                archived.branches[timeline] = (int(lines[-1][0]), parse_lsn(lines[-1][1]))
            except ValueError:
                continue
    return archived


@dataclass(frozen=True)
class Coverage:
    """How far one base backup recovers: from its stop to the end of the unbroken WAL after it."""

    snapshot: str
    from_time: datetime
    from_lsn: int
    to_time: datetime
    to_lsn: int
    timeline: int
    last_segment: str

    def as_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "from_time": self.from_time.isoformat(),
                "from_lsn": format_lsn(self.from_lsn), "to_time": self.to_time.isoformat(),
                "to_lsn": format_lsn(self.to_lsn), "timeline": self.timeline, "last_segment": self.last_segment}


@dataclass(frozen=True)
class Gap:
    """Segments missing on a timeline between the first one a base backup needs and the newest."""

    timeline: int
    first: str
    last: str
    missing: int
    after: datetime | None  # archive time of the segment before the gap: recovery cannot pass it

    def as_dict(self) -> dict[str, Any]:
        return {"timeline": self.timeline, "first": self.first, "last": self.last, "missing": self.missing,
                "after": self.after.isoformat() if self.after else None}

    def describe(self) -> str:
        span = self.first if self.first == self.last else f"{self.first}..{self.last}"
        when = f" (WAL after {self.after:%Y-%m-%d %H:%M:%S%z})" if self.after else ""
        return f"timeline {self.timeline}: {self.missing} segment(s) missing, {span}{when}"


@dataclass(frozen=True)
class ClusterWindow:
    """Base backups, what each recovers to, the gaps, and the newest archived segment of one cluster."""

    system_identifier: int
    servers: tuple[str, ...]
    base_backups: tuple[SnapshotManifest, ...]  # oldest stop first
    coverage: tuple[Coverage, ...]  # the same order
    gaps: tuple[Gap, ...]
    newest_segment: str | None
    newest_time: datetime | None

    def range_text(self) -> str:
        """`<from> .. <to>` for each base backup's reach, merged where they touch."""
        spans: list[list[datetime]] = []
        for c in sorted(self.coverage, key=lambda c: c.from_time):
            if spans and c.from_time <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], c.to_time)
            else:
                spans.append([c.from_time, c.to_time])
        return ", ".join(f"{a.isoformat(sep=' ', timespec='seconds')} .. {b.isoformat(sep=' ', timespec='seconds')}"
                         for a, b in spans) or "empty (no base backup)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "system_identifier": str(self.system_identifier), "servers": list(self.servers),
            "window": self.range_text(),
            "base_backups": [{"snapshot": m.id, "server": m.server, **_backup_dict(m)} for m in self.base_backups],
            "coverage": [c.as_dict() for c in self.coverage], "gaps": [g.as_dict() for g in self.gaps],
            "newest_segment": self.newest_segment,
            "newest_time": self.newest_time.isoformat() if self.newest_time else None,
        }


def _backup_dict(m: SnapshotManifest) -> dict[str, Any]:
    b = m.base_backup
    assert b is not None
    return {"timeline": b.timeline, "start_lsn": b.start_lsn, "stop_lsn": b.stop_lsn,
            "start_time": b.start_time.isoformat(), "stop_time": b.stop_time.isoformat()}


def cluster_window(repo: Repository, system_identifier: int, manifests: list[SnapshotManifest]) -> ClusterWindow:
    """The window of one cluster from its base backup manifests (others are ignored) and its archive."""
    bases = sorted((m for m in manifests if m.base_backup is not None
                    and m.base_backup.system_identifier == system_identifier),
                   key=lambda m: (m.base_backup.stop_time, m.id))  # type: ignore[union-attr]
    size = bases[0].base_backup.wal_segment_size if bases else DEFAULT_SEGMENT_SIZE  # type: ignore[union-attr]
    archived = list_archived(repo, system_identifier, size)
    coverage = tuple(_coverage(m, archived, size) for m in bases)
    newest: tuple[int, int] | None = None
    for tli, segs in archived.segments.items():
        if segs:
            top = (tli, max(segs))
            newest = max(newest, top) if newest else top
    return ClusterWindow(
        system_identifier, tuple(sorted({m.server for m in bases})), tuple(bases), coverage,
        tuple(_gaps(bases, archived, size)),
        segment_file_name(newest[0], newest[1], size) if newest else None,
        archived.segments[newest[0]][newest[1]] if newest else None)


def _coverage(m: SnapshotManifest, archived: ArchivedWal, size: int) -> Coverage:
    b = m.base_backup
    assert b is not None
    start, stop = parse_lsn(b.start_lsn), parse_lsn(b.stop_lsn)
    timeline, segno = b.timeline, start // size
    segs = archived.segments.get(timeline, {})
    last = segno
    while segno <= stop // size or segno in segs:  # the tar holds start..stop itself
        last, segno = segno, segno + 1
    end_lsn = (last + 1) * size
    while True:  # follow the newest child timeline that branched after the backup, while WAL reaches it
        children = [c for c, (parent, switch) in archived.branches.items()
                    if parent == timeline and stop <= switch <= end_lsn]
        if not children:
            break
        child = max(children)
        switch = archived.branches[child][1]
        timeline, segno, segs = child, switch // size, archived.segments.get(child, {})
        last, end_lsn = segno, switch
        while segno in segs:
            last, segno = segno, segno + 1
            end_lsn = segno * size
    when = archived.segments.get(timeline, {}).get(last)
    return Coverage(m.id, b.stop_time, stop, max(when, b.stop_time) if when else b.stop_time, end_lsn, timeline,
                    segment_file_name(timeline, last, size))


def _gaps(bases: list[SnapshotManifest], archived: ArchivedWal, size: int) -> list[Gap]:
    first_needed: dict[int, int] = {}
    in_tars: set[tuple[int, int]] = set()
    for m in bases:
        b = m.base_backup
        assert b is not None
        start, stop = parse_lsn(b.start_lsn) // size, parse_lsn(b.stop_lsn) // size
        first_needed[b.timeline] = min(first_needed.get(b.timeline, start), start)
        in_tars.update((b.timeline, s) for s in range(start, stop + 1))
    for child, (_parent, switch) in archived.branches.items():
        first_needed[child] = min(first_needed.get(child, switch // size), switch // size)
    gaps = []
    for tli, first in sorted(first_needed.items()):
        segs = archived.segments.get(tli, {})
        if not segs:
            continue
        run: list[int] = []
        for segno in range(first, max(segs) + 1):
            if segno not in segs and (tli, segno) not in in_tars:
                run.append(segno)
                continue
            if run:
                gaps.append(Gap(tli, segment_file_name(tli, run[0], size), segment_file_name(tli, run[-1], size),
                                len(run), segs.get(run[0] - 1)))
                run = []
    return gaps


def system_identifiers(repo: Repository, manifests: list[SnapshotManifest]) -> list[int]:
    """Every cluster the repository knows: from base backups and from `wal/<sysid>/`."""
    found = {m.base_backup.system_identifier for m in manifests if m.base_backup is not None}
    for info in repo.store.list(WAL_PREFIX):
        head = info.key[len(WAL_PREFIX):].split("/", 1)[0]
        if head.isdigit():
            found.add(int(head))
    return sorted(found)


@dataclass(frozen=True)
class ArchiveLag:
    """How current one cluster's WAL archive is: its newest archived segment, how long before `now` it
    arrived (`lag_seconds`; None when nothing is archived or the store gives no times), and its gaps.
    `lagging` when that is longer than the limit (the RPO), or nothing is archived at all."""

    system_identifier: int
    server: str  # the newest base backup's server, else "cluster-<sysid>"
    newest_segment: str | None
    newest_time: datetime | None
    lag_seconds: float | None
    limit_seconds: float
    gaps: tuple[Gap, ...]

    @property
    def lagging(self) -> bool:
        if self.newest_segment is None:
            return True
        return self.lag_seconds is not None and self.lag_seconds > self.limit_seconds

    def detail(self) -> str:
        """One line: what is late or missing, for an alert."""
        parts = []
        if self.newest_segment is None:
            parts.append("nothing archived")
        elif self.lag_seconds is not None:
            parts.append(f"newest archived segment {self.newest_segment} is {self.lag_seconds / 60:.1f} min old "
                         f"(limit {self.limit_seconds / 60:g} min)")
        parts += [f"GAP {g.describe()}" for g in self.gaps]
        return f"cluster {self.system_identifier} on {self.server}: " + "; ".join(parts or ["ok"])

    def as_dict(self) -> dict[str, Any]:
        return {"system_identifier": str(self.system_identifier), "server": self.server,
                "newest_segment": self.newest_segment,
                "newest_time": self.newest_time.isoformat() if self.newest_time else None,
                "lag_seconds": round(self.lag_seconds, 1) if self.lag_seconds is not None else None,
                "limit_seconds": self.limit_seconds, "lagging": self.lagging,
                "gaps": [g.describe() for g in self.gaps], "detail": self.detail()}


def archive_lags(windows: list[ClusterWindow], limit: timedelta, now: datetime) -> list[ArchiveLag]:
    """The archive lag and gaps of each cluster window. An idle server archives nothing until its
    segment fills, so its lag grows without a fault: `archive_timeout` below the limit bounds it."""
    out = []
    for w in windows:
        server = w.base_backups[-1].server if w.base_backups else f"cluster-{w.system_identifier}"
        lag = (now - w.newest_time).total_seconds() if w.newest_time is not None else None
        out.append(ArchiveLag(w.system_identifier, server, w.newest_segment, w.newest_time,
                              max(lag, 0.0) if lag is not None else None, limit.total_seconds(), w.gaps))
    return out
