"""Point-in-time recovery of PostgreSQL: base backups into the repository, the recoverable window,
and a restore to a moment into a data directory (docs/engines/postgresql.md). Like wal.py, this
joins the engine to the repository itself: vaultflow/operations/ knows no engine package.

A base backup is a snapshot like any other (chunks, zstd, AES-256-GCM, a sealed manifest written
last) with one stream, `base`, in format `postgres-basebackup-tar`, and `base_backup` set in its
manifest. It is never the parent of a logical snapshot, and `restore`/`export` refuse it.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vaultflow import __version__
from vaultflow.audit import audited
from vaultflow.engines.postgres import BASEBACKUP_FORMAT, basebackup, recovery
from vaultflow.engines.postgres.basebackup import BASE_STREAM, format_lsn, parse_labelled_lines, parse_lsn
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.pitr_check import check_pitr_readiness
from vaultflow.engines.postgres.recovery import RecoveryTarget
from vaultflow.engines.postgres.wal import WalName, WalNotArchived, read_archived
from vaultflow.engines.postgres.window import ClusterWindow, Coverage, cluster_window, system_identifiers
from vaultflow.engines.process import Deadline
from vaultflow.errors import InputError, VaultflowError
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.manifest import BaseBackupInfo, SnapshotManifest
from vaultflow.repository.repository import ByteSink, ProgressCallback, Repository

CLUSTER_DATABASE = "(cluster)"  # a base backup's `database`: the whole cluster, never a database name
DEFAULT_ARCHIVE_WAIT_S = 60.0


class ArchiveCheckFailed(VaultflowError):
    """The server does not archive its WAL into this repository (exit 1)."""


def take_base_backup(engine: PostgresEngine, repo: Repository, *, snapshot_id: str, archive_check: bool = True,
                     archive_wait: float = DEFAULT_ARCHIVE_WAIT_S, timeout: float | None = None,
                     progress: ProgressCallback | None = None, lock_wait: float = 600.0,
                     new_chain: bool = False) -> SnapshotManifest:
    """Stream `pg_basebackup` into `repo` as one snapshot; return its manifest once durable.

    With `archive_check` (the default) the server must pass `pitr check` and its last archived WAL
    file must be in this repository before anything is read, and after the backup the backup history
    file must arrive in the repository within `archive_wait` seconds (its STOP TIME is the recorded
    stop). Without it the stop time is the server's clock once pg_basebackup ended. On any failure no
    manifest is written, so no snapshot appears (chunks already stored are reused by the next run).

    A base backup joins the chain of the cluster's newest base backup as an `incremental` (chunks
    the chain holds are not stored again; its manifest still names every chunk, so it restores on
    its own), unless `new_chain` or there is none: then it is a `full` starting its own chain."""
    facts = basebackup.cluster_facts(engine)
    tool_version = basebackup.check_tool_version(engine, facts)
    if archive_check:
        check_archiving(engine, repo, facts)
    started = datetime.now(UTC)
    what = f"cluster {facts.system_identifier} at {engine.server_label()}"
    tap = basebackup.TarMemberTap()
    with (audited(repo, "backup", object=snapshot_id, database=CLUSTER_DATABASE) as note,
          RepositoryLock(repo, "shared", f"base backup of {engine.server_label()}", wait=lock_wait) as lock):
        parent = None if new_chain else newest_base_backup(repo, facts.system_identifier)
        chain = parent.chain if parent is not None else snapshot_id
        writer = repo.writer(chain)
        with basebackup.base_backup_stream(engine, f"vaultflow {snapshot_id[:8]}", Deadline.start(timeout)) as tar:
            stream = writer.write_stream(BASE_STREAM, BASEBACKUP_FORMAT, tar, progress, tap=tap)
        position = basebackup.position_of(tap.members, what)
        history = basebackup.backup_history_file_name(position.start_lsn, position.start_timeline,
                                                      facts.wal_segment_size)
        if archive_check:
            text = _wait_for_history(repo, facts.system_identifier, history, archive_wait, what)
            fields = parse_labelled_lines(text)
            start_time, stop_floor = basebackup.server_timestamps(engine, [fields["START TIME"], fields["STOP TIME"]])
            stop_time = stop_floor + timedelta(seconds=1)  # the file has whole seconds: never earlier than the stop
            if parse_lsn(fields["STOP WAL LOCATION"].split()[0]) != position.stop_lsn:
                raise ArchiveCheckFailed(f"the backup history file {history} of {what} names another stop than "
                                         "the backup's manifest", "take the base backup again")
            source = "backup-history"
        else:
            start_time = basebackup.server_timestamps(engine, [position.start_time_text])[0]
            stop_time = basebackup.server_now(engine)
            source = "server-clock-after"
        info = BaseBackupInfo(
            system_identifier=facts.system_identifier, timeline=position.stop_timeline,
            start_lsn=format_lsn(position.start_lsn), stop_lsn=format_lsn(position.stop_lsn),
            start_time=start_time, stop_time=stop_time, stop_time_source=source,  # type: ignore[arg-type]
            server_version=facts.server_version, wal_segment_size=facts.wal_segment_size,
            backup_label=position.label, backup_manifest="backup_manifest" in tap.members,
            history_file=history if archive_check else None)
        stream = stream.model_copy(update={"meta": {"members": str(tap.count)}})
        manifest = SnapshotManifest(
            id=snapshot_id, chain=chain, parent=parent.id if parent else None,
            kind="incremental" if parent else "full", engine=engine.engine, server=engine.server_label(),
            database=CLUSTER_DATABASE, started_at=started, finished_at=datetime.now(UTC),
            hostname=socket.gethostname(), vaultflow_version=__version__,
            tool_versions={"postgresql": facts.server_version, "pg_basebackup": tool_version},
            streams=[stream], base_backup=info)
        lock.check_held()
        repo.save_manifest(manifest)
        note.detail = f"base backup of {what}, {stream.size} bytes, stop {info.stop_lsn}"
    return manifest


def newest_base_backup(repo: Repository, system_identifier: int) -> SnapshotManifest | None:
    """The cluster's base backup that stopped last, if any."""
    bases = [m for m in repo.manifests()
             if m.base_backup is not None and m.base_backup.system_identifier == system_identifier]
    return max(bases, key=lambda m: (m.base_backup.stop_time, m.id), default=None)  # type: ignore[union-attr]


