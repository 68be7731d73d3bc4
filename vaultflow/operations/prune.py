"""Prune: forget the snapshots a retention policy does not keep, then collect garbage.

Order (docs/design.md): under an exclusive repository lock, delete the forgotten manifests
first, then every chunk object that no remaining manifest references. Chunks of a backup
that is still running are safe because that backup holds a shared lock, so prune cannot
start; chunks left by a crashed backup (no manifest, stale lock) are garbage and go.
On an object-locked repository a snapshot still retained is kept whole and reported with its
date (`operations/object_lock.py`).

Archived change logs go with the snapshots they serve: after the manifests, every WAL or binlog
object no remaining snapshot needs for a point-in-time restore (each engine's `LogArchive` hook,
vaultflow/engines/log_archive.py, decides which; a cluster or server without a kept anchor keeps
its whole log and the plan notes it). Log objects the store retains (object lock) stay, listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from vaultflow.audit import audited
from vaultflow.engines.log_archive import log_retention
from vaultflow.operations import object_lock
from vaultflow.operations.retention import PolicyFor, RetentionPolicy, SnapshotFacts, decide
from vaultflow.operations.share import expired_exports, remove_expired_exports
from vaultflow.repository.locks import RepositoryLock, remove_stale_locks
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import Repository, chunk_key


def database_key(m: SnapshotManifest) -> str:
    return f"{m.engine}://{m.server}/{m.database}"


def facts(manifests: list[SnapshotManifest], proven: set[str] | frozenset[str] = frozenset()
          ) -> list[SnapshotFacts]:
    """What retention needs of each manifest; `proven`: ids of snapshots a drill passed."""
    return [SnapshotFacts(id=m.id, database=database_key(m), taken_at=m.started_at, kind=m.kind, chain=m.chain,
                          proven=m.id in proven)
            for m in manifests]


@dataclass
class PrunePlan:
    keep: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> reasons
    forget: list[SnapshotManifest] = field(default_factory=list)
    garbage: dict[str, int] = field(default_factory=dict)  # chunk key -> stored size
    expired_exports: list[str] = field(default_factory=list)  # exported objects whose links all expired
    locked: dict[str, datetime] = field(default_factory=dict)  # snapshot id -> kept until (object lock)
    retained: dict[str, datetime] = field(default_factory=dict)  # garbage chunk key the store retains -> until
    logs: dict[str, int] = field(default_factory=dict)  # WAL/binlog object key -> stored size, no kept snapshot needs
    log_notes: list[str] = field(default_factory=list)  # archives kept whole, and why
    logs_retained: dict[str, datetime] = field(default_factory=dict)  # log key the store retains -> until
    lock_warning: str = ""  # the policy outlasts the repository's object lock (object_lock.lock_shorter_than_retention)
    dry_run: bool = True

    @property
    def bytes_freed(self) -> int:
        return sum(self.garbage.values())

    @property
    def log_bytes_freed(self) -> int:
        return sum(self.logs.values())


def plan_prune(repo: Repository, policy: RetentionPolicy | PolicyFor, now: datetime, *,
               proven: set[str] | frozenset[str] = frozenset()) -> PrunePlan:
    """What a prune would do; reads every manifest and lists every chunk, deletes nothing.
    `proven`: ids of snapshots a restore drill passed (the newest of each database is kept)."""
    manifests = list(repo.manifests())
    decision = decide(facts(manifests, proven), policy, now)
    doomed = [m for m in manifests if m.id not in decision.keep]
    locked = object_lock.retained_snapshots(repo, doomed, manifests, now)
    kept = [m for m in manifests if m.id in decision.keep or m.id in locked]
    logs = log_retention(repo, kept)
    return PrunePlan(
        keep=decision.keep,
        forget=[m for m in doomed if m.id not in locked],
        garbage=garbage(repo, kept),
        expired_exports=expired_exports(repo, now)[0],
        locked=locked,
        logs=logs.expendable,
        log_notes=logs.notes,
        lock_warning=object_lock.lock_shorter_than_retention(repo.object_lock, policy) or "",
    )


def garbage(repo: Repository, remaining: list[SnapshotManifest]) -> dict[str, int]:
    """Every chunk object (key -> stored size) that none of `remaining` names."""
    referenced = {chunk_key(m.chain, c.id) for m in remaining for s in m.streams for c in s.chunks}
    return {info.key: info.size for info in repo.store.list("chains/") if info.key not in referenced}


def collect_garbage(repo: Repository, keys: dict[str, int]) -> dict[str, datetime]:
    """Delete unreferenced chunks; only under the exclusive lock, after the manifests went.
    Returns those the store retains (object lock): key -> until; they stay garbage."""
    return object_lock.collect_garbage(repo, keys)


def finish(repo: Repository, plan: PrunePlan | ForgetLike) -> None:
    """Delete `plan.forget`'s manifests, then the chunks no remaining manifest names, then the log
    objects no remaining snapshot needs. A manifest the store refuses as retained moves to
    `plan.locked`, and garbage and logs are computed again over what really remains, so no chunk
    or WAL/binlog file of a kept snapshot goes."""
    planned = len(plan.forget)
    plan.forget = object_lock.delete_manifests(repo, plan.forget, plan.locked)
    if len(plan.forget) != planned:
        remaining = list(repo.manifests())
        plan.garbage = garbage(repo, remaining)
        logs = log_retention(repo, remaining)
        plan.logs, plan.log_notes = logs.expendable, logs.notes
    plan.retained = collect_garbage(repo, plan.garbage)
    for key in plan.retained:
        plan.garbage.pop(key, None)
    plan.logs_retained = object_lock.collect_garbage(repo, plan.logs)
    for key in plan.logs_retained:
        plan.logs.pop(key, None)


class ForgetLike(Protocol):
    forget: list[SnapshotManifest]
    garbage: dict[str, int]
    locked: dict[str, datetime]
    retained: dict[str, datetime]
    logs: dict[str, int]
    log_notes: list[str]
    logs_retained: dict[str, datetime]


def prune(repo: Repository, policy: RetentionPolicy | PolicyFor, now: datetime, *, dry_run: bool = False,
          proven: set[str] | frozenset[str] = frozenset()) -> PrunePlan:
    """Apply the policy. A dry run takes no lock and changes nothing."""
    if dry_run:
        return plan_prune(repo, policy, now, proven=proven)
    repo.require("admin", "prune")
    with audited(repo, "prune") as note, RepositoryLock(repo, "exclusive", "prune"):
        remove_stale_locks(repo)
        plan = plan_prune(repo, policy, now, proven=proven)
        plan.dry_run = False
        finish(repo, plan)
        plan.expired_exports = remove_expired_exports(repo, now)
        note.object = " ".join(m.id for m in plan.forget)
        note.detail = (f"forgot {len(plan.forget)} snapshot(s), {sum(plan.garbage.values())} bytes freed, "
                       f"{len(plan.expired_exports)} expired export(s) removed"
                       + log_note(plan.logs, plan.logs_retained) + locked_note(plan.locked, plan.retained))
    return plan


def log_note(logs: dict[str, int], retained: dict[str, datetime]) -> str:
    """'; 12 WAL/binlog object(s) deleted (190 MB)' for a record; '' when none went or stayed."""
    parts = []
    if logs:
        parts.append(f"{len(logs)} WAL/binlog object(s) deleted, {sum(logs.values())} bytes")
    if retained:
        parts.append(f"{len(retained)} WAL/binlog object(s) retained until "
                     f"{max(retained.values()):%Y-%m-%dT%H:%M:%SZ} (object lock)")
    return "".join(f"; {p}" for p in parts)


def locked_note(locked: dict[str, datetime], retained: dict[str, datetime]) -> str:
    """'; kept 2 snapshot(s) until <date> (object lock)' for a record or a summary; '' if none."""
    parts = []
    if locked:
        parts.append(f"kept {len(locked)} snapshot(s) until {max(locked.values()):%Y-%m-%dT%H:%M:%SZ} (object lock)")
    if retained:
        parts.append(f"{len(retained)} unreferenced chunk object(s) retained until "
                     f"{max(retained.values()):%Y-%m-%dT%H:%M:%SZ} (object lock)")
    return "".join(f"; {p}" for p in parts)
