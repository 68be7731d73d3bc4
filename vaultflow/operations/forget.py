"""Forget: delete chosen snapshots (not a retention rule's choice), then collect garbage.

A snapshot's **dependents** are the snapshots taken on top of it: those whose `parent` is
it, and theirs in turn (incrementals after it in its chain, differentials on its full).
Every manifest lists every chunk it needs, so a dependent still restores without its
parent; but the chain it belongs to loses its base, so forgetting a snapshot with
dependents is refused unless they go too (`with_dependents`), and the refusal lists them.
Order as for prune (docs/design.md): exclusive lock, manifests first, then unreferenced chunks,
then the WAL/binlog objects no remaining snapshot needs (operations/prune.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from vaultflow.audit import audited
from vaultflow.engines.log_archive import log_retention
from vaultflow.errors import InputError
from vaultflow.operations import object_lock
from vaultflow.operations.prune import finish, garbage, locked_note, log_note
from vaultflow.repository.locks import RepositoryLock, remove_stale_locks
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import Repository


@dataclass
class ForgetPlan:
    forget: list[SnapshotManifest] = field(default_factory=list)  # oldest first
    garbage: dict[str, int] = field(default_factory=dict)  # chunk key -> stored size
    locked: dict[str, datetime] = field(default_factory=dict)  # snapshot id -> kept until (object lock)
    retained: dict[str, datetime] = field(default_factory=dict)  # garbage chunk key the store retains -> until
    logs: dict[str, int] = field(default_factory=dict)  # WAL/binlog object key -> stored size, no kept snapshot needs
    log_notes: list[str] = field(default_factory=list)  # archives kept whole, and why
    logs_retained: dict[str, datetime] = field(default_factory=dict)  # log key the store retains -> until
    dry_run: bool = True

    @property
    def bytes_freed(self) -> int:
        return sum(self.garbage.values())

    @property
    def log_bytes_freed(self) -> int:
        return sum(self.logs.values())


def dependents(manifests: list[SnapshotManifest], snapshot_id: str) -> list[SnapshotManifest]:
    """The snapshots taken on top of `snapshot_id`, transitively, oldest first."""
    children: dict[str, list[SnapshotManifest]] = {}
    for m in manifests:
        if m.parent:
            children.setdefault(m.parent, []).append(m)
    found: dict[str, SnapshotManifest] = {}
    todo = [snapshot_id]
    while todo:
        for child in children.get(todo.pop(), []):
            if child.id not in found:
                found[child.id] = child
                todo.append(child.id)
    return sorted(found.values(), key=lambda m: (m.started_at, m.id))


def plan_forget(repo: Repository, refs: list[str], *, with_dependents: bool = False) -> ForgetPlan:
    """What forgetting `refs` (ids or unique prefixes) would delete; deletes nothing."""
    if not refs:
        raise InputError("no snapshot to forget", "name one or more snapshot ids (vaultflow snapshots lists them)")
    wanted = {repo.resolve_snapshot(ref) for ref in refs}
    manifests = list(repo.manifests())
    by_id = {m.id: m for m in manifests}
    chosen = {i: by_id[i] for i in wanted}
    for snapshot_id in sorted(wanted):
        others = [d for d in dependents(manifests, snapshot_id) if d.id not in wanted]
        if others and not with_dependents:
            listed = ", ".join(d.short_id for d in others[:8]) + (f" and {len(others) - 8} more"
                                                                 if len(others) > 8 else "")
            raise InputError(f"snapshot {by_id[snapshot_id].short_id} has {len(others)} dependent snapshot(s) "
                             f"taken on top of it: {listed}",
                             "forget those too (--with-dependents), or forget only the newest ones")
        chosen.update((d.id, d) for d in others)
    locked = object_lock.retained_snapshots(repo, list(chosen.values()), manifests, datetime.now(UTC))
    remaining = [m for m in manifests if m.id not in chosen or m.id in locked]
    logs = log_retention(repo, remaining)
    return ForgetPlan(forget=sorted((m for m in chosen.values() if m.id not in locked),
                                    key=lambda m: (m.started_at, m.id)),
                      garbage=garbage(repo, remaining), locked=locked, logs=logs.expendable, log_notes=logs.notes)


def forget(repo: Repository, refs: list[str], *, with_dependents: bool = False, dry_run: bool = False
           ) -> ForgetPlan:
    """Delete the chosen snapshots' manifests, then every chunk no remaining manifest names.
    A snapshot still retained by object lock (and what it was taken on top of) is kept whole,
    in `plan.locked` with its date. A dry run takes no lock and changes nothing."""
    if dry_run:
        return plan_forget(repo, refs, with_dependents=with_dependents)
    repo.require("admin", "forget")
    with audited(repo, "forget", object=" ".join(refs)) as note, RepositoryLock(repo, "exclusive", "forget"):
        remove_stale_locks(repo)
        plan = plan_forget(repo, refs, with_dependents=with_dependents)
        plan.dry_run = False
        finish(repo, plan)
        note.object = " ".join(m.id for m in plan.forget)
        note.detail = (f"forgot {len(plan.forget)} snapshot(s), {sum(plan.garbage.values())} bytes freed"
                       + log_note(plan.logs, plan.logs_retained) + locked_note(plan.locked, plan.retained))
    return plan