def check_archiving(engine: PostgresEngine, repo: Repository, facts: basebackup.ClusterFacts) -> None:
    readiness = check_pitr_readiness(engine)
    missing = [c.name for c in readiness.checks if c.status == "missing"]
    if missing:
        raise ArchiveCheckFailed(
            f"PostgreSQL at {engine.server_label()} is not archiving WAL for point-in-time recovery "
            f"({', '.join(missing)} missing), so this base backup could not be restored to a moment",
            f"run vaultflow pitr check {engine.server_label()} and apply what it prints, or pass "
            "--no-archive-check for a backup that restores only to its own end")
    last = facts.last_archived_wal
    if last is not None and repo.store.stat(WalName.parse(last).key(facts.system_identifier)) is None:
        raise ArchiveCheckFailed(
            f"PostgreSQL at {engine.server_label()} archives its WAL elsewhere: its last archived file {last} "
            f"is not in the repository at {repo.store.describe()}",
            "point archive_command's VAULTFLOW_REPO at this repository, or back up into the one it archives to")


def _wait_for_history(repo: Repository, sysid: int, name: str, wait: float, what: str) -> str:
    deadline = time.monotonic() + wait
    while True:
        try:
            return read_archived(repo, sysid, name).decode("utf-8", "replace")
        except WalNotArchived:
            if time.monotonic() >= deadline:
                raise ArchiveCheckFailed(
                    f"the backup history file {name} of {what} did not reach the repository at "
                    f"{repo.store.describe()} within {wait:.0f} s, so no snapshot was recorded",
                    "check pg_stat_archiver and the server log for archive_command errors, then back up again "
                    "(stored chunks are reused)") from None
            time.sleep(0.25)


# -- the window -----------------------------------------------------------------------------------


def windows(repo: Repository, cluster: str | None = None) -> list[ClusterWindow]:
    """The window of every cluster the repository knows, or of the one `cluster` names (see
    `resolve_cluster`)."""
    manifests = list(repo.manifests())
    ids = [resolve_cluster(repo, manifests, cluster)] if cluster else system_identifiers(repo, manifests)
    return [cluster_window(repo, sysid, manifests) for sysid in ids]


