"""`audit`: the repository's audit trail, read from the repository itself (the catalog only indexes it)."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Annotated

import typer
from rich.table import Table

from vaultflow.audit import check_action, matching, parse_since, records
from vaultflow.cli.app import JsonOpt, RepoOpt, handles_errors, open_repo
from vaultflow.cli.output import print_json, stdout

_OBJECT_ID = re.compile(r"\b([0-9a-f]{8})[0-9a-f]{24}\b")
_RUN_ID = re.compile(r"\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


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
    # Off a terminal the table is 160 columns wide: the detail folds, the rest stays on one line.
    table = Table(show_lines=False)
    for column in ("time (UTC)", "action", "outcome", "actor", "role", "object", "database"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold", min_width=20)
    for e in found:
        table.add_row(f"{e.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}", e.action, e.outcome, _short_ids(e.actor.label()),
                      e.role or "-", _short_ids(e.object), e.database or "-", e.detail)
    stdout.print(table)


def _short_ids(text: str) -> str:
    """Object ids and flow run ids as their first 8 hex digits, as `snapshots` shows them."""
    return _RUN_ID.sub(r"\1", _OBJECT_ID.sub(r"\1", text))
