"""`export` a snapshot as its native dump, to a file or as a download link."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from vaultflow.catalog import Catalog
from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    handles_errors,
    open_repo,
)
from vaultflow.cli.output import human_bytes, print_json, stderr, stdout
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
) -> None:
    """Rebuild the native dump (pg_dump archive or SQL script, SQLite file) to a file, or as a
    download link with --url; no Prefect server needed."""
    from vaultflow.operations.restore import export_snapshot

    if (to is None) == (not url):
        raise InputError("give exactly one of --to FILE and --url", "e.g. vaultflow export 1a2b --to app.sql")
    opened, catalog_url = open_repo(repo)
    snapshot_id = opened.resolve_snapshot(snapshot)
    if url:
        from vaultflow.operations.retention import parse_duration
        from vaultflow.operations.share import export_download_link

        link = export_download_link(opened, snapshot_id, parse_duration(expires))
        # The catalog keeps where and until when, never the signed URL.
        Catalog(catalog_url).record_download_link(snapshot_id=snapshot_id, repository_id=opened.id,
                                                  location=link.location, size=link.size,
                                                  expires_at=link.expires_at)
        kind, hint = _export_kind(link.manifest.streams[0].format)
        if json_out:
            print_json({"snapshot": snapshot_id, "object": link.location, "format": kind, "size": link.size,
                        "url": link.url, "expires_at": link.expires_at.isoformat()})
        else:
            stderr.print(f"uploaded {kind} of {link.manifest.database} ({human_bytes(link.size)}) to {link.location}"
                         f" (not encrypted); the link works until {link.expires_at:%Y-%m-%d %H:%M} UTC; restore "
                         f"the download with {hint}", highlight=False)
            print(link.url)
        return
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
