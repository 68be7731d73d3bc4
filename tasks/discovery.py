"""Discovery task: one server's databases, filtered and recorded in the catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.resolve import resolve_repository, resolve_server
from tasks.retry_policy import RETRIED
from vaultflow.catalog import Catalog
from vaultflow.discovery import DiscoveredServer, discover_server

if TYPE_CHECKING:
    from blocks.parameters import RepositoryChoice
    from vaultflow.engines.postgres.window import ArchiveLag


@task(name="discover-server", task_run_name="discover-{server}", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def discover_databases(server: str, include: list[str], exclude: list[str], include_system: bool,
                       catalog_url: str | None) -> DiscoveredServer:
    """List `server` (block name or server URL); patterns that match nothing are logged as warnings."""
    engine = resolve_server(server)
    found = discover_server(engine, server, include=include or None, exclude=exclude or None,
                            include_system=include_system, catalog=Catalog(catalog_url))
    logger = get_run_logger()
    for warning in found.warnings:
        logger.warning("%s: %s", server, warning)
    logger.info("%s (%s %s): %d database(s): %s", server, found.engine, found.server, len(found.databases),
                ", ".join(found.databases) or "-")
    return found


@task(name="find-coverage-gaps", persist_result=False, cache_policy=NO_CACHE)
def coverage_gaps(within_hours: float, catalog_url: str | None) -> list[dict[str, object]]:
    """Databases of the catalog without a successful backup in the last `within_hours` hours."""
    return Catalog(catalog_url).coverage(timedelta(hours=within_hours))


@task(name="check-wal-archives", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def wal_archive_lags(repository: RepositoryChoice, lag_minutes: float) -> list[ArchiveLag]:
    """Per PostgreSQL cluster archiving into the repository: the age of its newest archived WAL
    segment against `lag_minutes` (the RPO), and the gaps in its archive."""
    from vaultflow.engines.postgres.pitr import windows  # psycopg: only when a repository is checked
    from vaultflow.engines.postgres.window import archive_lags

    found = archive_lags(windows(resolve_repository(repository).open()), timedelta(minutes=lag_minutes),
                         datetime.now(UTC))
    logger = get_run_logger()
    for lag in found:
        (logger.warning if lag.lagging or lag.gaps else logger.info)(lag.detail())
    return found
