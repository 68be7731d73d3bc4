"""`catalog` group: the local catalog of snapshot runs."""

from __future__ import annotations

import typer

from vaultflow.audit import records
from vaultflow.catalog import Catalog
from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    handles_errors,
    open_repo,
)
from vaultflow.cli.output import print_json, stdout

catalog_app = typer.Typer(no_args_is_help=True, help="The local catalog of snapshot runs.")


@catalog_app.command("rebuild")
@handles_errors
def catalog_rebuild(repo: RepoOpt = None, json_out: JsonOpt = False) -> None:
    """Recreate the catalog's rows for a repository from the manifests and audit records it holds."""
    opened, catalog_url = open_repo(repo)
    manifests = list(opened.manifests())
    catalog = Catalog(catalog_url)
    count = catalog.rebuild(manifests, repository_id=opened.id, repository=opened.store.describe())
    audited = catalog.index_audit(records(opened), repository_id=opened.id)
    if json_out:
        print_json({"repository_id": opened.id, "snapshots": count, "audit_records": audited})
    else:
        stdout.print(f"catalog rebuilt from {count} manifest(s) and {audited} audit record(s) in "
                     f"{opened.store.describe()}")
