"""Prune: forget the snapshots a retention policy does not keep, then collect garbage.

Order (docs/design.md): under an exclusive repository lock, delete the forgotten manifests
first, then every chunk object that no remaining manifest references. Chunks of a backup
that is still running are safe because that backup holds a shared lock, so prune cannot
start; chunks left by a crashed backup (no manifest, stale lock) are garbage and go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from vaultflow.audit import audited
from vaultflow.operations.retention import PolicyFor, RetentionPolicy, SnapshotFacts, decide
from vaultflow.operations.share import expired_exports, remove_expired_exports
from vaultflow.repository.locks import RepositoryLock, remove_stale_locks
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import SNAPSHOT_PREFIX, Repository, chunk_key


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
    dry_run: bool = True

    @property
    def bytes_freed(self) -> int:
        return sum(self.garbage.values())


def plan_prune(repo: Repository, policy: RetentionPolicy | PolicyFor, now: datetime, *,
               proven: set[str] | frozenset[str] = frozenset()) -> PrunePlan:
    """What a prune would do; reads every manifest and lists every chunk, deletes nothing.
    `proven`: ids of snapshots a restore drill passed (the newest of each database is kept)."""
    manifests = list(repo.manifests())
    decision = decide(facts(manifests, proven), policy, now)
    kept = [m for m in manifests if m.id in decision.keep]
    return PrunePlan(
        keep=decision.keep,
        forget=[m for m in manifests if m.id not in decision.keep],
        garbage=garbage(repo, kept),
        expired_exports=expired_exports(repo, now)[0],
    )


def garbage(repo: Repository, remaining: list[SnapshotManifest]) -> dict[str, int]:
    """Every chunk object (key -> stored size) that none of `remaining` names."""
    referenced = {chunk_key(m.chain, c.id) for m in remaining for s in m.streams for c in s.chunks}
    return {info.key: info.size for info in repo.store.list("chains/") if info.key not in referenced}


def collect_garbage(repo: Repository, keys: dict[str, int]) -> None:
    """Delete unreferenced chunks; only under the exclusive lock, after the manifests went."""
    for key in keys:
        repo.store.delete(key)


def prune(repo: Repository, policy: RetentionPolicy | PolicyFor, now: datetime, *, dry_run: bool = False,
          proven: set[str] | frozenset[str] = frozenset()) -> PrunePlan:
    """Apply the policy. A dry run takes no lock and changes nothing."""
    if dry_run:
        return plan_prune(repo, policy, now, proven=proven)
    with audited(repo, "prune") as note, RepositoryLock(repo, "exclusive", "prune"):
        remove_stale_locks(repo)
        plan = plan_prune(repo, policy, now, proven=proven)
        plan.dry_run = False
        for m in plan.forget:
            repo.store.delete(SNAPSHOT_PREFIX + m.id)
        collect_garbage(repo, plan.garbage)
        plan.expired_exports = remove_expired_exports(repo, now)
        note.object = " ".join(m.id for m in plan.forget)
        note.detail = (f"forgot {len(plan.forget)} snapshot(s), {sum(plan.garbage.values())} bytes freed, "
                       f"{len(plan.expired_exports)} expired export(s) removed")
    return plan
