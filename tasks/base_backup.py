"""Base backup tasks: open a physical run in the catalog, stream pg_basebackup into the repository
(the core's `take_base_backup`, as it is), close the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.resolve import RepositoryRef, resolve_repository, resolve_server
from tasks.backup import current_flow_run_id
from tasks.reporting import ProgressArtifact
from tasks.retry_policy import RETRIED
from vaultflow.catalog import PHYSICAL_KIND, Catalog, SnapshotStatus
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.pitr import CLUSTER_DATABASE, take_base_backup
from vaultflow.errors import InputError
from vaultflow.progress import ProgressMeter, add_listener, remove_listener
from vaultflow.repository import SnapshotManifest, new_object_id

if TYPE_CHECKING:
    from blocks.parameters import RepositoryChoice


@dataclass(frozen=True)
class BaseBackupRun:
    """What the later tasks of one base backup run need; the snapshot id is fixed for retries."""

    engine: PostgresEngine
    repository: RepositoryRef
    repository_id: str
    snapshot_id: str

    def catalog(self) -> Catalog:
        return Catalog(self.repository.catalog_url)


@task(name="open-base-backup-run", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def open_base_backup_run(source: str, repository: RepositoryChoice | None) -> BaseBackupRun:
    """Resolve the server (PostgresServer block or postgresql:// URL) and the repository, check the
    passphrase, record the run Pending (kind `physical`, database `(cluster)`)."""
    engine = resolve_server(source)
    if not isinstance(engine, PostgresEngine):
        raise InputError(f"{engine.describe()} is not PostgreSQL; base backups are PostgreSQL's",
                         "give a postgresql://user@host:port server or a PostgresServer block")
    ref = resolve_repository(repository)
    repo = ref.open()
    run = BaseBackupRun(engine=engine, repository=ref, repository_id=repo.id, snapshot_id=new_object_id())
    run.catalog().start_snapshot(
        snapshot_id=run.snapshot_id, chain=run.snapshot_id, repository_id=repo.id,
        repository=repo.store.describe(), engine=engine.engine, server=engine.server_label(),
        database=CLUSTER_DATABASE, kind=PHYSICAL_KIND, flow_run_id=current_flow_run_id(), status=SnapshotStatus.PENDING)
    get_run_logger().info("base backup of %s into %s as snapshot %s", engine.server_label(), repo.store.describe(),
                          run.snapshot_id[:8])
    return run


@task(name="take-base-backup", **RETRIED, persist_result=False, cache_policy=NO_CACHE,
      cache_result_in_memory=False)
def stream_base_backup(run: BaseBackupRun, new_chain: bool, archive_check: bool, archive_wait_seconds: float,
                       timeout_minutes: int) -> SnapshotManifest:
    """pg_basebackup into the repository as one snapshot (see `take_base_backup`); a retry keeps the
    snapshot id and reuses the chunks already stored."""
    repo = run.repository.open()
    run.catalog().mark_running(run.snapshot_id)
    meter = ProgressMeter("base-backup", run.engine.server_label())
    estimate = _size_estimate(run)
    artifact = ProgressArtifact("base-backup", run.engine.server_label(), estimate) if estimate else None
    if artifact:
        add_listener(artifact)
    try:
        manifest = take_base_backup(run.engine, repo, snapshot_id=run.snapshot_id, archive_check=archive_check,
                                    archive_wait=archive_wait_seconds, timeout=timeout_minutes * 60.0,
                                    progress=meter, new_chain=new_chain)
        meter.finish()
    finally:
        if artifact:
            remove_listener(artifact)
    info = manifest.base_backup
    assert info is not None
    get_run_logger().info("base backup %s of cluster %d: WAL %s .. %s on timeline %d, %s (%d bytes read)",
                          manifest.short_id, info.system_identifier, info.start_lsn, info.stop_lsn, info.timeline,
                          manifest.kind, manifest.logical_size)
    return manifest


def _size_estimate(run: BaseBackupRun) -> int | None:
    """The newest succeeded base backup's logical size of this server (catalog), for the progress bar."""
    rows = [r for r in run.catalog().snapshots(repository_id=run.repository_id, database=CLUSTER_DATABASE,
                                               status=SnapshotStatus.SUCCEEDED)
            if r.server == run.engine.server_label() and r.logical_size]
    return rows[-1].logical_size if rows else None


@task(name="record-base-backup-success", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def record_base_backup_success(run: BaseBackupRun, manifest: SnapshotManifest) -> SnapshotManifest | None:
    """The catalog row becomes Succeeded with the manifest's chain and sizes; returns the parent
    (the chain's previous base backup) whose chunks it did not store again, read from the repository
    (retried like every storage read; the catalog update is idempotent)."""
    parent = run.repository.open().load_manifest(manifest.parent) if manifest.parent else None
    run.catalog().finish_snapshot(manifest, parent)
    return parent


@task(name="record-base-backup-failure", persist_result=False, cache_policy=NO_CACHE)
def record_base_backup_failure(run: BaseBackupRun, error: str) -> None:
    run.catalog().fail_snapshot(run.snapshot_id, error)
