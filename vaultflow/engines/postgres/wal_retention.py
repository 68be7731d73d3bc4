"""What prune may delete of a cluster's archived WAL, and the gaps `verify` reports (the `LogArchive`
hook of PostgreSQL, vaultflow/engines/log_archive.py).

Retention: WAL is kept back to the oldest base backup any policy keeps. With `cutoff` the lowest
start segment number (start LSN // segment size) of the cluster's kept base backups, a segment,
`.partial` or `.backup` file on any timeline whose segment number is below `cutoff` holds only WAL
from before every kept backup's start, so no recovery from them reads it: it goes. Kept are every
later file, the `.backup` history files the kept manifests name, and the `.history` files of every
timeline from the oldest kept backup's timeline on (PostgreSQL finds the latest timeline by probing
history files one number after the other, and a kept timeline's own history file lists all its
ancestors). A cluster with no kept base backup keeps its whole archive, and the prune report says so:
without a base backup nothing says which WAL matters, and the next base backup may need it.
"""

from __future__ import annotations

from datetime import datetime

from vaultflow.engines.log_archive import LogProblem, LogRetention
from vaultflow.engines.postgres.basebackup import parse_lsn
from vaultflow.engines.postgres.wal import WAL_PREFIX, WalName, WalNotArchived, read_archived, read_segment_header
from vaultflow.engines.postgres.window import cluster_window, file_name_of_key
from vaultflow.errors import InputError, IntegrityError
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import Repository


def _archived_by_cluster(repo: Repository) -> dict[int, list[tuple[str, int, WalName]]]:
    """One listing of `wal/`: every WAL object with its parsed name, by system identifier
    (objects whose names are not WAL are left out: prune never deletes what it does not know)."""
    found: dict[int, list[tuple[str, int, WalName]]] = {}
    for info in repo.store.list(WAL_PREFIX):
        head, _, rest = info.key[len(WAL_PREFIX):].partition("/")
        if not head.isdigit():
            continue
        try:
            name = WalName.parse(file_name_of_key(rest.rpartition("/")[2]))
        except InputError:
            continue
        found.setdefault(int(head), []).append((info.key, info.size, name))
    return found


def _segment_number(name: WalName, segment_size: int) -> int:
    log, seg = name.segment_number
    return log * (0x1_0000_0000 // segment_size) + seg


class WalArchive:
    """PostgreSQL's archived WAL as prune and verify see it."""

    def expendable(self, repo: Repository, kept: list[SnapshotManifest]) -> LogRetention:
        out = LogRetention()
        for sysid, objects in sorted(_archived_by_cluster(repo).items()):
            bases = [m.base_backup for m in kept if m.base_backup is not None
                     and m.base_backup.system_identifier == sysid]
            if not bases:
                out.notes.append(f"cluster {sysid}: no kept base backup, its {len(objects)} archived WAL object(s) "
                                 "are kept (a base backup makes the older ones prunable)")
                continue
            size = bases[0].wal_segment_size
            cutoff = min(parse_lsn(b.start_lsn) // size for b in bases)
            oldest_timeline = min(b.timeline for b in bases)
            named = {b.history_file for b in bases if b.history_file}
            for key, stored, name in objects:
                if name.kind == "history":
                    doomed = name.timeline < oldest_timeline
                else:
                    doomed = _segment_number(name, size) < cutoff and name.name not in named
                if doomed:
                    out.expendable[key] = stored
        return out

    def problems(self, repo: Repository, manifests: list[SnapshotManifest], *, deep: bool) -> list[LogProblem]:
        problems: list[LogProblem] = []
        archived = _archived_by_cluster(repo)
        for sysid in sorted(archived):
            window = cluster_window(repo, sysid, manifests)
            for gap in window.gaps:
                newest = f" to {_when(window.newest_time)}" if window.newest_time else ""
                cut = (f"no restore reaches past {_when(gap.after)}; moments from then{newest} are lost"
                       if gap.after else "no restore crosses it")
                problems.append(LogProblem("postgresql", f"cluster {sysid}", gap.first,
                                           f"cluster {sysid}: WAL gap, {gap.describe()}: {cut}"))
            if deep:
                problems.extend(_damaged(repo, sysid, archived[sysid]))
        return problems


def _damaged(repo: Repository, sysid: int, objects: list[tuple[str, int, WalName]]) -> list[LogProblem]:
    """Every archived WAL file of the cluster opened (authenticated, decompressed) and, for a
    segment, its page header checked against its name."""
    found = []
    for _key, _stored, name in objects:
        try:
            data = read_archived(repo, sysid, name.name)
            if name.kind == "segment":
                read_segment_header(data, name)
        except (IntegrityError, WalNotArchived, InputError) as exc:
            found.append(LogProblem("postgresql", f"cluster {sysid}", name.name,
                                    f"cluster {sysid}: archived WAL file {name.name} is damaged ({exc.what}); "
                                    "recovery stops before it"))
    return found


def _when(moment: datetime | None) -> str:
    return moment.isoformat(sep=" ", timespec="seconds") if moment else "?"


WAL_ARCHIVE = WalArchive()
