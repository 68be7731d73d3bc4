"""`backup`: one database (the `backup` flow) or every database of a server (`backup-fleet`)."""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer

from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    VerboseOpt,
    check_database_url,
    handles_errors,
    prepare_flow_run,
)
from vaultflow.cli.output import human_bytes, print_json, progress_bar, stderr, stdout
from vaultflow.errors import InputError


@handles_errors
def backup(
    source: Annotated[str, typer.Argument(help="Engine block name or database URL (with --all-databases: "
                                               "a server URL such as mysql://user@host:port).")],
    repo: RepoOpt = None,
    kind: Annotated[str, typer.Option(help="Backup kind.")] = "full",
    all_databases: Annotated[bool, typer.Option(help="Back up every database of the server (backup-fleet).")] = False,
    include: Annotated[list[str] | None, typer.Option(help="With --all-databases: glob of database names.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="With --all-databases: glob of names to skip.")] = None,
    max_per_server: Annotated[int, typer.Option(help="With --all-databases: dumps at once on the server.")] = 2,
    no_table_checksums: Annotated[bool, typer.Option(help="Skip per-table content checksums.")] = False,
    timeout_minutes: Annotated[int, typer.Option(help="Kill the dump after this long.")] = 360,
    jobs: Annotated[int, typer.Option(help="Tables dumped at once (PostgreSQL).")] = 1,
    include_table: Annotated[list[str] | None, typer.Option(help="Glob of tables whose rows to back up.")] = None,
    exclude_table: Annotated[list[str] | None, typer.Option(help="Glob of tables whose rows to skip.")] = None,
    repair: Annotated[bool, typer.Option(help="Rewrite every chunk, healing ones verify found damaged.")] = False,
    globals_: Annotated[bool, typer.Option("--globals", help="Also store the server roles/users, grants.")] = False,
    globals_passwords: Annotated[bool, typer.Option(help="Keep password hashes in --globals.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Back up one database (runs the `backup` flow), or all of a server's (`backup-fleet`)."""
    if all_databases:
        _fleet_backup(source, repo, kind, include or [], exclude or [], max_per_server, timeout_minutes, globals_,
                      json_out, verbose)
        return
    if include or exclude:
        raise InputError("--include/--exclude choose databases and need --all-databases",
                         "add --all-databases, or use --include-table/--exclude-table for tables")
    check_database_url(source, "backup")
    ref = prepare_flow_run(repo, verbose)
    from flows.backup import backup as backup_flow

    with progress_bar(not json_out):
        # The flow validates `kind` itself (one list of kinds, shown in the UI form too).
        result = backup_flow(source=source, repository=ref, kind=cast(Any, kind),
                             table_checksums=not no_table_checksums,
                             timeout_minutes=timeout_minutes, jobs=jobs, include_tables=include_table or [],
                             exclude_tables=exclude_table or [], repair=repair, include_globals=globals_,
                             globals_passwords=globals_passwords)
    if json_out:
        print_json(result)
        return
    if result.get("note"):
        stderr.print(f"note: {result['note']}", highlight=False)
    if result.get("reused_from"):
        stdout.print(f"snapshot {result['snapshot']} saved: nothing changed in {result['database']} since "
                     f"{str(result['reused_from'])[:8]}, so nothing was dumped or stored", highlight=False)
    else:
        stdout.print(
            f"{result['kind']} snapshot {result['snapshot']} saved: {result['engine']} database "
            f"{result['database']} on {result['server']}, {human_bytes(int(str(result['logical_bytes'])))} "
            f"read, {human_bytes(int(str(result['stored_bytes'])))} stored, {result['duration_s']} s",
            highlight=False)


def _fleet_backup(server: str, repo: str | None, kind: str, include: list[str], exclude: list[str],
                  max_per_server: int, timeout_minutes: int, include_globals: bool, json_out: bool,
                  verbose: bool) -> None:
    from vaultflow.engines import is_database_url, server_from_url

    if is_database_url(server):
        server_from_url(server)
    ref = prepare_flow_run(repo, verbose)
    from flows.fleet import backup_fleet

    state = backup_fleet(servers=[server], repository=ref, kind=cast(Any, kind), include=include, exclude=exclude,
                         max_per_server=max_per_server, timeout_minutes=timeout_minutes,
                         include_globals=include_globals, return_state=True)
    rows = state.result(raise_on_failure=False)
    if isinstance(rows, BaseException):
        raise rows
    if json_out:
        print_json(rows)
        return
    for row in rows:
        stdout.print(f"{row['kind']} snapshot {row['snapshot']} saved: {row['database']} on {row['server']}",
                     highlight=False)
