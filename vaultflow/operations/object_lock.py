"""Object lock (S3 Object Lock) on a repository: what prune and forget may delete, and
`extend-locks`, which keeps the objects of the remaining snapshots retained.

A repository initialised with `--object-lock DAYS` writes every object (except
`UNLOCKED_PREFIXES`) retained until its put time + DAYS. Chunks are shared across snapshots
by deduplication, so a chunk written long ago may be all a new snapshot needs: its lock
must be extended (`extend_locks`), or it could be deleted by whoever holds delete rights
while a snapshot still names it.

Prune and forget read a locked object as retained, not as an error: a snapshot whose
manifest is still retained is kept whole ("kept until <date> (object lock)"), and so is
every snapshot it was taken on top of; nothing of it is deleted. A chunk whose delete the
store refuses stays as unreferenced garbage for a later prune.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from vaultflow.audit import audited
from vaultflow.errors import InputError, ObjectLocked
from vaultflow.operations.retention import PolicyFor, PolicyMap, RetentionPolicy
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import CONFIG_KEY, SNAPSHOT_PREFIX, ObjectLockSettings, Repository, chunk_key


def lock_shorter_than_retention(lock: ObjectLockSettings | None, policy: RetentionPolicy | PolicyFor) -> str | None:
    """One line saying how the retention policy outlasts the object lock (a snapshot it keeps
    would lose its lock before the policy lets it go, unless `extend-locks` runs in time), or
    None: no lock, a policy bounded only by counts, or a lock at least as long as the policy."""
    if lock is None or not isinstance(policy, (RetentionPolicy, PolicyMap)):
        return None
    horizon = policy.horizon
    if horizon is None or lock.period >= horizon[0]:
        return None
    return (f"the repository's {lock.describe()} is shorter than the retention policy ({horizon[1]}): a snapshot "
            f"the policy keeps loses its lock before the policy lets it go unless extend-locks runs more often than "
            f"the lock period")


def retained_snapshots(repo: Repository, candidates: list[SnapshotManifest], manifests: list[SnapshotManifest],
                       now: datetime) -> dict[str, datetime]:
    """Of the snapshots about to be forgotten, those to keep because of object lock: id ->
    the date their lock ends. A snapshot whose manifest is retained past `now`, and every
    candidate it was taken on top of (its parents, so no kept snapshot loses its chain's base).
    Empty (and no request made) on a repository without object lock."""
    if repo.object_lock is None or not candidates:
        return {}
    by_id = {m.id: m for m in manifests}
    ids = sorted({m.id for m in candidates})
    wanted = set(ids)
    with ThreadPoolExecutor(max_workers=repo.store.concurrency, thread_name_prefix="vf-lock") as pool:
        dates = dict(zip(ids, pool.map(lambda i: repo.store.retained_until(SNAPSHOT_PREFIX + i), ids), strict=True))
    locked = {i: until for i, until in dates.items() if until is not None and until > now}
    for snapshot_id, until in list(locked.items()):
        parent = by_id[snapshot_id].parent
        while parent and parent in wanted:
            locked[parent] = max(until, locked.get(parent, until))
            parent = by_id[parent].parent if parent in by_id else None
    return locked


def delete_manifests(repo: Repository, doomed: list[SnapshotManifest], locked: dict[str, datetime]
                     ) -> list[SnapshotManifest]:
    """Delete the manifests of `doomed`, newest first; one the store refuses as retained is added
    to `locked` (with its date) instead, and so are the doomed snapshots it was taken on top of,
    which are not deleted then. The snapshots actually forgotten, in the order of `doomed`."""
    by_id = {m.id: m for m in doomed}
    gone: set[str] = set()
    for m in sorted(doomed, key=lambda m: (m.started_at, m.id), reverse=True):
        if m.id in locked:
            continue
        try:
            repo.store.delete(SNAPSHOT_PREFIX + m.id)
        except ObjectLocked as exc:
            until = _parse(exc.until)
            parent: str | None = m.id
            while parent in by_id and parent not in gone:
                locked[parent] = max(until, locked.get(parent, until))
                parent = by_id[parent].parent
            continue
        gone.add(m.id)
    return [m for m in doomed if m.id in gone]


def collect_garbage(repo: Repository, keys: Iterable[str]) -> dict[str, datetime]:
    """Delete unreferenced chunks (only under the exclusive lock, after the manifests went);
    the ones the store retains: key -> until. They stay garbage for a later prune."""
    retained: dict[str, datetime] = {}
    for key in keys:
        try:
            repo.store.delete(key)
        except ObjectLocked as exc:
            retained[key] = _parse(exc.until)
    return retained


def _parse(until: str) -> datetime:
    return datetime.fromisoformat(until) if until else datetime.max.replace(tzinfo=UTC)


@dataclass
class ExtendPlan:
    """What `extend_locks` did: objects looked at, extended (key -> new date) and the target."""

    until: datetime
    objects: int = 0
    extended: dict[str, datetime] = field(default_factory=dict)


def referenced_keys(repo: Repository, manifests: Iterable[SnapshotManifest]) -> set[str]:
    """Every object the snapshots need to restore: the config, their manifests, their chunks."""
    keys = {CONFIG_KEY}
    for m in manifests:
        keys.add(SNAPSHOT_PREFIX + m.id)
        keys.update(chunk_key(m.chain, c.id) for s in m.streams for c in s.chunks)
    return keys


def extend_locks(repo: Repository, now: datetime | None = None) -> ExtendPlan:
    """Extend the retention of every object a remaining snapshot needs (its manifest, its
    chunks, wherever written, and the config) to `now` + the repository's lock period where it
    would end sooner; never shortens one. Objects only forgotten snapshots named are left alone.
    Run it with an identity allowed s3:PutObjectRetention, more often than the lock period."""
    lock = repo.object_lock
    if lock is None:
        raise InputError(f"the repository at {repo.store.describe()} has no object lock",
                         "extend-locks is for repositories created with vaultflow init --object-lock DAYS")
    now = now or datetime.now(UTC)
    plan = ExtendPlan(until=now + lock.period)
    with audited(repo, "extend-locks") as note, RepositoryLock(repo, "shared", "extend-locks", wait=60):
        keys = sorted(referenced_keys(repo, repo.manifests()))
        plan.objects = len(keys)

        def extend(key: str) -> tuple[str, datetime] | None:
            current = repo.store.retained_until(key)
            if current is not None and current >= plan.until:
                return None
            if current is None and not repo.store.exists(key):
                return None  # a chunk a damaged snapshot lacks: verify reports it
            repo.store.extend_retention(key, plan.until)
            return key, plan.until

        with ThreadPoolExecutor(max_workers=repo.store.concurrency, thread_name_prefix="vf-lock") as pool:
            plan.extended = dict(r for r in pool.map(extend, keys) if r is not None)
        note.detail = (f"{len(plan.extended)} of {plan.objects} object(s) extended to "
                       f"{plan.until:%Y-%m-%dT%H:%M:%SZ}")
    return plan
