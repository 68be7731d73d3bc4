"""`pitr` group: point-in-time recovery. `pitr check SERVER` says what a PostgreSQL server lacks
for archiving-based PITR and the exact settings to apply.

`wal-push` / `wal-fetch` are the same commands as the `vaultflow-wal` console script, reachable
from this CLI; the server's archive_command should use `vaultflow-wal`, which starts faster
(it imports neither typer nor rich; docs/engines/postgresql.md).

Exit codes of `pitr check`: 0 ready, 3 not ready (a check is missing), 1 the check could not
run (server unreachable), 2 bad input.
"""

from __future__ import annotations

from typing import Annotated

import typer

from vaultflow.cli.app import JsonOpt, handles_errors
from vaultflow.cli.output import print_json, stdout

NOT_READY_EXIT = 3

pitr_app = typer.Typer(no_args_is_help=True, help="Point-in-time recovery (PostgreSQL WAL archiving).")

_MARK = {"ok": "ok", "missing": "MISSING", "advisable": "advisable"}


@pitr_app.command("check")
@handles_errors
def check(
    server: Annotated[str, typer.Argument(help="postgresql://user@host:port[/db] or a saved PostgresServer block.")],
    json_out: JsonOpt = False,
) -> None:
    """Read the server's WAL (PostgreSQL) or binlog (MySQL/MariaDB) settings and the user's rights;
    print one line per check and the statements that fix what is missing. Exit 0 when ready, 3 when not."""
    from vaultflow.engines import is_database_url, server_from_url, spec

    if is_database_url(server):
        engine = server_from_url(server)
    else:
        from blocks.resolve import resolve_server

        engine = resolve_server(server)
    if engine.engine == "mysql":
        from vaultflow.engines.mysql.engine import MySQLEngine
        from vaultflow.engines.mysql.pitr_check import check_binlog_readiness

        assert isinstance(engine, MySQLEngine)
        result = check_binlog_readiness(engine)
    else:
        from vaultflow.engines.postgres.engine import PostgresEngine
        from vaultflow.engines.postgres.pitr_check import check_pitr_readiness

        spec(engine.engine).require("pitr", "give a PostgreSQL or MySQL/MariaDB server")
        assert isinstance(engine, PostgresEngine)
        result = check_pitr_readiness(engine)
    if json_out:
        print_json(result.as_dict())
    else:
        for item in result.checks:
            stdout.print(f"{_MARK[item.status]:<9} {item.name}: {item.value}"
                         + ("" if item.status == "ok" else f" (want {item.want})"), highlight=False)
        todo = [c for c in result.checks if c.status != "ok" and c.fix]
        if todo:
            stdout.print("\nto apply (as a superuser):", highlight=False)
            for item in todo:
                for line in item.fix:
                    stdout.print(f"  {line}", highlight=False)
            if any(c.apply == "config" for c in todo):
                stdout.print("  (and the [mysqld] lines in the server's config file, so they survive a restart)",
                             highlight=False)
            if any(c.apply == "reload" for c in todo):
                stdout.print("  SELECT pg_reload_conf();", highlight=False)
            restart = sorted(c.name for c in todo if c.apply == "restart")
            if restart:
                stdout.print(f"then restart the server (needed for {', '.join(restart)})", highlight=False)
        verdict = "ready for point-in-time recovery" if result.ready else "NOT ready for point-in-time recovery"
        flavour = "MySQL/MariaDB" if engine.engine == "mysql" else "PostgreSQL"
        stdout.print(f"\n{result.server} ({flavour} {result.version}): {verdict}", highlight=False)
        if result.note:
            stdout.print(f"note: {result.note}", highlight=False)
    if not result.ready:
        raise typer.Exit(NOT_READY_EXIT)


def wal_push(
    path: Annotated[str, typer.Argument(help="%p: the WAL file to archive.")],
    repo: Annotated[str | None, typer.Option("--repo", "-r", help="Repository path or URL (default: $VAULTFLOW_REPO).")]
    = None,
    pgdata: Annotated[str | None, typer.Option(help="The cluster's data directory (default: the one of pg_wal/).")]
    = None,
) -> None:
    """archive_command: store one WAL file durably (same as `vaultflow-wal push %p`)."""
    from vaultflow.wal.command import run_push

    raise typer.Exit(run_push(path, repo=repo, pgdata=pgdata))


def wal_fetch(
    name: Annotated[str, typer.Argument(help="%f: the WAL file name to restore.")],
    path: Annotated[str, typer.Argument(help="%p: where to write it.")],
    repo: Annotated[str | None, typer.Option("--repo", "-r", help="Repository path or URL (default: $VAULTFLOW_REPO).")]
    = None,
    pgdata: Annotated[str | None, typer.Option(help="The cluster's data directory (default: the one of pg_wal/).")]
    = None,
) -> None:
    """restore_command: write one archived WAL file (same as `vaultflow-wal fetch %f %p`): exit 1 when
    it is not archived, 126 (fatal for PostgreSQL) on any other error."""
    from vaultflow.wal.command import run_fetch

    raise typer.Exit(run_fetch(name, path, repo=repo, pgdata=pgdata))
