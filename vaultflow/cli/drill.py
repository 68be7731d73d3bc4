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
    request_option,
)
from vaultflow.cli.output import print_json, progress_bar, stdout
from vaultflow.errors import InputError
from vaultflow.requests import DrillRequest


def parse_scratches(values: list[str]) -> tuple[str | None, dict[str, str]]:
    """`--scratch` values: at most one plain TARGET, and ENGINE=TARGET once per engine. A value
    is ENGINE=TARGET when the text before its first "=" names no URL or path (no ":" or "/")."""
    from vaultflow.engines.registry import spec

    plain: str | None = None
    per_engine: dict[str, str] = {}
    for value in values:
        head, sep, target = value.partition("=")
        if sep and head and not any(c in head for c in ":/"):
            name = spec(head.strip().lower()).name  # an unknown engine name stops here
            if name in per_engine or not target:
                raise InputError(f"--scratch {value!r}: give one non-empty target per engine",
                                 f"use --scratch {name}=TARGET once")
            per_engine[name] = target
        elif plain is not None:
            raise InputError("--scratch TARGET given twice", "give one plain target; others as ENGINE=TARGET")
        else:
            plain = value
    return plain, per_engine


@handles_errors
def drill(
    database: Annotated[str | None, typer.Option(help="Drill the newest snapshot of this database.")] = None,
    snapshot: Annotated[str | None, typer.Option(help="Drill this snapshot (id or unique prefix).")] = None,
    scratch: Annotated[list[str] | None, typer.Option(
        help="Scratch server: engine block name or server URL (postgresql://user@host:port, sqlite:///dir/); "
             "ENGINE=TARGET (repeatable) for the snapshots of one engine, e.g. mysql=mysql://root@host:3306.")
    ] = None,
    suites: Annotated[str | None, typer.Option(help="Directory of expectation suites (JSON/YAML).")] = None,
    repo: RepoOpt = None,
    max_concurrent: Annotated[int, typer.Option(help="Drills at once when drilling every database.")] = 2,
    timeout_minutes: int = request_option(DrillRequest, "timeout_minutes"),
    jobs: int = request_option(DrillRequest, "jobs"),
    scan_constraints: bool = request_option(DrillRequest, "scan_constraints"),
    server_locale: bool = request_option(DrillRequest, "server_locale"),
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Prove snapshots restore: restore into a scratch database, check rows, checksums, schema
    objects and expectation suites, drop it. Without --database/--snapshot: the newest snapshot
    of every database (runs `validate-restore` / `drill-latest`). Exit 1 naming failed checks."""
    options = DrillRequest(timeout_minutes=timeout_minutes, jobs=jobs, scan_constraints=scan_constraints,
                           server_locale=server_locale)
    if database and snapshot:
        raise InputError("--database and --snapshot are exclusive", "give one of them, or neither to drill all")
    plain, per_engine = parse_scratches(scratch or [])
    for target in [plain, *per_engine.values()]:
        if target and "://" in target:
            from blocks.resolve import scratch_from_url

            scratch_from_url(target)  # a password in it stops here, before a flow run stores it
    if suites:
        from vaultflow.drill import load_suites

        load_suites(suites)  # syntax errors stop here; tables and columns are checked per snapshot
    ref = prepare_flow_run(repo, verbose)
    from flows.drill import drill_latest, validate_restore

    with progress_bar(not json_out):
        if database or snapshot:
            rows = [validate_restore(snapshot=snapshot, database=database, repository=ref, scratch=plain,
                                     scratch_per_engine=per_engine, suites=suites, options=options)]
        else:
            rows = drill_latest(repository=ref, scratch=plain, scratch_per_engine=per_engine, suites=suites,
                                max_concurrent=max_concurrent, options=options)
    if json_out:
        print_json(rows)
        return
    for row in rows:
        stdout.print(str(row["summary"]), highlight=False)
