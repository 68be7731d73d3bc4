"""Retention, forget and integrity tasks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.resolve import resolve_repository
from tasks.retry_policy import RETRIED
from vaultflow.catalog import Catalog
from vaultflow.engines.log_archive import LogProblem
from vaultflow.operations.copy import CopyResult, copy_snapshots
from vaultflow.operations.forget import ForgetPlan, forget
from vaultflow.operations.object_lock import ExtendPlan, extend_locks
from vaultflow.operations.prune import PrunePlan, prune
from vaultflow.operations.retention import PolicyMap, RetentionPolicy
from vaultflow.operations.verify import SnapshotVerdict, verify_logs, verify_snapshots
from vaultflow.repository import Repository

if TYPE_CHECKING:
    from blocks.parameters import RepositoryChoice


def _open(repository: RepositoryChoice | None) -> tuple[Repository, str | None]:
    ref = resolve_repository(repository)
    return ref.open(), ref.catalog_url


def _drop_forgotten(plan: PrunePlan | ForgetPlan, catalog_url: str | None, dry_run: bool) -> None:
    """Drop the forgotten snapshots' catalog rows (not on a dry run) and log what went."""
    if not dry_run:
        Catalog(catalog_url).forget_snapshots([m.id for m in plan.forget])
    get_run_logger().info("%s %d snapshot(s), %d chunk object(s), %d bytes",
                          "would forget" if dry_run else "forgot", len(plan.forget), len(plan.garbage),
                          plan.bytes_freed)
    if plan.locked:
        get_run_logger().info("kept %d snapshot(s) retained by object lock until %s", len(plan.locked),
                              max(plan.locked.values()).isoformat(timespec="seconds"))


@task(name="prune-repository", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def prune_repository(repository: RepositoryChoice | None, policy: RetentionPolicy | PolicyMap, dry_run: bool
                     ) -> tuple[PrunePlan, str | None, str]:
    """Forget what the policy does not keep, collect garbage, drop forgotten catalog rows."""
    repo, catalog_url = _open(repository)
    proven = Catalog(catalog_url).proven_snapshots(repository_id=repo.id)
    plan = prune(repo, policy, datetime.now(UTC), dry_run=dry_run, proven=proven)
    _drop_forgotten(plan, catalog_url, dry_run)
    return plan, catalog_url, repo.id


@task(name="forget-snapshots", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def forget_snapshots(repository: str | None, snapshots: list[str], with_dependents: bool, dry_run: bool
                     ) -> tuple[ForgetPlan, str | None, str]:
    """Forget the chosen snapshots (refused, deleting nothing, if others depend on them and
    `with_dependents` is off), collect garbage, drop the forgotten catalog rows.
    A retry after the manifests went reports their ids as unknown: the run fails, nothing more is lost."""
    repo, catalog_url = _open(repository)
    plan = forget(repo, snapshots, with_dependents=with_dependents, dry_run=dry_run)
    _drop_forgotten(plan, catalog_url, dry_run)
    return plan, catalog_url, repo.id


@task(name="verify-snapshots", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def verify_repository(repository: RepositoryChoice | None, snapshots: list[str] | None, deep: bool,
                      policy: RetentionPolicy | None) -> list[SnapshotVerdict]:
    repo, _ = _open(repository)
    ids = [repo.resolve_snapshot(s) for s in snapshots] if snapshots else None
    return verify_snapshots(repo, ids, deep=deep, policy=policy)


@task(name="verify-archived-logs", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def verify_archived_logs(repository: RepositoryChoice | None, deep: bool) -> list[LogProblem]:
    """The gaps (and, deep, damaged objects) of the repository's archived WAL and binlogs."""
    repo, _ = _open(repository)
    return verify_logs(repo, deep=deep)


@task(name="copy-snapshots", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def copy_repository(source: RepositoryChoice | None, destination: RepositoryChoice,
                    snapshots: list[str] | None) -> CopyResult:
    """Copy snapshots the destination lacks; a retry skips the ones already copied."""
    src, _ = _open(source)
    dest, _ = _open(destination)
    ids = [src.resolve_snapshot(s) for s in snapshots] if snapshots else None
    result = copy_snapshots(src, dest, ids)
    get_run_logger().info("copied %d snapshot(s) from %s to %s (%d already there): %d chunk(s) written, %d reused",
                          len(result.copied), src.store.describe(), dest.store.describe(),
                          len(result.already_there), result.chunks_written, result.chunks_reused)
    return result


@task(name="extend-locks", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def extend_repository_locks(repository: RepositoryChoice | None) -> ExtendPlan:
    """Extend the object lock of everything the remaining snapshots need (run with the admin identity)."""
    repo, _ = _open(repository)
    plan = extend_locks(repo)
    get_run_logger().info("extended %d of %d object(s) to %s", len(plan.extended), plan.objects,
                          plan.until.isoformat(timespec="seconds"))
    return plan
