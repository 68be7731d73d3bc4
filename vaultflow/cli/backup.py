"""`backup`: one database (the `backup` flow), every database of a server (`backup-fleet`), or a
PostgreSQL cluster's physical base backup (`--physical`, the `base-backup` flow)."""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer

from vaultflow.cli.app import (
    FilesOpt,
    JsonOpt,
    RepoOpt,
    VerboseOpt,
    check_database_url,
    check_file_tree_url,
    handles_errors,
    prepare_flow_run,
    request_option,
)
from vaultflow.cli.output import human_bytes, print_json, progress_bar, stderr, stdout
from vaultflow.errors import InputError
from vaultflow.requests import BackupRequest


@handles_errors
def backup(
    source: Annotated[str, typer.Argument(help="Engine block name or database URL (with --all-databases: "
                                               "a server URL such as mysql://user@host:port).")],
    repo: RepoOpt = None,
    kind: Annotated[str | None, typer.Option(
        help="Backup kind: full (default), incremental or differential. With --physical: full starts a chain of "
             "its own; by default a base backup joins the newest one's chain.")] = None,
    physical: Annotated[bool, typer.Option(
        help="A physical base backup of the whole PostgreSQL cluster SOURCE (postgresql://user@host:port or a "
             "PostgresServer block) that `vaultflow pitr restore` recovers to a moment (the base-backup flow).")]
    = False,
    all_databases: Annotated[bool, typer.Option(help="Back up every database of the server (backup-fleet).")] = False,
    include: Annotated[list[str] | None, typer.Option(help="With --all-databases: glob of database names.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="With --all-databases: glob of names to skip.")] = None,
    max_per_server: Annotated[int, typer.Option(help="With --all-databases: dumps at once on the server.")] = 2,
    table_checksums: bool = request_option(BackupRequest, "table_checksums"),
    timeout_minutes: int = request_option(BackupRequest, "timeout_minutes"),
    jobs: int = request_option(BackupRequest, "jobs"),
    include_table: list[str] | None = request_option(BackupRequest, "include_tables", "--include-table"),
    exclude_table: list[str] | None = request_option(BackupRequest, "exclude_tables", "--exclude-table"),
    repair: bool = request_option(BackupRequest, "repair"),
    globals_: bool = request_option(BackupRequest, "include_globals", "--globals/--no-globals"),
    globals_passwords: bool = request_option(BackupRequest, "globals_passwords"),
    skip_unreadable: bool = request_option(BackupRequest, "skip_unreadable"),
    files: FilesOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Back up one database (runs the `backup` flow), all of a server's (`backup-fleet`), or a PostgreSQL
    cluster's base backup (`--physical`, the `base-backup` flow)."""
    options = BackupRequest(table_checksums=table_checksums, timeout_minutes=timeout_minutes, jobs=jobs,
                            include_tables=include_table or [], exclude_tables=exclude_table or [], repair=repair,
                            include_globals=globals_, globals_passwords=globals_passwords,
                            skip_unreadable=skip_unreadable)
    if physical:
        _physical_backup(source, repo, kind, options, all_databases or bool(files or include or exclude),
                         json_out=json_out, verbose=verbose)
        return
    chosen = kind or "full"
    if all_databases and files:
        raise InputError("--files backs up file trees with one database and cannot go with --all-databases",
                         "back up the file trees in a run of their own")
    if all_databases:
        _fleet_backup(source, repo, chosen, include or [], exclude or [], max_per_server, options, json_out, verbose)
        return
    if include or exclude:
        raise InputError("--include/--exclude choose databases and need --all-databases",
                         "add --all-databases, or use --include-table/--exclude-table for tables")
    check_database_url(source, "backup")
    for tree in files or []:
        check_file_tree_url(tree, "backup")
    ref = prepare_flow_run(repo, verbose)
    from flows.backup import backup as backup_flow

    with progress_bar(not json_out):
        # The flow validates `kind` itself (one list of kinds, shown in the UI form too).
        result = backup_flow(source=source, repository=ref, kind=cast(Any, chosen), options=options,
                             files=list(files or []))
    if json_out:
        print_json(result)
        return
    if result.get("note"):
        stderr.print(f"note: {result['note']}", highlight=False)
    trees = cast(list[dict[str, Any]], result.get("files") or [])
    for row in [result, *trees]:
        _print_saved(row)
    if trees:
        stdout.print(f"backup set {result['snapshot']} complete: the database and {len(trees)} file "
                     f"tree(s); restore together with vaultflow restore {result['snapshot']} TARGET --files-to DIR",
                     highlight=False)


def _print_saved(result: dict[str, Any]) -> None:
    if result.get("reused_from"):
        stdout.print(f"snapshot {result['snapshot']} saved: nothing changed in {result['database']} since "
                     f"{str(result['reused_from'])[:8]}, so nothing was dumped or stored", highlight=False)
    else:
        stdout.print(
            f"{result['kind']} snapshot {result['snapshot']} saved: {result['engine']} database "
            f"{result['database']} on {result['server']}, {human_bytes(int(str(result['logical_bytes'])))} "
            f"read, {human_bytes(int(str(result['stored_bytes'])))} stored, {result['duration_s']} s",
            highlight=False)
    if result.get("skipped"):
        stderr.print(f"warning: snapshot {result['snapshot']} left out {result['skipped']} unreadable "
                     f"entr{'y' if result['skipped'] == 1 else 'ies'} (--skip-unreadable); vaultflow show "
                     f"{result['snapshot']} lists them", highlight=False)


def _fleet_backup(server: str, repo: str | None, kind: str, include: list[str], exclude: list[str],
                  max_per_server: int, options: BackupRequest, json_out: bool, verbose: bool) -> None:
    from vaultflow.engines import is_database_url, server_from_url

    if is_database_url(server):
        server_from_url(server)
    ref = prepare_flow_run(repo, verbose)
    from flows.fleet import backup_fleet

    state = backup_fleet(servers=[server], repository=ref, kind=cast(Any, kind), include=include, exclude=exclude,
                         max_per_server=max_per_server, options=options, return_state=True)
    rows = state.result(raise_on_failure=False)
    if isinstance(rows, BaseException):
        raise rows
    if json_out:
        print_json(rows)
        return
    for row in rows:
        stdout.print(f"{row['kind']} snapshot {row['snapshot']} saved: {row['database']} on {row['server']}",
                     highlight=False)


def _physical_backup(server: str, repo: str | None, kind: str | None, options: BackupRequest,
                     database_selection: bool, *, json_out: bool, verbose: bool) -> None:
    """Run the base-backup flow; refuse (one line) the options that only logical backups have
    (`database_selection`: --all-databases, --include/--exclude or --files were given)."""
    from vaultflow.engines import is_database_url, server_from_url

    logical = options.model_copy(update={"timeout_minutes": BackupRequest().timeout_minutes})
    if database_selection or logical != BackupRequest():
        raise InputError("--physical backs up the whole cluster: table filters, checksums, globals, jobs, --repair, "
                         "--skip-unreadable, --files and --all-databases are options of logical backups",
                         "drop them, or back up without --physical")
    if kind not in (None, "full", "incremental"):
        raise InputError(f"--kind {kind}: a base backup is full or joins the newest base backup's chain "
                         "(incremental)",
                         "give --kind full (a chain of its own) or no --kind")
    if is_database_url(server):
        engine = server_from_url(server)
        if engine.engine != "postgresql":
            raise InputError(f"{engine.describe()} is not PostgreSQL; --physical base backups are PostgreSQL's",
                             "give postgresql://user@host:port")
    ref = prepare_flow_run(repo, verbose)
    from flows.base_backup import base_backup as base_backup_flow

    with progress_bar(not json_out):
        result = base_backup_flow(source=server, repository=ref, new_chain=kind == "full",
                                  timeout_minutes=options.timeout_minutes)
    if json_out:
        print_json(result)
        return
    stdout.print(f"base backup {result['snapshot']} saved ({result['kind']}): cluster {result['system_identifier']} "
                 f"on {result['server']}, timeline {result['timeline']}, WAL {result['start_lsn']} .. "
                 f"{result['stop_lsn']}, {human_bytes(int(str(result['logical_bytes'])))} read, "
                 f"{human_bytes(int(str(result['stored_bytes'])))} stored, {result['duration_s']} s", highlight=False)
