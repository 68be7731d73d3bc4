"""Restore and export tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.resolve import resolve_engine, resolve_repository
from tasks.retry_policy import RETRIED
from vaultflow.operations.restore import restore_snapshot
from vaultflow.progress import ProgressMeter
from vaultflow.repository import SnapshotManifest
from vaultflow.requests import RestoreRequest

if TYPE_CHECKING:
    from blocks.parameters import EngineChoice, RepositoryChoice


@task(name="restore-snapshot", **RETRIED, persist_result=False,
      cache_policy=NO_CACHE, cache_result_in_memory=False)
def restore_into_target(snapshot: str, target: EngineChoice, repository: RepositoryChoice | None,
                        options: RestoreRequest) -> SnapshotManifest:
    """Restore a snapshot; the target changes only when the whole snapshot loaded and checked."""
    repo = resolve_repository(repository).open()
    snapshot_id = repo.resolve_snapshot(snapshot)
    engine = resolve_engine(target)
    get_run_logger().info("restoring snapshot %s into %s", snapshot_id[:8], engine.describe())
    meter = ProgressMeter("restore", engine.describe())
    manifest = restore_snapshot(repo, snapshot_id, engine, replace=options.replace, no_owner=not options.owner,
                                timeout=options.timeout_seconds, progress=meter, jobs=options.jobs,
                                tables=options.tables or None, include_globals=options.include_globals,
                                server_locale=options.server_locale)
    meter.finish()
    return manifest
