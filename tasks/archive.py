"""Archive tasks: thin, retryable calls into vaultflow.archive (its protocol makes reruns safe)."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import httpx
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.events import emit_event

from blocks.archive import ArchiveRule
from blocks.resolve import resolve_engine, resolve_repository
from tasks.retry_policy import RETRIED
from vaultflow.archive import (
    ArchiveCatalog,
    ArchiveSource,
    ArchiveSpec,
    archive_table,
    cutoff_from,
    find_batch,
    parse_age,
    purge_batches,
    source_from_engine,
    source_from_url,
    unarchive_batch,
)
from vaultflow.engines import is_database_url
from vaultflow.errors import InputError


def resolve_source(ref: str) -> ArchiveSource:
    """A database URL (MySQL/MariaDB too) or a saved engine block name."""
    if is_database_url(ref):
        return source_from_url(ref)
    return source_from_engine(resolve_engine(ref))


POLICY_SLUG = "vaultflow-archive-policy"


def saved_policy_names() -> list[str]:
    """Names of every saved ArchivePolicy block, sorted; empty if the block type was never registered."""
    try:
        with get_client(sync_client=True) as client:
            docs = client.read_block_documents_by_type(block_type_slug=POLICY_SLUG, include_secrets=False)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return []
        raise
    return sorted(d.name for d in docs if d.name and not d.is_anonymous)


def load_policy(name: str) -> ArchiveRule:
    try:
        block = Block.load(f"{POLICY_SLUG}/{name}")
    except ValueError:
        raise InputError(f"no ArchivePolicy block named {name!r}",
                         "create it in the Prefect UI (Blocks) or pass the policy as parameters") from None
    return cast(ArchiveRule, block.rule())  # type: ignore[union-attr]


@task(name="archive-table", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def archive_policy_rows(rule: ArchiveRule, repository: str | None, dry_run: bool) -> dict[str, object]:
    """Archive one policy's table; a retry reconciles what the failed attempt left verified."""
    ref = resolve_repository(repository)
    repo = ref.open()
    source = resolve_source(rule.source)
    spec = ArchiveSpec(table=rule.table, age_column=rule.age_column,
                       cutoff=cutoff_from(parse_age(rule.older_than) if rule.older_than
                                          else timedelta(days=rule.archive_after_days)), policy=rule.name,
                       batch_size=rule.batch_size, where=rule.where, key_columns=list(rule.key_columns))
    report = archive_table(repo, source, spec, dry_run=dry_run, catalog=ArchiveCatalog(ref.catalog_url))
    get_run_logger().info("%s %d row(s) of %s in %s (%d batch(es), %d bytes stored)",
                          "would archive" if dry_run else "archived", report.rows, rule.table,
                          source.describe_target(), len(report.batches), report.stored_bytes)
    return report.as_dict() | {"batch_rows": [b.model_dump(mode="json", include=set(BATCH_COLUMNS))
                                              for b in report.batches]}


BATCH_COLUMNS = ("id", "policy", "table", "rows", "age_min", "age_max", "stored_bytes", "created_at")


@task(name="unarchive-batch", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def unarchive_one(batch: str, repository: str | None, into: str | None, into_table: str | None) -> dict[str, object]:
    """Put one batch's rows back (skipping rows present); a retry inserts only what is missing."""
    ref = resolve_repository(repository)
    repo = ref.open()
    rec = find_batch(repo, batch)
    target = resolve_source(into) if into else _source_of(rec.engine, rec.server, rec.database)
    restore = unarchive_batch(repo, rec, target, table=into_table, catalog=ArchiveCatalog(ref.catalog_url))
    return {"batch": rec.id, "policy": rec.policy, "table": restore.table, "into": restore.into,
            "inserted": restore.inserted, "skipped": restore.skipped}


def _source_of(engine: str, server: str, database: str) -> ArchiveSource:
    """The database a batch came from, from its record (no password: env or ~/.pgpass)."""
    if engine == "sqlite":
        return source_from_url(f"sqlite:///{server.rstrip('/')}/{database}")
    host, _, port = server.rpartition(":")
    scheme = "postgresql" if engine == "postgresql" else "mysql"
    return source_from_url(f"{scheme}://{host}:{port}/{database}")


@task(name="purge-archive-batches", **RETRIED, persist_result=False, cache_policy=NO_CACHE)
def purge_policy_batches(repository: str | None, delete_after_days: int, policy: str | None,
                         dry_run: bool) -> dict[str, object]:
    ref = resolve_repository(repository)
    report = purge_batches(ref.open(), delete_after_days=delete_after_days, policy=policy, dry_run=dry_run,
                           catalog=ArchiveCatalog(ref.catalog_url))
    return report.as_dict() | {"policy": policy or "*", "delete_after_days": delete_after_days}


def archive_resource(source: str, table: str) -> dict[str, str]:
    safe = source.split("://", 1)[-1].split("@", 1)[-1]
    return {"prefect.resource.id": f"vaultflow.archive.{safe}.{table}", "prefect.resource.name": table}


@task(name="publish-archive-summary", persist_result=False, cache_policy=NO_CACHE)
def publish_archive_summary(kind: str, rows: list[dict[str, object]], failures: list[dict[str, str]],
                            notes: list[dict[str, str]] | None = None) -> None:
    """A table artifact of the run and one event per policy: vaultflow.archive.succeeded / failed.
    `notes` ({"policy", "note"}: a policy skipped, or none at all) are table rows without events."""
    table = [{k: v for k, v in r.items() if k != "batch_rows"} for r in rows] + [
        {"policy": f["policy"], "error": f["error"]} for f in failures] + list(notes or [])
    create_table_artifact(key=f"vaultflow-{kind}-summary", table=table or [{"policy": "-", "rows": 0}],
                          description=f"vaultflow {kind}: one row per policy or batch")
    for r in rows:
        emit_event(event=f"vaultflow.{kind}.succeeded",
                   resource=archive_resource(str(r.get("database", r.get("into", ""))), str(r.get("table", "*"))),
                   payload={k: v for k, v in r.items() if k != "batch_rows"})
    for f in failures:
        emit_event(event=f"vaultflow.{kind}.failed", resource=archive_resource(f["source"], f["table"]),
                   payload={"policy": f["policy"], "error": f["error"]})
