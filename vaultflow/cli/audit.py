"""`audit`: the repository's audit trail, read from the repository itself (the catalog only indexes it)."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Annotated

import typer

from vaultflow.audit import check_action, matching, parse_since, records
from vaultflow.cli.app import JsonOpt, RepoOpt, handles_errors, open_repo
from vaultflow.cli.output import print_json, print_table, stdout

_OBJECT_ID = re.compile(r"\b([0-9a-f]{8})[0-9a-f]{24}\b")


@handles_errors
def audit(
    repo: RepoOpt = None,
    since: Annotated[str | None, typer.Option(help="From this long ago (7d, 36h, 2w) or this date (2026-12-01).")]
    = None,
    action: Annotated[str | None, typer.Option(help="Only this action (backup, restore, forget, ...).")] = None,
    database: Annotated[str | None, typer.Option(help="Only databases whose name contains this.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only actors (user@host, deployment) containing this.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List every state-changing action on the repository: when, what, who, on what, and how it ended."""
    start = parse_since(since) if since is not None else None
    wanted = check_action(action) if action is not None else None
    opened, _ = open_repo(repo)
    found = matching(records(opened, since=start), action=wanted, database=database, actor=actor)
    if json_out:
        print_json([{**e.model_dump(mode="json"), "actor_label": e.actor.label()} for e in found])
        return
    if not found:
        stdout.print("no audit records match")
        return
    print_table(None, ["time (UTC)", "action", "outcome", "actor", "object", "database", "detail"],
                [(f"{e.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}", e.action, e.outcome, e.actor.label(),
                  _OBJECT_ID.sub(r"\1", e.object), e.database, e.detail) for e in found])
