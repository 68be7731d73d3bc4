"""`automations` group: alerting automations kept as YAML under deployments/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vaultflow.cli.app import (
    JsonOpt,
    handles_errors,
    quiet_prefect,
)
from vaultflow.cli.output import print_json, stdout

automations_app = typer.Typer(no_args_is_help=True, help="Alerting automations kept as YAML under deployments/.")


@automations_app.command("apply")
@handles_errors
def automations_apply(
    directory: Annotated[Path | None, typer.Option("--dir", help="Directory of automation YAML files.")] = None,
    notify_block: Annotated[str, typer.Option(envvar="VAULTFLOW_NOTIFY_BLOCK",
                                              help="Notification block as slug/name.")] = "",
    webhook_url: Annotated[str | None, typer.Option(help="Create or replace the custom-webhook block "
                                                         "with this URL first.")] = None,
    prune: Annotated[bool, typer.Option(help="Delete vaultflow automations no file holds any more.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create or update the automations by name; applying twice changes nothing."""
    import asyncio

    from deployments.automations import (
        DEFAULT_DIR,
        DEFAULT_NOTIFY_BLOCK,
        apply_automations,
        load_automations,
        save_webhook_block,
    )

    items = load_automations(directory or DEFAULT_DIR)
    block = notify_block or DEFAULT_NOTIFY_BLOCK
    quiet_prefect(False)

    async def run() -> list[tuple[str, str]]:
        if webhook_url:
            await save_webhook_block(webhook_url, block)
        return await apply_automations(items, block, prune)

    outcomes = asyncio.run(run())
    if json_out:
        print_json([{"name": n, "outcome": o} for n, o in outcomes])
    else:
        for name, outcome in outcomes:
            stdout.print(f"{outcome:9} {name}", highlight=False)
