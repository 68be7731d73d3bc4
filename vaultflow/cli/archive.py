"""Archival commands: `archive`, `archives`, `unarchive`, `purge-archives`.

`archive`, `unarchive` and `purge-archives` run the flows in-process; `archives` reads the
batch records from the repository directly (and refreshes the catalog's copy).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from vaultflow.cli.output import human_bytes, print_json, print_table, stdout
from vaultflow.errors import InputError

RepoOpt = Annotated[str | None, typer.Option("--repo", "-r", envvar="VAULTFLOW_REPO",
                                             help="Repository path, or a BackupRepository block name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's run logs.")]


def _check_source(ref: str) -> None:
    """Refuse a bad database URL (a password above all) before a flow run stores it."""
    from vaultflow.archive import source_from_url
    from vaultflow.engines import is_database_url

    if is_database_url(ref):
        source_from_url(ref)


def register(app: typer.Typer, handles_errors: Callable[[Any], Any],
             open_repo: Callable[[str | None], tuple[Any, str | None]],
             prepare_flow_run: Callable[[str | None, bool], str]) -> None:
    """Add the archival commands to the main app (helpers passed in to avoid an import cycle)."""

    @app.command()
    @handles_errors
    def archive(
        source: Annotated[str, typer.Argument(help="Engine block name or database URL (postgresql://, mysql://, "
                                                   "mariadb://, sqlite:///).")],
        table: Annotated[str, typer.Option("--table", "-t", help="Table to archive (schema.table for PostgreSQL).")],
        age_column: Annotated[str, typer.Option(help="Date/timestamp column that says how old a row is.")],
        older_than: Annotated[str, typer.Option(help="Archive rows older than this (90d, 36h, 2w).")],
        batch_size: Annotated[int, typer.Option(help="Rows per Parquet file and per delete.")] = 10_000,
        where: Annotated[str | None, typer.Option(help="Extra SQL condition rows must also meet.")] = None,
        key: Annotated[list[str] | None, typer.Option(help="Unique key column(s) if there is no primary key.")] = None,
        policy: Annotated[str | None, typer.Option(help="Policy name; default database.table.")] = None,
        dry_run: Annotated[bool, typer.Option(help="Only report the rows and bytes that would move.")] = False,
        repo: RepoOpt = None,
        json_out: JsonOpt = False,
        verbose: VerboseOpt = False,
    ) -> None:
        """Copy aged rows of one table to Parquet in the repository, verify, then delete them."""
        from vaultflow.archive import cutoff_from, parse_age

        cutoff_from(parse_age(older_than))  # a malformed or future cutoff fails before any run starts
        if batch_size < 1:
            raise InputError(f"batch size {batch_size} is not positive", "give --batch-size 1 or more")
        _check_source(source)
        ref = prepare_flow_run(repo, verbose)
        from blocks.archive import ArchiveRule
        from flows.archive import archive_rows

        rule = ArchiveRule(source=source, table=table, age_column=age_column, older_than=older_than,
                           batch_size=batch_size, where=where, key_columns=key or [], name=policy)
        (result,) = archive_rows(policies=[rule], repository=ref, dry_run=dry_run)
        if json_out:
            print_json(result)
        elif dry_run:
            stdout.print(f"would archive {result['rows']} row(s) of {table} older than {older_than} "
                         f"(about {human_bytes(int(str(result['source_bytes'])))} in the source)", highlight=False)
        else:
            note = f"; finished {result['reconciled']} interrupted batch(es)" if result["reconciled"] else ""
            stdout.print(f"archived {result['rows']} row(s) of {table} in {len(result['batches'])} "  # type: ignore[arg-type]
                         f"batch(es), {human_bytes(int(str(result['stored_bytes'])))} stored "
                         f"(policy {result['policy']}){note}", highlight=False)

    @app.command()
    @handles_errors
    def archives(
        repo: RepoOpt = None,
        policy: Annotated[str | None, typer.Option(help="Only this policy's batches.")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """List archive batches from the repository (no Prefect server needed)."""
        from vaultflow.archive import ArchiveCatalog, list_batches, policy_slug

        opened, catalog_url = open_repo(repo)
        records, orphans = list_batches(opened)
        ArchiveCatalog(catalog_url or os.environ.get("VAULTFLOW_CATALOG_URL")).rebuild(records, opened.id)
        if policy:
            records = [r for r in records if r.policy == policy_slug(policy)]
        if json_out:
            print_json([{
                "batch": r.id, "policy": r.policy, "status": r.status.value, "engine": r.engine,
                "server": r.server, "database": r.database, "table": r.table, "rows": r.rows,
                "age_column": r.age_column, "age_min": r.age_min, "age_max": r.age_max,
                "stored_bytes": r.stored_bytes, "parquet_bytes": r.parquet_bytes, "created": r.created_at,
                "purged_at": r.purged_at, "restores": len(r.restores),
            } for r in records])
            return
        if not records:
            stdout.print("no archive batches in this repository")
            return
        print_table(None, ["policy", "batch", "table", "rows", "age from", "age to", "bytes", "created",
                           "status"], [
            (r.policy, r.id, r.table, r.rows, (r.age_min or "")[:19], (r.age_max or "")[:19],
             human_bytes(r.stored_bytes), r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.status.value)
            for r in records])
        if orphans:
            stdout.print(f"{len(orphans)} unrecorded Parquet object(s) from interrupted runs "
                         "(purge-archives removes them after a day)", highlight=False)

    @app.command()
    @handles_errors
    def unarchive(
        batch: Annotated[list[str], typer.Argument(help="Archive batch ids or unique prefixes.")],
        into: Annotated[str | None, typer.Option(help="Engine block or database URL to insert into; "
                                                      "default the database the rows came from.")] = None,
        into_table: Annotated[str | None, typer.Option(help="Table to insert into; default the archived one.")]
        = None,
        repo: RepoOpt = None,
        json_out: JsonOpt = False,
        verbose: VerboseOpt = False,
    ) -> None:
        """Put archived rows back (rows whose key is already present are skipped)."""
        if into:
            _check_source(into)
        ref = prepare_flow_run(repo, verbose)
        from flows.archive import unarchive_rows

        rows = unarchive_rows(batches=batch, repository=ref, into=into, into_table=into_table)
        if json_out:
            print_json(rows)
            return
        for r in rows:
            stdout.print(f"batch {r['batch']}: {r['inserted']} row(s) inserted into {r['table']} of {r['into']}, "
                         f"{r['skipped']} already present", highlight=False)

    @app.command("purge-archives")
    @handles_errors
    def purge_archives_cmd(
        delete_after_days: Annotated[int, typer.Option(help="Purge batches created more than this many days ago.")],
        policy: Annotated[str | None, typer.Option(help="Only this policy's batches.")] = None,
        dry_run: Annotated[bool, typer.Option(help="Only report what would be purged.")] = False,
        repo: RepoOpt = None,
        json_out: JsonOpt = False,
        verbose: VerboseOpt = False,
    ) -> None:
        """Delete old archive batches' Parquet objects; their records stay, marked purged."""
        if delete_after_days < 0:
            raise InputError(f"--delete-after-days {delete_after_days} is negative", "give 0 or more days")
        ref = prepare_flow_run(repo, verbose)
        from flows.archive import purge_archives

        (result,) = purge_archives(repository=ref, delete_after_days=delete_after_days, policy=policy,
                                   dry_run=dry_run)
        if json_out:
            print_json(result)
        else:
            purged = result["purged"]
            stdout.print(f"{'would purge' if dry_run else 'purged'} {len(purged)} batch(es) "  # type: ignore[arg-type]
                         f"({result['rows']} rows, {human_bytes(int(str(result['bytes_freed'])))})", highlight=False)
