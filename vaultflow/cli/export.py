"""`export` a snapshot as its native dump, to a file or as a download link (the `export`
flow); `links` lists the download links handed out."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    VerboseOpt,
    handles_errors,
    open_repo,
    prepare_flow_run,
)
from vaultflow.cli.output import human_bytes, print_json, print_table, stderr, stdout
from vaultflow.errors import InputError


@handles_errors
def export(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id or unique prefix.")],
    to: Annotated[str | None, typer.Option("--to", help="File to write the native dump to.")] = None,
    url: Annotated[bool, typer.Option("--url", help="Upload the dump next to the repository (S3 or Azure) "
                                                    "and print a time-limited download URL.")] = False,
    expires: Annotated[str, typer.Option(help="How long the --url link works (36h, 7d; S3 at most 7d).")] = "24h",
    repo: RepoOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rebuild the native dump (pg_dump archive or SQL script, SQLite file) to a file (no
    Prefect server needed), or as a download link with --url (runs the `export` flow)."""
    from vaultflow.operations.restore import export_snapshot

    if (to is None) == (not url):
        raise InputError("give exactly one of --to FILE and --url", "e.g. vaultflow export 1a2b --to app.sql")
    if url:
        from vaultflow.operations.retention import parse_duration

        parse_duration(expires)  # a malformed duration fails before any run starts
        ref = prepare_flow_run(repo, verbose)
        opened, _ = open_repo(ref)
        opened.require("restore", "a download link")  # a backup key: one line before any run starts
        opened.resolve_snapshot(snapshot)  # an unknown snapshot too
        from flows.export import export as export_flow

        result = export_flow(snapshot=snapshot, repository=ref, expires=expires)
        kind, hint = _export_kind(str(result["format"]))
        if json_out:
            print_json({k: v for k, v in result.items() if k not in ("format", "object_key", "database")}
                       | {"format": kind})
        else:
            stderr.print(f"uploaded {kind} of {result['database']} ({human_bytes(int(str(result['size'])))}) to "
                         f"{result['object']} (not encrypted); the link works until "
                         f"{str(result['expires_at'])[:16].replace('T', ' ')} UTC; restore the download with {hint}",
                         highlight=False)
            print(result["url"])  # asked for on the command line: the one place the URL goes
        return
    opened, _ = open_repo(repo)
    snapshot_id = opened.resolve_snapshot(snapshot)
    assert to is not None
    manifest = export_snapshot(opened, snapshot_id, to)
    kind, hint = _export_kind(manifest.streams[0].format)
    size = os.path.getsize(to)
    if json_out:
        print_json({"snapshot": manifest.id, "file": os.path.abspath(to), "format": kind, "size": size})
    else:
        stdout.print(f"wrote {kind} of {manifest.database} ({human_bytes(size)}) to {to}; restore it with {hint}",
                     highlight=False)


def _export_kind(stream_format: str) -> tuple[str, str]:
    """What an export of a snapshot whose first stream has this format is, and the command that loads it."""
    from vaultflow.engines.registry import spec_for_format

    found = spec_for_format(stream_format)
    export = found.export_format(stream_format) if found is not None else None
    return (export.kind, export.hint) if export is not None else ("dump", "the engine's own tools")


@handles_errors
def links(
    repo: RepoOpt = None,
    all_links: Annotated[bool, typer.Option("--all", help="Also list expired links.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List the download links `export --url` handed out (never their URLs); active ones unless --all."""
    from datetime import UTC, datetime

    from vaultflow.operations.share import list_links

    opened, _ = open_repo(repo)
    now = datetime.now(UTC)
    records = [r for r in list_links(opened) if all_links or r.status(now) == "active"]
    rows = [{"id": r.id, "snapshot": r.snapshot, "object": r.location, "object_key": r.object_key, "size": r.size,
             "created": r.created_at.isoformat(timespec="seconds"),
             "expires": r.expires_at.isoformat(timespec="seconds"),
             "status": r.status(now)} for r in records]
    if json_out:
        print_json(rows)
        return
    print_table(None, ["id", "snapshot", "object", "size", "created", "expires", "status"], [
        (r["id"], str(r["snapshot"])[:8], r["object_key"], human_bytes(int(str(r["size"]))),
         str(r["created"])[:16].replace("T", " "), str(r["expires"])[:16].replace("T", " "), r["status"])
        for r in rows])
