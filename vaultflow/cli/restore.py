"""`restore` a snapshot into a database (the `restore` flow)."""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer

from vaultflow.cli.app import (
    FilesToOpt,
    JsonOpt,
    RepoOpt,
    VerboseOpt,
    check_database_url,
    check_file_tree_url,
    handles_errors,
    prepare_flow_run,
    request_option,
)
from vaultflow.cli.output import print_json, progress_bar, stdout
from vaultflow.requests import RestoreRequest


@handles_errors
def restore(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id or unique prefix.")],
    target: Annotated[str, typer.Argument(help="Engine block name or database URL.")],
    repo: RepoOpt = None,
    replace: bool = request_option(RestoreRequest, "replace"),
    owner: bool = request_option(RestoreRequest, "owner"),
    timeout_minutes: int = request_option(RestoreRequest, "timeout_minutes"),
    jobs: int = request_option(RestoreRequest, "jobs"),
    table: list[str] | None = request_option(RestoreRequest, "tables", "--table"),
    globals_: bool = request_option(RestoreRequest, "include_globals", "--globals/--no-globals"),
    server_locale: bool = request_option(RestoreRequest, "server_locale"),
    files_to: FilesToOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Restore a snapshot into a database (runs the `restore` flow)."""
    options = RestoreRequest(replace=replace, owner=owner, timeout_minutes=timeout_minutes, jobs=jobs,
                             tables=table or [], include_globals=globals_, server_locale=server_locale)
    check_database_url(target, "restore")
    for dest in files_to or []:
        check_file_tree_url(dest, "restore")
    ref = prepare_flow_run(repo, verbose)
    from flows.restore import restore as restore_flow

    with progress_bar(not json_out):
        result = restore_flow(snapshot=snapshot, target=target, repository=ref, options=options,
                              files_to=list(files_to or []))
    if json_out:
        print_json(result)
        return
    stdout.print(f"restored snapshot {result['snapshot']} ({result['database']}) into {target}", highlight=False)
    for row in cast(list[dict[str, Any]], result.get("files") or []):
        stdout.print(f"restored file tree snapshot {row['snapshot']} ({row['database']}) into {row['restored_into']}",
                     highlight=False)
