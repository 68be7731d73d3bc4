"""Artifacts and events that tell the Prefect UI and automations what happened."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import cast
from uuid import UUID

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from vaultflow.catalog import Catalog
from vaultflow.drill import DrillReport
from vaultflow.errors import VaultflowError
from vaultflow.progress import ProgressReport
from vaultflow.repository import SnapshotManifest

# Event resources. Every vaultflow event names the database(s) and server(s) it concerns as
# related resources (roles "database" and "server"); backup/restore events are *about* one
# database (primary resource vaultflow.database.<engine>.<server>.<database>), prune/verify
# events about a repository (vaultflow.repository.<block name or location>).


def error_line(exc: BaseException) -> str:
    return exc.line() if isinstance(exc, VaultflowError) else f"{type(exc).__name__}: {exc}"


def database_resource(engine: str, server: str, database: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"vaultflow.database.{engine}.{server}.{database}",
        "prefect.resource.name": database,
        "vaultflow.engine": engine,
        "vaultflow.server": server,
    }


def related_resources(databases: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    """(engine, server, database) triples as related `database` and `server` resources."""
    related: dict[str, dict[str, str]] = {}
    for engine, server, database in databases:
        db = database_resource(engine, server, database) | {"prefect.resource.role": "database"}
        related.setdefault(db["prefect.resource.id"], db)
        srv = {"prefect.resource.id": f"vaultflow.server.{engine}.{server}", "prefect.resource.role": "server",
               "prefect.resource.name": server, "vaultflow.engine": engine}
        related.setdefault(srv["prefect.resource.id"], srv)
    return list(related.values())


def repository_resource(ref: str) -> dict[str, str]:
    return {"prefect.resource.id": f"vaultflow.repository.{ref}", "prefect.resource.name": ref}


def snapshot_row(m: SnapshotManifest, parent: SnapshotManifest | None = None) -> dict[str, object]:
    return {
        "snapshot": m.short_id, "engine": m.engine, "server": m.server, "database": m.database,
        "kind": m.kind, "started": m.started_at.isoformat(timespec="seconds"),
        "duration_s": round(m.duration_seconds, 2), "logical_bytes": m.logical_size,
        "stored_bytes": m.added_size(parent), "tables": len(m.tables),
    }



def base_backup_fields(m: SnapshotManifest) -> dict[str, object]:
    """Where a base backup sits in its cluster's WAL (nothing for a logical snapshot)."""
    b = m.base_backup
    if b is None:
        return {}
    return {"physical": True, "system_identifier": str(b.system_identifier), "timeline": b.timeline,
            "start_lsn": b.start_lsn, "stop_lsn": b.stop_lsn, "stop_time": b.stop_time.isoformat(timespec="seconds")}


@task(name="publish-backup-summary", persist_result=False, cache_policy=NO_CACHE)
def publish_backup_summary(manifest: SnapshotManifest, parent: SnapshotManifest | None) -> None:
    what = "Base backup of the cluster" if manifest.base_backup else f"Backup of {manifest.engine} database " \
        f"{manifest.database}"
    create_table_artifact(
        key="vaultflow-backup-summary", table=[snapshot_row(manifest, parent) | base_backup_fields(manifest)],
        description=f"{what} on {manifest.server}",
    )
    emit_event(
        event="vaultflow.backup.succeeded",
        resource=database_resource(manifest.engine, manifest.server, manifest.database),
        related=related_resources([(manifest.engine, manifest.server, manifest.database)]),
        payload={"snapshot": manifest.id, "logical_bytes": manifest.logical_size,
                 "stored_bytes": manifest.added_size(parent), "kind": manifest.kind} | base_backup_fields(manifest),
    )


@task(name="publish-backup-failure", persist_result=False, cache_policy=NO_CACHE)
def publish_backup_failure(engine: str, server: str, database: str, error: str) -> None:
    emit_event(
        event="vaultflow.backup.failed",
        resource=database_resource(engine, server, database),
        related=related_resources([(engine, server, database)]),
        payload={"error": error},
    )


