"""`discover` a server's databases and report `coverage` gaps (the discovery flows)."""

from __future__ import annotations

from typing import Annotated, cast

import typer

from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    VerboseOpt,
    handles_errors,
    prepare_flow_run,
    quiet_prefect,
)
from vaultflow.cli.output import print_json, print_table, stderr, stdout


@handles_errors
def discover(
    server: Annotated[str, typer.Argument(help="Engine block name or server URL (postgresql://user@host:port, "
                                               "mysql://user@host:port).")],
    include: Annotated[list[str] | None, typer.Option(help="Glob of database names to keep.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Glob of database names to leave out.")] = None,
    include_system: Annotated[bool, typer.Option(help="Keep the server's own databases too.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List a server's databases and record them in the catalog (runs the `discover` flow)."""
    from vaultflow.engines import is_database_url, server_from_url

    if is_database_url(server):
        server_from_url(server)
    quiet_prefect(verbose)
    from flows.discovery import discover as discover_flow

    # No catalog_url: the flow's tasks read VAULTFLOW_CATALOG_URL themselves, and the URL (which
    # may hold a password) must not become a flow run parameter, which the Prefect API stores.
    found = discover_flow(servers=[server], include=include or [], exclude=exclude or [],
                          include_system=include_system)
    if json_out:
        print_json(found)
        return
    for f in found:
        for warning in cast(list[str], f["warnings"]):
            stderr.print(f"warning: {warning}", highlight=False)
        print_table(f"{f['engine']} server {f['server']}", ["database"],
                    [(db,) for db in cast(list[str], f["databases"])])


@handles_errors
def coverage(
    within_hours: Annotated[float, typer.Option(help="A database needs a successful backup this recent.")] = 26,
    repo: RepoOpt = None,
    wal_lag_minutes: Annotated[float, typer.Option(
        help="With a repository: each PostgreSQL cluster archiving into it needs an archived WAL segment this "
             "recent (the RPO).")] = 15,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Databases without a successful backup in the window and, with --repo (or VAULTFLOW_REPO), the WAL
    archive of every PostgreSQL cluster archiving into it: the age of its newest segment and its gaps (runs
    the `coverage` flow: artifacts, and one event per gap or lagging cluster). Exit 1 when there is a gap
    or a cluster lags."""
    ref = prepare_flow_run(repo, verbose) if repo else None
    quiet_prefect(verbose)
    from flows.discovery import coverage as coverage_flow

    # The catalog URL stays in the environment, as for discover (it may hold a password).
    found = coverage_flow(within_hours=within_hours, repository=ref, wal_lag_minutes=wal_lag_minutes)
    gaps, wal = found["databases"], found["wal"]
    behind = [w for w in wal if w["lagging"] or w["gaps"]]
    if json_out:
        print_json(found)
    else:
        if gaps:
            print_table(f"no successful backup in {within_hours:g} h", ["engine", "server", "database",
                                                                        "last success"],
                        [(g["engine"], g["server"], g["database"], g["last_success"] or "never") for g in gaps])
        else:
            stdout.print(f"every known database has a successful backup from the last {within_hours:g} h")
        if wal:
            print_table(f"WAL archives (newest segment within {wal_lag_minutes:g} min)",
                        ["server", "cluster", "newest segment", "age", "state"],
                        [(w["server"], w["system_identifier"], w["newest_segment"] or "-", _age(w["lag_seconds"]),
                          _state(w)) for w in wal])
    if gaps or behind:
        raise typer.Exit(1)


def _age(seconds: object) -> str:
    return f"{float(str(seconds)) / 60:.1f} min" if seconds is not None else "-"


def _state(row: dict[str, object]) -> str:
    parts = (["LAGGING"] if row["lagging"] else []) + [f"GAP {g}" for g in cast(list[str], row["gaps"])]
    return "; ".join(parts) or "ok"
