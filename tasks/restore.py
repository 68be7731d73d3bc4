"""Restore and export tasks."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.resolve import resolve_engine, resolve_file_tree, resolve_repository
from tasks.retry_policy import RETRIED
from vaultflow.catalog import Catalog
from vaultflow.operations import share
from vaultflow.operations.restore import check_set_restore, restore_snapshot
from vaultflow.progress import ProgressMeter
from vaultflow.repository import SnapshotManifest
from vaultflow.requests import RestoreRequest

if TYPE_CHECKING:
    from blocks.parameters import EngineChoice, FileTreeChoice, RepositoryChoice


@task(name="restore-snapshot", **RETRIED, persist_result=False,
      cache_policy=NO_CACHE, cache_result_in_memory=False)
def restore_into_target(snapshot: str, target: EngineChoice, repository: RepositoryChoice | None,
                        options: RestoreRequest) -> SnapshotManifest:
    """Restore a snapshot as `options` says (handed to the core as it is); the target
    changes only when the whole snapshot loaded and checked."""
    repo = resolve_repository(repository).open()
    snapshot_id = repo.resolve_snapshot(snapshot)
    engine = resolve_engine(target)
    get_run_logger().info("restoring snapshot %s into %s", snapshot_id[:8], engine.describe())
    meter = ProgressMeter("restore", engine.describe())
    manifest = restore_snapshot(repo, snapshot_id, engine, options, progress=meter)
    meter.finish()
    return manifest


@task(name="check-backup-set-restore", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def check_backup_set_restore(snapshot: str, files_to: list[FileTreeChoice], repository: RepositoryChoice | None,
                             replace: bool) -> list[str]:
    """The file tree snapshot ids of the set to restore into `files_to`, in order; refuses
    (one line) a snapshot without a set, an incomplete set, a count that does not match or
    a non-empty target without `replace`, before anything is restored."""
    repo = resolve_repository(repository).open()
    trees = check_set_restore(repo, repo.resolve_snapshot(snapshot), [resolve_file_tree(t) for t in files_to],
                              replace=replace)
    get_run_logger().info("backup set of %s: %d file tree(s) to restore after the database", snapshot, len(trees))
    return trees


def file_tree_restore_request(options: RestoreRequest) -> RestoreRequest:
    """The options of a set's file tree restores: the run's --replace, owner and timeout."""
    return RestoreRequest(replace=options.replace, owner=options.owner, timeout_minutes=options.timeout_minutes)


@task(name="export-download-link", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def export_download_link(snapshot: str, repository: str | None, expires: timedelta) -> share.DownloadLink:
    """Upload the snapshot's native dump under exports/ and sign a URL valid for `expires`;
    the catalog records where and until when, never the URL. Not persisted: the result holds the URL."""
    resolved = resolve_repository(repository)
    repo = resolved.open()
    snapshot_id = repo.resolve_snapshot(snapshot)
    link = share.export_download_link(repo, snapshot_id, expires)
    Catalog(resolved.catalog_url).record_download_link(snapshot_id=snapshot_id, repository_id=repo.id,
                                                       location=link.location, size=link.size,
                                                       expires_at=link.expires_at)
    get_run_logger().info("exported snapshot %s as %s (%d bytes), link valid until %s", snapshot_id[:8],
                          link.location, link.size, link.expires_at.isoformat(timespec="seconds"))
    return link
