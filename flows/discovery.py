"""The `discover` flow: every database on every saved vaultflow server, into the catalog."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event
from pydantic import Field

from blocks.parameters import RepositoryChoice
from blocks.resolve import saved_engine_blocks
from tasks.discovery import coverage_gaps, discover_databases, wal_archive_lags
from tasks.reporting import database_resource
from vaultflow.catalog import catalog_url_for_parameters
from vaultflow.errors import VaultflowError


def servers_or_saved(servers: list[str]) -> list[str]:
    """The given servers, or every saved engine block of a vaultflow type."""
    if servers:
        return servers
    names = [name for name, _ in saved_engine_blocks()]
    if not names:
        raise VaultflowError("no saved vaultflow engine blocks to discover",
                             "save a PostgresServer or MySQLServer block, or name a server URL")
    return names


@flow(name="discover", validate_parameters=True)
def discover(
    servers: Annotated[list[str], Field(description="Engine block names or server URLs "
                                                    "(postgresql://user@host:port, mysql://user@host:port); "
                                                    "every saved vaultflow engine block if empty")] = [],  # noqa: B006
    include: Annotated[list[str], Field(description="Globs of database names to keep; all if empty")] = [],  # noqa: B006
    exclude: Annotated[list[str], Field(description="Globs of database names to leave out")] = [],  # noqa: B006
    include_system: Annotated[bool, Field(description="Keep postgres/template*/mysql/sys... too")] = False,
    catalog_url: Annotated[str | None, Field(description="Catalog URL; ~/.vaultflow/catalog.db if empty")] = None,
) -> list[dict[str, object]]:
    """List the databases of each server, filter them and upsert them into the catalog.

    A server that cannot be listed does not stop the others; the run then fails naming it.
    """
    catalog_url = catalog_url_for_parameters(catalog_url)
    names = servers_or_saved(servers)
    futures = {name: discover_databases.submit(name, include, exclude, include_system, catalog_url)
               for name in names}
    found, failed = [], []
    for name, future in futures.items():
        try:
            found.append(future.result().as_dict())
        except VaultflowError as exc:
            failed.append(f"{name}: {exc.line()}")
    rows = [{"server": f["source"], "engine": f["engine"], "address": f["server"], "database": db}
            for f in found for db in f["databases"]]  # type: ignore[attr-defined]
    create_table_artifact(key="vaultflow-discovery", table=rows or [{"database": "-"}],
                          description=f"Databases found on {len(found)} server(s)")
    if failed:
        raise VaultflowError(f"discovery failed on {len(failed)} server(s): {'; '.join(failed)}")
    return found


@flow(name="coverage", validate_parameters=True)
def coverage(
    within_hours: Annotated[float, Field(gt=0, description="A database needs a successful backup this recent")] = 26,
    catalog_url: Annotated[str | None, Field(description="Catalog URL; ~/.vaultflow/catalog.db if empty")] = None,
    repository: Annotated[RepositoryChoice | None, Field(
        description="BackupRepository block (or its name) or a local path whose WAL archives are checked; "
                    "none if empty")] = None,
    wal_lag_minutes: Annotated[float, Field(gt=0, description="A cluster's newest archived WAL segment must be "
                                                              "this recent (the RPO)")] = 15,
) -> dict[str, list[dict[str, object]]]:
    """Databases in the catalog (discovered or backed up) without a successful backup inside
    the window, and, with `repository`, each PostgreSQL cluster archiving into it whose newest WAL
    segment is older than `wal_lag_minutes` or whose archive has a gap: table artifacts, and one
    `vaultflow.coverage.gap` event per database, `vaultflow.wal.lagging` / `vaultflow.wal.gap` per
    cluster, for automations to alert on. Returns {"databases": gaps, "wal": every cluster's row}."""
    gaps = coverage_gaps(within_hours, catalog_url_for_parameters(catalog_url))
    for gap in gaps:
        emit_event(event="vaultflow.coverage.gap",
                   resource=database_resource(str(gap["engine"]), str(gap["server"]), str(gap["database"])),
                   payload={"last_success": gap["last_success"], "within_hours": within_hours})
    create_table_artifact(key="vaultflow-coverage", table=gaps or [{"database": "-", "last_success": "-"}],
                          description=f"{len(gaps)} database(s) without a successful backup in {within_hours:g} h")
    if gaps:
        get_run_logger().warning("%d database(s) without a successful backup in %g h: %s", len(gaps), within_hours,
                                 ", ".join(f"{g['server']}/{g['database']}" for g in gaps))
    lags = wal_archive_lags(repository, wal_lag_minutes) if repository is not None else []
    for lag in lags:
        resource = {"prefect.resource.id": f"vaultflow.server.postgresql.{lag.server}",
                    "prefect.resource.name": lag.server, "vaultflow.engine": "postgresql",
                    "vaultflow.server": lag.server, "vaultflow.system_identifier": str(lag.system_identifier)}
        payload = lag.as_dict()
        if lag.lagging:
            emit_event(event="vaultflow.wal.lagging", resource=resource, payload=payload)
        if lag.gaps:
            emit_event(event="vaultflow.wal.gap", resource=resource, payload=payload)
    if repository is not None:
        bad = sum(1 for lag in lags if lag.lagging or lag.gaps)
        create_table_artifact(key="vaultflow-wal-coverage",
                              table=[lag.as_dict() for lag in lags] or [{"system_identifier": "-"}],
                              description=f"{bad} of {len(lags)} archiving cluster(s) behind by more than "
                                          f"{wal_lag_minutes:g} min or with a gap")
    return {"databases": gaps, "wal": [lag.as_dict() for lag in lags]}
