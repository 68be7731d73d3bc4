"""Reading snapshots without a Prefect server: `snapshots`, `show`, `stats`."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, cast

import typer

from vaultflow.catalog import Catalog, SnapshotStatus
from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    handles_errors,
    is_location,
    open_repo,
    require_repo,
)
from vaultflow.cli.output import human_bytes, print_json, print_table, stdout
from vaultflow.repository import Repository, SnapshotManifest
from vaultflow.storage import open_store


@handles_errors
def snapshots(
    repo: RepoOpt = None,
    database: Annotated[str | None, typer.Option(help="Only this database.")] = None,
    status: Annotated[SnapshotStatus | None, typer.Option(help="Only runs in this status.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List snapshot runs from the catalog (no Prefect server needed)."""
    ref = require_repo(repo)
    if is_location(ref):
        config = Repository.read_config(open_store(ref))
        catalog_url = os.environ.get("VAULTFLOW_CATALOG_URL")
    else:
        opened, catalog_url = open_repo(ref)
        config = opened.config
    rows = Catalog(catalog_url).snapshots(repository_id=str(config["id"]), database=database,
                                          status=status)
    if json_out:
        print_json([{
            "id": r.id, "engine": r.engine, "server": r.server, "database": r.database,
            "kind": r.kind, "status": r.status.value, "started": r.started_at,
            "duration_seconds": r.duration_seconds, "logical_size": r.logical_size,
            "stored_size": r.stored_size, "error": r.error,
        } for r in rows])
        return
    if not rows:
        stdout.print("no snapshots in the catalog for this repository "
                      "(if the repository has some, run: vaultflow catalog rebuild)")
        return
    print_table(None, ["id", "engine", "database", "kind", "started", "duration", "logical",
                       "stored", "status"], [
        (r.short_id, r.engine, r.database, r.kind, r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
         f"{r.duration_seconds:.1f}s" if r.duration_seconds is not None else None,
         human_bytes(r.logical_size), human_bytes(r.stored_size), r.status.value)
        for r in rows])


