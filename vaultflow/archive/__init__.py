"""Archival of aged rows: Parquet batches in the repository, verified before any delete.

Core only (no Prefect). See archiver.py for the protocol and docs/design.md (Archival).
"""

from vaultflow.archive.archiver import (
    ArchiveReport,
    ArchiveSpec,
    PurgeReport,
    archive_table,
    cutoff_from,
    default_policy,
    parse_age,
    purge_batches,
    read_batch,
    unarchive_batch,
)
from vaultflow.archive.batches import BatchRecord, BatchStatus, find_batch, list_batches, policy_slug
from vaultflow.archive.catalog import ArchiveBatchRow, ArchiveCatalog
from vaultflow.archive.sources import (
    ArchiveSource,
    source_from_engine,
    source_from_url,
)

__all__ = [
    "ArchiveBatchRow",
    "ArchiveCatalog",
    "ArchiveReport",
    "ArchiveSource",
    "ArchiveSpec",
    "BatchRecord",
    "BatchStatus",
    "PurgeReport",
    "archive_table",
    "cutoff_from",
    "default_policy",
    "find_batch",
    "list_batches",
    "parse_age",
    "policy_slug",
    "purge_batches",
    "read_batch",
    "source_from_engine",
    "source_from_url",
    "unarchive_batch",
]
