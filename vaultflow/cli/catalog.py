"""`catalog` group: the local catalog of snapshot runs."""

from __future__ import annotations

import typer

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
    """Recreate the catalog's rows for a repository from the manifests it holds."""
    opened, catalog_url = open_repo(repo)
    manifests = list(opened.manifests())
    count = Catalog(catalog_url).rebuild(manifests, repository_id=opened.id,
                                         repository=opened.store.describe())
    if json_out:
        print_json({"repository_id": opened.id, "snapshots": count})
    else:
        stdout.print(f"catalog rebuilt from {count} manifest(s) in {opened.store.describe()}")