@task(name="publish-source-failure", persist_result=False, cache_policy=NO_CACHE)
def publish_source_failure(source: str, error: str) -> None:
    """vaultflow.backup.failed before the source resolved (no such block, bad URL, no repository)."""
    emit_event(event="vaultflow.backup.failed",
               resource={"prefect.resource.id": f"vaultflow.source.{source}", "prefect.resource.name": source},
               payload={"error": error})


@task(name="publish-repository-event", persist_result=False, cache_policy=NO_CACHE)
def publish_repository_event(thing: str, outcome: str, repository: str, payload: dict[str, object],
                             databases: list[tuple[str, str, str]] | None = None) -> None:
    """vaultflow.<thing>.<outcome> about a repository (prune, verify), naming the databases concerned."""
    emit_event(event=f"vaultflow.{thing}.{outcome}", resource=repository_resource(repository),
               related=related_resources(databases or []), payload=payload)


@task(name="publish-snapshots-deleted", persist_result=False, cache_policy=NO_CACHE)
def publish_snapshots_deleted(repository: str, manifests: list[SnapshotManifest], deleted_by: str) -> None:
    """One vaultflow.snapshot.deleted per snapshot whose manifest `deleted_by` (forget, retention)
    removed: about the repository, naming the snapshot's database and server."""
    for m in manifests:
        emit_event(event="vaultflow.snapshot.deleted", resource=repository_resource(repository),
                   related=related_resources([(m.engine, m.server, m.database)]),
                   payload={"snapshot": m.id, "engine": m.engine, "server": m.server, "database": m.database,
                            "kind": m.kind, "taken": m.started_at.isoformat(timespec="seconds"),
                            "deleted_by": deleted_by})


@task(name="publish-export-created", persist_result=False, cache_policy=NO_CACHE)
def publish_export_created(repository: str, manifest: SnapshotManifest, object_key: str, location: str,
                           size: int, expires_at: datetime) -> None:
    """vaultflow.export.created about the repository: what was uploaded and until when its link
    works. Takes no URL: the signature is a bearer credential."""
    emit_event(event="vaultflow.export.created", resource=repository_resource(repository),
               related=related_resources([(manifest.engine, manifest.server, manifest.database)]),
               payload={"snapshot": manifest.id, "database": manifest.database, "object_key": object_key,
                        "object": location, "size": size, "expires_at": expires_at.isoformat()})


@task(name="publish-restore-summary", persist_result=False, cache_policy=NO_CACHE)
def publish_restore_summary(manifest: SnapshotManifest, target: str) -> None:
    row = snapshot_row(manifest) | {"restored_into": target}
    create_table_artifact(key="vaultflow-restore-summary", table=[row],
                          description=f"Restore of snapshot {manifest.short_id}")
    emit_event(event="vaultflow.restore.succeeded",
               resource=database_resource(manifest.engine, manifest.server, manifest.database),
               related=related_resources([(manifest.engine, manifest.server, manifest.database)]),
               payload={"snapshot": manifest.id, "target": target})


