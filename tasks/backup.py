"""Backup tasks: open a run in the catalog, dump into the repository, close the run."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context

from blocks.resolve import RepositoryRef, resolve_engine, resolve_file_tree, resolve_repository
from tasks.reporting import ProgressArtifact
from tasks.retry_policy import RETRIED
from vaultflow.catalog import Catalog, SnapshotStatus
from vaultflow.engines import DatabaseEngine
from vaultflow.engines.registry import spec
from vaultflow.operations.backup import BackupPlan, backup_database, plan_backup
from vaultflow.progress import ProgressMeter, add_listener, remove_listener
from vaultflow.repository import SnapshotManifest, new_object_id
from vaultflow.repository.manifest import SnapshotKind
from vaultflow.requests import BackupRequest

if TYPE_CHECKING:
    from blocks.parameters import EngineChoice, FileTreeChoice, RepositoryChoice


@dataclass(frozen=True)
class BackupRun:
    """Everything the later tasks of one backup run need; ids are fixed for retries."""

    engine: DatabaseEngine
    repository: RepositoryRef
    repository_id: str
    snapshot_id: str
    plan: BackupPlan

    def catalog(self) -> Catalog:
        return Catalog(self.repository.catalog_url)

    def in_set(self, members: list[str]) -> BackupRun:
        """This run as a member of the set of snapshots `members` (ids, the database's first)."""
        return replace(self, plan=replace(self.plan, set_members=tuple(members)))


def current_flow_run_id() -> str | None:
    """The id of the flow run the calling task runs in, for the catalog row; None outside a task run."""
    try:
        ctx = get_run_context()
    except RuntimeError:
        return None
    run = getattr(ctx, "task_run", None)
    return str(run.flow_run_id) if run is not None and run.flow_run_id else None


@task(name="open-backup-run", **RETRIED, persist_result=False,
      cache_policy=NO_CACHE)
def open_backup_run(source: EngineChoice, repository: RepositoryChoice | None, kind: SnapshotKind) -> BackupRun:
    """Resolve source and repository, check the passphrase, pick chain and parent, record Pending."""
    return _open_run(resolve_engine(source), repository, kind)


@task(name="open-file-tree-run", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def open_file_tree_run(tree: FileTreeChoice, repository: RepositoryChoice | None, kind: SnapshotKind) -> BackupRun:
    """Like open-backup-run for one file tree of a backup set: refuses a source that is not a
    file tree, or a directory that is missing, before anything is dumped."""
    engine = resolve_file_tree(tree)
    engine.check_configuration("backup")
    return _open_run(engine, repository, kind)


def _open_run(engine: DatabaseEngine, repository: RepositoryChoice | None, kind: SnapshotKind) -> BackupRun:
    ref = resolve_repository(repository)
    repo = ref.open()
    snapshot_id = new_object_id()
    plan = plan_backup(repo, engine, kind, snapshot_id)
    run = BackupRun(engine=engine, repository=ref, repository_id=repo.id, snapshot_id=snapshot_id, plan=plan)
    run.catalog().start_snapshot(
        snapshot_id=snapshot_id, chain=plan.chain, repository_id=repo.id,
        repository=repo.store.describe(), engine=engine.engine, server=engine.server_label(),
        database=engine.database, kind=plan.kind, parent=plan.parent_id, flow_run_id=current_flow_run_id(),
        status=SnapshotStatus.PENDING,
    )
    logger = get_run_logger()
    if plan.note:
        logger.warning(plan.note)
    logger.info("%s backup of %s into %s as snapshot %s%s", plan.kind, engine.describe(),
                repo.store.describe(), snapshot_id[:8],
                f" (parent {plan.parent_id[:8]})" if plan.parent_id else "")
    return run


@task(name="dump-to-repository", **RETRIED, persist_result=False, cache_policy=NO_CACHE,
      cache_result_in_memory=False)
def dump_to_repository(run: BackupRun, options: BackupRequest, stop: threading.Event | None = None
                       ) -> SnapshotManifest:
    """Stream the dump into the repository as `options` says (handed to the core as it is).
    A retry reuses the chunks already stored. Once `stop` is set the dump ends at its next
    progress report (OperationStopped)."""
    repo = run.repository.open()
    run.catalog().mark_running(run.snapshot_id)
    meter = ProgressMeter("backup", run.engine.describe(), stop=stop)
    estimate = _size_estimate(run)
    artifact = ProgressArtifact("backup", run.engine.describe(), estimate) if estimate else None
    if artifact:
        add_listener(artifact)
    try:
        manifest = backup_database(run.engine, repo, options, snapshot_id=run.snapshot_id, plan=run.plan,
                                   progress=meter)
        meter.finish()
    finally:
        if artifact:
            remove_listener(artifact)
    if manifest.reused_from:
        get_run_logger().info("nothing changed since snapshot %s: no dump, its streams were carried over",
                              manifest.reused_from[:8])
    return manifest


def _size_estimate(run: BackupRun) -> int | None:
    """The parent's logical size, else the newest succeeded snapshot's of this database (catalog)."""
    if run.plan.parent is not None:
        return run.plan.parent.logical_size
    rows = [r for r in run.catalog().snapshots(repository_id=run.repository_id, database=run.engine.database,
                                               status=SnapshotStatus.SUCCEEDED)
            if r.server == run.engine.server_label() and r.logical_size]
    return rows[-1].logical_size if rows else None


def file_tree_request(options: BackupRequest) -> BackupRequest:
    """The options of a backup set's file trees: the run's timeout and --skip-unreadable
    (table globs, checksums and globals are the database's)."""
    return BackupRequest(timeout_minutes=options.timeout_minutes, skip_unreadable=options.skip_unreadable)


def source_request(run: BackupRun, options: BackupRequest, with_trees: bool) -> BackupRequest:
    """The options of the run's source: with file trees, --skip-unreadable is theirs unless
    the source can skip too, so a database source does not refuse it."""
    if with_trees and options.skip_unreadable and not spec(run.engine.engine).capabilities.skip_unreadable:
        return options.model_copy(update={"skip_unreadable": False})
    return options


@task(name="record-backup-failure", persist_result=False, cache_policy=NO_CACHE)
def record_backup_failure(run: BackupRun, error: str) -> None:
    run.catalog().fail_snapshot(run.snapshot_id, error)


@task(name="record-backup-success", persist_result=False, cache_policy=NO_CACHE)
def record_backup_success(run: BackupRun, manifest: SnapshotManifest) -> None:
    run.catalog().finish_snapshot(manifest, run.plan.parent)


