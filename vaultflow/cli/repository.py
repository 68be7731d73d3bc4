"""Repository commands: `init`, `check-credentials`."""

from __future__ import annotations

from typing import Annotated

import typer

from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    VerboseOpt,
    ask_passphrase,
    handles_errors,
    is_location,
    quiet_prefect,
    require_repo,
)
from vaultflow.cli.output import error, print_json, print_table, stdout
from vaultflow.operations.init import init_repository
from vaultflow.storage import open_store


@handles_errors
def init(repo: RepoOpt = None, json_out: JsonOpt = False) -> None:
    """Create an empty repository at a path, s3://bucket/prefix, az://container/prefix, or where a
    BackupRepository block points (with the block's passphrase)."""
    location = require_repo(repo)
    if is_location(location):
        created = init_repository(open_store(location), ask_passphrase(confirm=True))
    else:
        from blocks.resolve import resolve_repository

        resolved = resolve_repository(location)
        assert resolved.passphrase is not None
        created = init_repository(resolved.store(), resolved.passphrase.get_secret_value())
    if json_out:
        print_json({"repository_id": created.id, "location": created.store.describe()})
    else:
        stdout.print(f"created repository {created.id[:8]} at {created.store.describe()}")


@handles_errors
def check_credentials(
    repo: Annotated[list[str] | None, typer.Option("--repo", "-r", help="BackupRepository block; all if none.")] = None,
    within_days: Annotated[int, typer.Option(help="Report what expires within this many days.")] = 14,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Report storage credentials (Azure SAS) that expire soon (runs the `check-credentials` flow).

    Exits 1 if any has expired or expires within the window; the flow also emits an event each.
    """
    quiet_prefect(verbose)
    from flows.credentials import check_credentials as check_flow

    rows = check_flow(repositories=repo or [], within_days=within_days)
    if json_out:
        print_json(rows)
    else:
        print_table(None, ["repository", "location", "credential", "expires at", "status"],
                    [(r["repository"], r["location"], r["kind"], r["expires_at"], r["status"]) for r in rows])
    bad = [r for r in rows if r["status"] in ("expired", "expiring")]
    if bad:
        error(f"{len(bad)} repository credential(s) expired or expire within {within_days} days: "
              f"{', '.join(str(r['repository']) for r in bad)}; generate new ones and update the blocks")
        raise typer.Exit(1)
