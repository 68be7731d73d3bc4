"""`drill`: prove snapshots restore (the `validate-restore` and `drill-latest` flows)."""

from __future__ import annotations

from typing import Annotated

import typer

from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    VerboseOpt,
    handles_errors,
    prepare_flow_run,
)
from vaultflow.cli.output import print_json, progress_bar, stdout
from vaultflow.errors import InputError


@handles_errors
def drill(
    database: Annotated[str | None, typer.Option(help="Drill the newest snapshot of this database.")] = None,
    snapshot: Annotated[str | None, typer.Option(help="Drill this snapshot (id or unique prefix).")] = None,
    scratch: Annotated[str | None, typer.Option(
        help="Scratch server: engine block name or server URL (postgresql://user@host:port, sqlite:///dir/).")
    ] = None,
    suites: Annotated[str | None, typer.Option(help="Directory of expectation suites (JSON/YAML).")] = None,
    repo: RepoOpt = None,
    max_concurrent: Annotated[int, typer.Option(help="Drills at once when drilling every database.")] = 2,
    timeout_minutes: Annotated[int, typer.Option(help="Kill each restore after this long.")] = 360,
    jobs: Annotated[int, typer.Option(help="Tables loaded and checked at once (PostgreSQL).")] = 1,
    scan_constraints: Annotated[bool, typer.Option(
        help="Also scan for default expectations the restored schema enforces (NOT NULL, unique).")] = False,
    server_locale: Annotated[bool, typer.Option(
        help="Create scratch databases with the server's default encoding and locale, not the snapshot's.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Prove snapshots restore: restore into a scratch database, check rows, checksums, schema
    objects and expectation suites, drop it. Without --database/--snapshot: the newest snapshot
    of every database (runs `validate-restore` / `drill-latest`). Exit 1 naming failed checks."""
    if database and snapshot:
        raise InputError("--database and --snapshot are exclusive", "give one of them, or neither to drill all")
    if scratch and "://" in scratch:
        from blocks.resolve import scratch_from_url

        scratch_from_url(scratch)  # a password in it stops here, before a flow run stores it
    if suites:
        from vaultflow.drill import load_suites

        load_suites(suites)  # syntax errors stop here; tables and columns are checked per snapshot
    ref = prepare_flow_run(repo, verbose)
    from flows.drill import drill_latest, validate_restore

    with progress_bar(not json_out):
        if database or snapshot:
            rows = [validate_restore(snapshot=snapshot, database=database, repository=ref, scratch=scratch,
                                     suites=suites, timeout_minutes=timeout_minutes, jobs=jobs,
                                     scan_constraints=scan_constraints, server_locale=server_locale)]
        else:
            rows = drill_latest(repository=ref, scratch=scratch, suites=suites, max_concurrent=max_concurrent,
                                timeout_minutes=timeout_minutes, jobs=jobs, scan_constraints=scan_constraints,
                                server_locale=server_locale)
    if json_out:
        print_json(rows)
        return
    for row in rows:
        stdout.print(str(row["summary"]), highlight=False)