def without_password(ref: str) -> str:
    """A target as typed, with any password in a URL replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in ref:
        return ref
    try:
        parts = urlsplit(ref)
        if parts.password is None:
            return ref
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return ref.split("://", 1)[0] + "://***"
    return urlunsplit(parts._replace(netloc=netloc))


@task(name="publish-restore-failure", persist_result=False, cache_policy=NO_CACHE)
def publish_restore_failure(snapshot: str, target: str, error: str) -> None:
    """vaultflow.restore.failed naming the target (password-free) and the error line."""
    label = without_password(target)
    emit_event(event="vaultflow.restore.failed",
               resource={"prefect.resource.id": f"vaultflow.target.{label}", "prefect.resource.name": label},
               payload={"snapshot": snapshot, "target": label, "error": error})


@task(name="publish-stats", persist_result=False, cache_policy=NO_CACHE)
def publish_stats(catalog_url: str | None, repository_id: str) -> None:
    """The per-database backup report (vaultflow.catalog.report) as an artifact."""
    from vaultflow.catalog.report import backup_report, report_records

    rows = report_records(backup_report(Catalog(catalog_url), repository_id=repository_id))
    create_table_artifact(key="vaultflow-stats", table=rows or [{"database": "-"}],
                          description="Backups per database: outcomes, sizes, last backup, last proven "
                                      "restorable, RPO met, size and duration trend")


def drill_markdown(report: DrillReport) -> str:
    """The drill as markdown: verdict, recovery time, and every check (failures first)."""
    verdict = "PASSED" if report.passed else "FAILED"
    n = report.counts()
    lines = [
        f"# Restore drill {verdict}: {report.database}",
        "",
        f"- snapshot `{report.short_id}` of {report.engine} database `{report.database}` on {report.server}, "
        f"taken {report.snapshot_taken.isoformat(timespec='seconds')}",
        f"- restored into scratch `{report.scratch_database}` on {report.scratch_server} "
        f"({'dropped' if report.scratch_dropped else '**NOT dropped: drop it by hand**'})",
        f"- restore time (recovery): {_seconds(report.restore_seconds)}; checks: {_seconds(report.checks_seconds)}",
        f"- checks: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped",
    ]
    if report.error:
        lines += ["", f"**Error:** {report.error}"]
    if report.checks:
        lines += ["", "| status | check | object | what | expected | observed | suite |",
                  "|---|---|---|---|---|---|---|"]
        order = {"failed": 0, "skipped": 1, "passed": 2}
        for c in sorted(report.checks, key=lambda c: order[c.status]):
            cells = [c.status.upper() if c.status == "failed" else c.status, c.check, c.object, c.name,
                     c.expected or "", c.observed or "", c.suite or ""]
            lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "-"


def drill_row(report: DrillReport) -> dict[str, object]:
    n = report.counts()
    return {"snapshot": report.short_id, "engine": report.engine, "server": report.server,
            "database": report.database, "passed": report.passed, "restore_s": report.restore_seconds,
            "checks_s": report.checks_seconds, "checks_passed": n["passed"], "checks_failed": n["failed"],
            "checks_skipped": n["skipped"], "scratch": report.scratch_database, "error": report.error,
            "summary": report.summary()}


@task(name="publish-drill-report", persist_result=False, cache_policy=NO_CACHE)
def publish_drill_report(report: DrillReport) -> None:
    """Markdown artifact with every check, and vaultflow.drill.succeeded / .failed."""
    create_markdown_artifact(key="vaultflow-drill", markdown=drill_markdown(report),
                             description=f"Restore drill of snapshot {report.short_id} ({report.database})")
    failed = report.failures()
    emit_event(
        event="vaultflow.drill.succeeded" if report.passed else "vaultflow.drill.failed",
        resource=database_resource(report.engine, report.server, report.database),
        payload={"snapshot": report.snapshot_id, "scratch_server": report.scratch_server,
                 "restore_seconds": report.restore_seconds, "checks_seconds": report.checks_seconds,
                 "checks": report.counts(), "error": report.error,
                 "failed_checks": [c.line() for c in failed[:20]], "summary": report.summary()},
    )


class ProgressArtifact:
    """A progress listener that keeps one Prefect progress artifact of a long stream current.

    The percentage is bytes read against `estimate` (the previous snapshot's logical size),
    capped at 99 until the stream is done; updates go out at most every `every` seconds.
    A failed update is logged and ignored: progress never fails a dump.
    """

    def __init__(self, operation: str, subject: str, estimate: int, every: float = 5.0) -> None:
        self.operation, self.subject, self.estimate, self.every = operation, subject, max(estimate, 1), every
        self._last = time.monotonic()
        self.artifact_id = cast(UUID, create_progress_artifact(
            progress=0.0, key=f"vaultflow-{operation}-progress",
            description=f"{operation} of {subject} (against the last snapshot's {estimate} bytes)"))

    def __call__(self, report: ProgressReport) -> None:
        if (report.operation, report.subject) != (self.operation, self.subject):
            return
        now = time.monotonic()
        if not report.done and now - self._last < self.every:
            return
        self._last = now
        progress = 100.0 if report.done else min(99.0, 100.0 * report.bytes_read / self.estimate)
        try:
            update_progress_artifact(self.artifact_id, round(progress, 1))
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            logging.getLogger(__name__).debug("progress artifact update failed: %s", exc)