@handles_errors
def show(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id or unique prefix.")],
    repo: RepoOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What one snapshot holds, read from its manifest in the repository (no catalog, no
    Prefect server): source, kind and chain, sizes, tool versions, the database's own
    properties, and every table with its rows and checksum (the names --table takes)."""
    opened, _ = open_repo(repo)
    manifest = opened.load_manifest(opened.resolve_snapshot(snapshot))
    database: dict[str, object] = {}
    for stream in manifest.streams:
        if "database" in stream.meta:  # PostgreSQL: encoding, locale, settings...
            props = json.loads(stream.meta["database"])
            # Setting values may be secrets (app.jwt_secret...): names only.
            props["settings"] = [e.partition("=")[0] for e in props.get("settings", [])]
            props["role_settings"] = [f"{r}: {e.partition('=')[0]}" for r, e in props.get("role_settings", [])]
            database |= props
        database |= {k: stream.meta[k] for k in ("charset", "collation") if k in stream.meta}  # MySQL
    summary: dict[str, object] = {
        "id": manifest.id, "engine": manifest.engine, "server": manifest.server, "database": manifest.database,
        "kind": manifest.kind, "chain": manifest.chain, "parent": manifest.parent,
        "reused_from": manifest.reused_from, "started_at": manifest.started_at.isoformat(),
        "duration_seconds": round(manifest.duration_seconds, 3), "logical_size": manifest.logical_size,
        "stored_size": manifest.stored_size, "table_filter": manifest.table_filter,
        "vaultflow_version": manifest.vaultflow_version, "tool_versions": manifest.tool_versions,
        "database_properties": database, "streams": len(manifest.streams),
        "tables": [{"table": t.qualified, "rows": t.rows, "checksum": t.checksum} for t in manifest.tables],
        "skipped": manifest.skipped.model_dump() if manifest.skipped else None,
        "binlog": manifest.binlog.model_dump() if manifest.binlog else None,
        "backup_set": _backup_set(opened, manifest),
        "base_backup": manifest.base_backup.model_dump(mode="json") if manifest.base_backup else None,
    }
    if json_out:
        print_json(summary)
        return
    for key in ("id", "engine", "server", "database", "kind", "chain", "parent", "reused_from", "started_at"):
        if summary[key] is not None:
            stdout.print(f"{key}: {summary[key]}", highlight=False)
    stdout.print(f"size: {human_bytes(manifest.logical_size)} logical, {human_bytes(manifest.stored_size)} stored "
                 f"in {len(manifest.streams)} stream(s), {manifest.duration_seconds:.1f}s", highlight=False)
    if manifest.table_filter:
        stdout.print(f"table filter: {' '.join(manifest.table_filter)}", highlight=False)
    versions = ", ".join(f"{k} {v}" for k, v in sorted(manifest.tool_versions.items()))
    stdout.print(f"versions: vaultflow {manifest.vaultflow_version}" + (f", {versions}" if versions else ""),
                 highlight=False)
    for key, value in database.items():
        if value not in (None, [], -1):
            stdout.print(f"database {key}: {value}", highlight=False)
    if manifest.base_backup:
        base = manifest.base_backup
        stdout.print(f"base backup of cluster {base.system_identifier} (PostgreSQL {base.server_version}): timeline "
                     f"{base.timeline}, WAL {base.start_lsn} .. {base.stop_lsn}, stopped "
                     f"{base.stop_time.isoformat(sep=' ')} ({base.stop_time_source}); restore with "
                     f"vaultflow pitr restore {manifest.short_id}",
                     highlight=False)
    if manifest.binlog:
        b = manifest.binlog
        stdout.print(f"binlog position: {b.file}:{b.position}" + (f", GTID {b.gtid}" if b.gtid else ""),
                     highlight=False)
    if manifest.skipped:
        more = manifest.skipped.count - len(manifest.skipped.paths)
        stdout.print(f"left out as unreadable (--skip-unreadable): {manifest.skipped.count} entries: "
                     f"{', '.join(manifest.skipped.paths)}" + (f" and {more} more" if more else ""), highlight=False)
    backup_set = summary["backup_set"]
    if isinstance(backup_set, dict):
        state = "complete" if backup_set["complete"] else "INCOMPLETE (a member was never written: its backup failed)"
        stdout.print(f"backup set {str(backup_set['id'])[:8]}: {state}", highlight=False)
        for member in cast(list[dict[str, Any]], backup_set["members"]):
            stdout.print(f"  {member['role']} {str(member['id'])[:8]}: "
                         f"{member.get('source') or 'missing'}", highlight=False)
    print_table(None, ["table", "rows", "checksum"],
                [(t.qualified, t.rows, (t.checksum or "")[:24]) for t in manifest.tables])


def _backup_set(repo: Repository, manifest: SnapshotManifest) -> dict[str, object] | None:
    """The snapshot's backup set as its members' manifests tell it: each member's role
    (database, then file tree n in the order given), id and source, or missing."""
    if not manifest.set_members:
        return None
    present = set(repo.snapshot_ids())
    members: list[dict[str, object]] = []
    for n, member in enumerate(manifest.set_members):
        role = "database" if n == 0 else f"file tree {n}"
        found = repo.load_manifest(member) if member in present else None
        members.append({"role": role, "id": member, "present": found is not None,
                        "source": f"{found.engine} {found.server}/{found.database}" if found else None})
    return {"id": manifest.set_members[0], "complete": all(m["present"] for m in members), "members": members}


@handles_errors
def stats(
    repo: RepoOpt = None,
    database: Annotated[str | None, typer.Option(help="Only this database.")] = None,
    json_out: JsonOpt = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="The backup report as CSV: outcomes, sizes, last "
                                                        "backup, last proven restorable, RPO met, trends.")] = False,
    rpo_hours: Annotated[float, typer.Option(help="With --csv: a backup older than this misses the RPO.")] = 26,
) -> None:
    """Per database: runs, outcomes, sizes, dedup ratio, last backup, last proven restorable (catalog)."""
    ref = require_repo(repo)
    if is_location(ref):
        repository_id = str(Repository.read_config(open_store(ref))["id"])
        catalog_url = os.environ.get("VAULTFLOW_CATALOG_URL")
    else:
        opened, catalog_url = open_repo(ref)
        repository_id = opened.id
    if csv_out:
        from vaultflow.catalog.report import backup_report, report_csv

        report = backup_report(Catalog(catalog_url), repository_id=repository_id, database=database,
                               rpo_hours=rpo_hours)
        typer.echo(report_csv(report), nl=False)
        return
    rows = Catalog(catalog_url).stats(repository_id=repository_id, database=database)
    if json_out:
        print_json([r.as_dict() for r in rows])
        return
    print_table(None, ["engine", "server", "database", "runs", "ok", "failed", "logical", "stored", "ratio",
                       "last run", "last status", "last proven restorable", "restore time"], [
        (r.engine, r.server, r.database, r.total, r.succeeded, r.failed, human_bytes(r.logical_bytes),
         human_bytes(r.stored_bytes), r.dedup_ratio,
         r.last_run.strftime("%Y-%m-%d %H:%M") if r.last_run else None, r.last_status,
         r.last_proven_restorable.strftime("%Y-%m-%d %H:%M") if r.last_proven_restorable else "never drilled"
         if r.last_drill is None else "no passed drill",
         f"{r.recovery_seconds:.1f}s" if r.recovery_seconds is not None else None) for r in rows])