def resolve_cluster(repo: Repository, manifests: list[SnapshotManifest], ref: str) -> int:
    """A cluster by system identifier (decimal), server (host:port, or a postgresql:// URL whose host
    and port are used) as its base backups record it, or a base backup's snapshot id."""
    text = ref.strip()
    if is_system_identifier(text):
        return int(text)
    bases = [m for m in manifests if m.base_backup is not None]
    if ":" in text:
        server = text.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]
        if ":" not in server:
            server += ":5432"
        found = sorted({m.base_backup.system_identifier for m in bases if m.server == server})  # type: ignore[union-attr]
        if not found:
            raise InputError(f"no base backup of a cluster at {server} in the repository at {repo.store.describe()}",
                             f"take one with: vaultflow pitr base-backup postgresql://USER@{server}")
        if len(found) > 1:
            raise InputError(f"{server} was more than one cluster ({', '.join(map(str, found))})",
                             "name the cluster by its system identifier (vaultflow pitr window lists them)")
        return found[0]
    manifest = repo.load_manifest(repo.resolve_snapshot(text))
    return base_backup_info(manifest).system_identifier


def is_system_identifier(text: str) -> bool:
    """A system identifier is a 64-bit number in decimal (snapshot ids are 32 hex digits)."""
    return text.isdigit() and 12 <= len(text) <= 20


def base_backup_info(manifest: SnapshotManifest) -> BaseBackupInfo:
    """The manifest's base backup part; InputError (one line) for a logical snapshot."""
    if manifest.base_backup is None:
        raise InputError(f"snapshot {manifest.short_id} is a logical backup of {manifest.engine} database "
                         f"{manifest.database}, not a base backup; it cannot be restored to a moment",
                         f"restore it with vaultflow restore {manifest.short_id} TARGET, or take a base backup "
                         "with vaultflow pitr base-backup SERVER")
    return manifest.base_backup


# -- restore to a moment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryPlan:
    """The base backup a restore lays out, and what its WAL reaches."""

    manifest: SnapshotManifest
    coverage: Coverage
    window: ClusterWindow


def plan_recovery(repo: Repository, cluster: str, target: RecoveryTarget) -> RecoveryPlan:
    """The newest base backup that stopped before the target (a backup that stopped after it would
    make PostgreSQL ignore the target), with unbroken WAL from it to the target. Refuses, in one line
    naming the window, a target before the oldest base backup's stop or after the last archived WAL
    (or beyond a gap). `cluster` may name one base backup (its snapshot id): then only that one."""
    manifests = list(repo.manifests())
    chosen_id: str | None = None
    if not (is_system_identifier(cluster.strip()) or ":" in cluster):
        chosen = repo.load_manifest(repo.resolve_snapshot(cluster))
        base_backup_info(chosen)
        chosen_id = chosen.id
    window = cluster_window(repo, resolve_cluster(repo, manifests, cluster), manifests)
    label = f"cluster {window.system_identifier}"
    if not window.coverage:
        raise InputError(f"{label} has no base backup in the repository at {repo.store.describe()}",
                         "take one with: vaultflow pitr base-backup SERVER")
    candidates = [c for c in window.coverage if chosen_id is None or c.snapshot == chosen_id]
    if target.name is not None or target.xid is not None:
        return _plan_for_name(window, candidates)
    if target.latest:
        return _plan_for_latest(window, candidates)

    def stopped_before(c: Coverage) -> bool:
        return c.from_time <= target.time if target.time is not None else c.from_lsn <= (target.lsn or 0)

    before = [c for c in candidates if stopped_before(c)]
    where = f"{label} can be restored to {window.range_text()}"
    if not before:
        which = f"base backup {chosen_id[:8]}" if chosen_id else "its oldest base backup"
        raise InputError(f"target {target.describe()} is before the end of {which}; {where}",
                         "choose a later target (a base backup cannot be rewound)")
    best = max(before, key=lambda c: (c.from_time, c.from_lsn))
    reached = target.time <= best.to_time if target.time is not None else (target.lsn or 0) <= best.to_lsn
    if not reached:
        gaps = [g.describe() for g in window.gaps]
        why = f"the WAL after base backup {best.snapshot[:8]} ends at {best.last_segment} " + (
            f"(gap: {gaps[0]})" if gaps else "(the last archived segment)")
        raise InputError(f"target {target.describe()} is after the last archived WAL: {why}; {where}",
                         "choose a target inside the window, or wait for the server to archive more WAL")
    manifest = next(m for m in window.base_backups if m.id == best.snapshot)
    return RecoveryPlan(manifest, best, window)


