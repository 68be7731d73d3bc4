"""vaultflow CLI entry point: registers every command module on the typer app.

Listing and reading commands (snapshots, show, links, export --to, catalog rebuild) use the
core directly and need no Prefect server; backup, restore, drill, export --url and the
maintenance commands run the Prefect flows in this process. pyproject's [project.scripts] points at `app` here.
"""

from __future__ import annotations

from vaultflow.cli import (
    archive,
    audit,
    automations,
    backup,
    catalog,
    deployment,
    discovery,
    drill,
    export,
    intake,
    keys,
    maintenance,
    pitr,
    repository,
    restore,
    snapshots,
)
from vaultflow.cli.app import app, handles_errors, open_repo, prepare_flow_run

app.command()(repository.init)
app.command()(backup.backup)
app.command()(discovery.discover)
app.command()(discovery.coverage)
app.command()(restore.restore)
app.command()(snapshots.snapshots)
app.command()(export.export)
app.command()(export.links)
app.command()(snapshots.show)
app.command()(maintenance.prune)
app.command()(maintenance.forget)
app.command()(maintenance.verify)
app.command("extend-locks")(maintenance.extend_locks)
app.command()(drill.drill)
app.command()(maintenance.copy)
app.command()(audit.audit)
app.command("check-credentials")(repository.check_credentials)
app.command()(snapshots.stats)
app.add_typer(catalog.catalog_app, name="catalog")
app.command()(deployment.deploy)
app.command()(deployment.serve)
app.add_typer(automations.automations_app, name="automations")
app.add_typer(pitr.pitr_app, name="pitr")
app.add_typer(keys.key_app, name="key")
app.command()(keys.upgrade)
app.command("wal-push")(pitr.wal_push)
app.command("wal-fetch")(pitr.wal_fetch)
app.command("wal-receive")(intake.wal_receive)
app.command("binlog-stream")(intake.binlog_stream)
archive.register(app, handles_errors, open_repo, prepare_flow_run)

__all__ = ["app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
