"""The catalog: an index of servers, databases and snapshot runs, rebuildable from storage."""

from vaultflow.catalog.catalog import Catalog, DatabaseStats, catalog_url_for_parameters, default_catalog_url
from vaultflow.catalog.models import (
    PHYSICAL_KIND,
    DatabaseRecord,
    DrillRecord,
    DrillStatus,
    ServerRecord,
    SnapshotRecord,
    SnapshotStatus,
)

__all__ = [
    "Catalog",
    "catalog_url_for_parameters",
    "DatabaseStats",
    "DatabaseRecord",
    "DrillRecord",
    "DrillStatus",
    "PHYSICAL_KIND",
    "ServerRecord",
    "SnapshotRecord",
    "SnapshotStatus",
    "default_catalog_url",
]