def _plan_for_name(window: ClusterWindow, candidates: list[Coverage]) -> RecoveryPlan:
    """A name says nothing about where the restore point is: the oldest candidate whose WAL reaches
    as far as any does (so every archived restore point after it is reachable). A name that is not
    in that WAL fails at the end of recovery ("recovery ended before configured recovery target was
    reached"); a restore point older than the base backup is ignored the same way by PostgreSQL."""
    farthest = max(c.to_lsn for c in candidates)
    best = min((c for c in candidates if c.to_lsn == farthest), key=lambda c: (c.from_time, c.from_lsn))
    manifest = next(m for m in window.base_backups if m.id == best.snapshot)
    return RecoveryPlan(manifest, best, window)


def _plan_for_latest(window: ClusterWindow, candidates: list[Coverage]) -> RecoveryPlan:
    """The newest base backup, replaying to the last archived segment. Refused when a gap stops its
    WAL short of the newest archived segment: PostgreSQL would end recovery at the gap and promote,
    silently leaving out everything after it."""
    best = max(candidates, key=lambda c: (c.from_time, c.from_lsn))
    if window.gaps and best.last_segment != window.newest_segment:
        raise InputError(f"--latest from base backup {best.snapshot[:8]} would stop at {best.last_segment}, before "
                         f"the gap {window.gaps[0].describe()}; cluster {window.system_identifier} can be restored "
                         f"to {window.range_text()}",
                         "choose --to-time or --to-lsn before the gap, or take a new base backup")
    manifest = next(m for m in window.base_backups if m.id == best.snapshot)
    return RecoveryPlan(manifest, best, window)


def restore_to_point(repo: Repository, plan: RecoveryPlan, pgdata: Path, target: RecoveryTarget, *,
                     command: str, archive: bool = False, progress: ProgressCallback | None = None,
                     action: recovery.RecoveryAction = "promote", timeline: int | None = None,
                     settings: dict[str, str] | None = None) -> list[str]:
    """Extract the plan's base backup into the new or empty `pgdata` (mode 0700) and write the
    recovery settings (`action` at the target, extra server `settings`); returns the lines written to
    postgresql.auto.conf. On any failure the directory is left as it was found (removed, or emptied)."""
    created = recovery.prepare_data_directory(pgdata)
    manifest = plan.manifest
    stream = manifest.stream(BASE_STREAM)
    try:
        with (audited(repo, "restore", object=manifest.id, database=CLUSTER_DATABASE,
                      detail=f"to {target.describe()} into {pgdata}"),
              RepositoryLock(repo, "shared", f"pitr restore into {pgdata}", wait=60)):

            def write(sink: ByteSink) -> None:
                repo.read_stream(manifest.id, stream, sink, manifest.chain, progress=progress)

            recovery.extract_tar(write, pgdata)
            return recovery.write_recovery_settings(pgdata, command=command, target=target, snapshot=manifest.id,
                                                    archive=archive, action=action, timeline=timeline,
                                                    settings=settings)
    except BaseException:
        recovery.clear_data_directory(pgdata, created)
        raise


def parse_target(to_time: str | None, to_lsn: str | None, to_name: str | None = None, to_xid: str | None = None,
                 latest: bool = False) -> RecoveryTarget:
    """The one target of --to-time / --to-lsn / --to-name / --to-xid / --latest."""
    if [to_time, to_lsn, to_name, to_xid].count(None) != 4 - (not latest):
        raise InputError("give exactly one of --to-time, --to-lsn, --to-name, --to-xid and --latest",
                         "e.g. --to-time '2026-12-02 10:14:00+01:00'")
    if latest:
        return RecoveryTarget(latest=True)
    if to_time is not None:
        return RecoveryTarget(time=recovery.parse_target_time(to_time))
    if to_name is not None:
        return RecoveryTarget(name=to_name)
    if to_xid is not None:
        if not to_xid.strip().isdigit():
            raise InputError(f"--to-xid {to_xid!r} is not a transaction id", "give a number, e.g. --to-xid 7421")
        return RecoveryTarget(xid=int(to_xid.strip()))
    assert to_lsn is not None
    return RecoveryTarget(lsn=parse_lsn(to_lsn))
