"""`restore` a snapshot into a database (the `restore` flow)."""

from __future__ import annotations

from typing import Annotated

import typer

from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    VerboseOpt,
    check_database_url,
    handles_errors,
    prepare_flow_run,
)
from vaultflow.cli.output import print_json, progress_bar, stdout


@handles_errors
def restore(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id or unique prefix.")],
    target: Annotated[str, typer.Argument(help="Engine block name or database URL.")],
    repo: RepoOpt = None,
    replace: Annotated[bool, typer.Option(help="Swap out a target that already has tables.")] = False,
    no_owner: Annotated[bool, typer.Option(help="Skip ownership and grants.")] = False,
    timeout_minutes: Annotated[int, typer.Option(help="Kill the restore after this long.")] = 360,
    jobs: Annotated[int, typer.Option(help="Tables loaded at once (PostgreSQL).")] = 1,
    table: Annotated[list[str] | None,
                     typer.Option(help="Restore only these tables' rows (schema.name; name for MySQL).")] = None,
    globals_: Annotated[bool, typer.Option("--globals", help="First create the snapshot's roles/users.")] = False,
    server_locale: Annotated[bool, typer.Option(
        help="Create the database with the server's default encoding and locale, not the snapshot's.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Restore a snapshot into a database (runs the `restore` flow)."""
    check_database_url(target, "restore")
    ref = prepare_flow_run(repo, verbose)
    from flows.restore import restore as restore_flow

    with progress_bar(not json_out):
        result = restore_flow(snapshot=snapshot, target=target, repository=ref, replace=replace,
                              no_owner=no_owner, timeout_minutes=timeout_minutes, jobs=jobs, tables=table or [],
                              include_globals=globals_, server_locale=server_locale)
    if json_out:
        print_json(result)
    else:
        stdout.print(f"restored snapshot {result['snapshot']} ({result['database']}) into {target}",
                     highlight=False)
