"""vaultflow CLI. Exit codes: 0 ok, 1 the operation failed, 2 bad usage or input.

Listing and reading commands (snapshots, export, catalog rebuild) use the core directly
and need no Prefect server; backup and restore run the Prefect flows.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import typer
from pydantic import ValidationError

from vaultflow.catalog import Catalog, SnapshotStatus
from vaultflow.cli.output import error, human_bytes, print_json, print_table, progress_bar, stderr, stdout
from vaultflow.errors import InputError, VaultflowError
from vaultflow.repository import Repository, open_repository
from vaultflow.storage import open_store

app = typer.Typer(name="vaultflow", no_args_is_help=True, add_completion=False,
                  help="Database backups, restores and drills as Prefect flows.")
catalog_app = typer.Typer(no_args_is_help=True, help="The local catalog of snapshot runs.")
app.add_typer(catalog_app, name="catalog")
automations_app = typer.Typer(no_args_is_help=True, help="Alerting automations kept as YAML under deployments/.")
app.add_typer(automations_app, name="automations")

RepoOpt = Annotated[str | None, typer.Option("--repo", "-r", envvar="VAULTFLOW_REPO",
                                             help="Repository path, s3://bucket/prefix, az://container/prefix, "
                                                  "or a BackupRepository block name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's run logs.")]

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    """Turn every failure into one line on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VaultflowError as exc:
            error(exc.line())
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error("interrupted; no snapshot was recorded for the unfinished run")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except ValidationError as exc:
            detail = exc.errors()[0]
            where = ".".join(str(p) for p in detail["loc"]) or exc.title
            error(f"invalid {where}: {detail['msg']}")
            raise typer.Exit(2) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence, still one line
            name = type(exc).__name__
            code = 2 if name in ("ParameterTypeError", "SignatureMismatchError") else 1
            first = (str(exc).strip().splitlines() or [""])[0]
            error(f"{name}: {first[:400]}")
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


# -- repository access ------------------------------------------------------------------

def _is_location(ref: str) -> bool:
    return "/" in ref or "://" in ref or ref.startswith((".", "~"))


def _require_repo(repo: str | None) -> str:
    if not repo:
        raise InputError("no repository given", "pass --repo PATH or set VAULTFLOW_REPO")
    return repo


def _passphrase(*, confirm: bool = False) -> str:
    """VAULTFLOW_PASSPHRASE, else ask on a terminal; the flow in this process reads the env."""
    value = os.environ.get("VAULTFLOW_PASSPHRASE")
    if value:
        return value
    if not sys.stdin.isatty():
        raise InputError("no repository passphrase", "set VAULTFLOW_PASSPHRASE or run on a terminal")
    value = getpass.getpass("repository passphrase: ")
    if confirm and getpass.getpass("repeat passphrase: ") != value:
        raise InputError("the two passphrases differ", "run the command again")
    if not value:
        raise InputError("empty passphrase", "type a passphrase or set VAULTFLOW_PASSPHRASE")
    os.environ["VAULTFLOW_PASSPHRASE"] = value
    return value


def _open(repo: str | None) -> tuple[Repository, str | None]:
    """Open a repository given as a path (env passphrase) or a block name (its passphrase)."""
    ref = _require_repo(repo)
    if _is_location(ref):
        store = open_store(ref)
        Repository.read_config(store)
        return open_repository(ref, _passphrase()), os.environ.get("VAULTFLOW_CATALOG_URL")
    from blocks.resolve import resolve_repository

    resolved = resolve_repository(ref)
    return resolved.open(), resolved.catalog_url


def _quiet_prefect(verbose: bool) -> None:
    """Keep the terminal to our own output; the run logs still reach the Prefect API."""
    # The embedded (ephemeral) API server migrates a new database on first start, which
    # takes longer than Prefect's default wait on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    if verbose:
        return
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.setLevel(logging.CRITICAL + 1)


def _check_url(ref: str, action: Literal["backup", "restore"]) -> None:
    """Refuse a bad database URL (one with a password above all), or one that cannot do
    `action` (SQL Server without staging), before a flow run stores it."""
    from vaultflow.engines import engine_from_url, is_database_url

    if is_database_url(ref):
        engine_from_url(ref).check_configuration(action)


def _prepare_flow_run(repo: str | None, verbose: bool) -> str:
    """Check a path repository and get its passphrase before Prefect starts, then quiet Prefect."""
    ref = _require_repo(repo)
    if _is_location(ref):
        Repository.read_config(open_store(ref))
        _passphrase()
    _quiet_prefect(verbose)
    return ref


# -- commands ---------------------------------------------------------------------------

@app.command()
@handles_errors
def init(repo: RepoOpt = None, json_out: JsonOpt = False) -> None:
    """Create an empty repository at a path, s3://bucket/prefix, az://container/prefix, or where a
    BackupRepository block points (with the block's passphrase)."""
    location = _require_repo(repo)
    if _is_location(location):
        created = Repository.init(open_store(location), _passphrase(confirm=True))
    else:
        from blocks.resolve import resolve_repository

        resolved = resolve_repository(location)
        assert resolved.passphrase is not None
        created = Repository.init(resolved.store(), resolved.passphrase.get_secret_value())
    if json_out:
        print_json({"repository_id": created.id, "location": created.store.describe()})
    else:
        stdout.print(f"created repository {created.id[:8]} at {created.store.describe()}")


@app.command()
@handles_errors
def backup(
    source: Annotated[str, typer.Argument(help="Engine block name or database URL (with --all-databases: "
                                               "a server URL such as mysql://user@host:port).")],
    repo: RepoOpt = None,
    kind: Annotated[str, typer.Option(help="Backup kind.")] = "full",
    all_databases: Annotated[bool, typer.Option(help="Back up every database of the server (backup-fleet).")] = False,
    include: Annotated[list[str] | None, typer.Option(help="With --all-databases: glob of database names.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="With --all-databases: glob of names to skip.")] = None,
    max_per_server: Annotated[int, typer.Option(help="With --all-databases: dumps at once on the server.")] = 2,
    no_table_checksums: Annotated[bool, typer.Option(help="Skip per-table content checksums.")] = False,
    timeout_minutes: Annotated[int, typer.Option(help="Kill the dump after this long.")] = 360,
    jobs: Annotated[int, typer.Option(help="Tables dumped at once (PostgreSQL).")] = 1,
    include_table: Annotated[list[str] | None, typer.Option(help="Glob of tables whose rows to back up.")] = None,
    exclude_table: Annotated[list[str] | None, typer.Option(help="Glob of tables whose rows to skip.")] = None,
    repair: Annotated[bool, typer.Option(help="Rewrite every chunk, healing ones verify found damaged.")] = False,
    globals_: Annotated[bool, typer.Option("--globals", help="Also store the server roles/users, grants.")] = False,
    globals_passwords: Annotated[bool, typer.Option(help="Keep password hashes in --globals.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Back up one database (runs the `backup` flow), or all of a server's (`backup-fleet`)."""
    if all_databases:
        _fleet_backup(source, repo, kind, include or [], exclude or [], max_per_server, timeout_minutes, globals_,
                      json_out, verbose)
        return
    if include or exclude:
        raise InputError("--include/--exclude choose databases and need --all-databases",
                         "add --all-databases, or use --include-table/--exclude-table for tables")
    _check_url(source, "backup")
    ref = _prepare_flow_run(repo, verbose)
    from flows.backup import backup as backup_flow

    with progress_bar(not json_out):
        # The flow validates `kind` itself (one list of kinds, shown in the UI form too).
        result = backup_flow(source=source, repository=ref, kind=cast(Any, kind),
                             table_checksums=not no_table_checksums,
                             timeout_minutes=timeout_minutes, jobs=jobs, include_tables=include_table or [],
                             exclude_tables=exclude_table or [], repair=repair, include_globals=globals_,
                             globals_passwords=globals_passwords)
    if json_out:
        print_json(result)
        return
    if result.get("note"):
        stderr.print(f"note: {result['note']}", highlight=False)
    if result.get("reused_from"):
        stdout.print(f"snapshot {result['snapshot']} saved: nothing changed in {result['database']} since "
                     f"{str(result['reused_from'])[:8]}, so nothing was dumped or stored", highlight=False)
    else:
        stdout.print(
            f"{result['kind']} snapshot {result['snapshot']} saved: {result['engine']} database "
            f"{result['database']} on {result['server']}, {human_bytes(int(str(result['logical_bytes'])))} "
            f"read, {human_bytes(int(str(result['stored_bytes'])))} stored, {result['duration_s']} s",
            highlight=False)


def _fleet_backup(server: str, repo: str | None, kind: str, include: list[str], exclude: list[str],
                  max_per_server: int, timeout_minutes: int, include_globals: bool, json_out: bool,
                  verbose: bool) -> None:
    from vaultflow.engines import is_database_url, server_from_url

    if is_database_url(server):
        server_from_url(server)
    ref = _prepare_flow_run(repo, verbose)
    from flows.fleet import backup_fleet

    state = backup_fleet(servers=[server], repository=ref, kind=cast(Any, kind), include=include, exclude=exclude,
                         max_per_server=max_per_server, timeout_minutes=timeout_minutes,
                         include_globals=include_globals, return_state=True)
    rows = state.result(raise_on_failure=False)
    if isinstance(rows, BaseException):
        raise rows
    if json_out:
        print_json(rows)
        return
    for row in rows:
        stdout.print(f"{row['kind']} snapshot {row['snapshot']} saved: {row['database']} on {row['server']}",
                     highlight=False)


@app.command()
@handles_errors
def discover(
    server: Annotated[str, typer.Argument(help="Engine block name or server URL (postgresql://user@host:port, "
                                               "mysql://user@host:port).")],
    include: Annotated[list[str] | None, typer.Option(help="Glob of database names to keep.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Glob of database names to leave out.")] = None,
    include_system: Annotated[bool, typer.Option(help="Keep the server's own databases too.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List a server's databases and record them in the catalog (runs the `discover` flow)."""
    from vaultflow.engines import is_database_url, server_from_url

    if is_database_url(server):
        server_from_url(server)
    _quiet_prefect(verbose)
    from flows.discovery import discover as discover_flow

    # No catalog_url: the flow's tasks read VAULTFLOW_CATALOG_URL themselves, and the URL (which
    # may hold a password) must not become a flow run parameter, which the Prefect API stores.
    found = discover_flow(servers=[server], include=include or [], exclude=exclude or [],
                          include_system=include_system)
    if json_out:
        print_json(found)
        return
    for f in found:
        for warning in cast(list[str], f["warnings"]):
            stderr.print(f"warning: {warning}", highlight=False)
        print_table(f"{f['engine']} server {f['server']}", ["database"],
                    [(db,) for db in cast(list[str], f["databases"])])


@app.command()
@handles_errors
def coverage(
    within_hours: Annotated[float, typer.Option(help="A database needs a successful backup this recent.")] = 26,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Databases without a successful backup in the window (runs the `coverage` flow: artifact and
    one event per gap). Exit 1 when there is a gap."""
    _quiet_prefect(verbose)
    from flows.discovery import coverage as coverage_flow

    gaps = coverage_flow(within_hours=within_hours)  # the catalog URL stays in the environment, as for discover
    if json_out:
        print_json(gaps)
    elif gaps:
        print_table(f"no successful backup in {within_hours:g} h", ["engine", "server", "database", "last success"],
                    [(g["engine"], g["server"], g["database"], g["last_success"] or "never") for g in gaps])
    else:
        stdout.print(f"every known database has a successful backup from the last {within_hours:g} h")
    if gaps:
        raise typer.Exit(1)


@app.command()
@handles_errors
def restore(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id or unique prefix.")],
    target: Annotated[str, typer.Argument(help="Engine block name or database URL.")],
    repo: RepoOpt = None,
    replace: Annotated[bool, typer.Option(help="Swap out a target that already has tables.")] = False,
    no_owner: Annotated[bool, typer.Option(help="Skip ownership and grants.")] = False,
    timeout_minutes: Annotated[int, typer.Option(help="Kill the restore after this long.")] = 360,
    jobs: Annotated[int, typer.Option(help="Tables loaded at once (PostgreSQL).")] = 1,
    table: Annotated[list[str] | None,
                     typer.Option(help="Restore only these tables' rows (schema.name; name for MySQL).")] = None,
    globals_: Annotated[bool, typer.Option("--globals", help="First create the snapshot's roles/users.")] = False,
    server_locale: Annotated[bool, typer.Option(
        help="Create the database with the server's default encoding and locale, not the snapshot's.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Restore a snapshot into a database (runs the `restore` flow)."""
    _check_url(target, "restore")
    ref = _prepare_flow_run(repo, verbose)
    from flows.restore import restore as restore_flow

    with progress_bar(not json_out):
        result = restore_flow(snapshot=snapshot, target=target, repository=ref, replace=replace,
                              no_owner=no_owner, timeout_minutes=timeout_minutes, jobs=jobs, tables=table or [],
                              include_globals=globals_, server_locale=server_locale)
    if json_out:
        print_json(result)
    else:
        stdout.print(f"restored snapshot {result['snapshot']} ({result['database']}) into {target}",
                     highlight=False)


@app.command()
@handles_errors
def snapshots(
    repo: RepoOpt = None,
    database: Annotated[str | None, typer.Option(help="Only this database.")] = None,
    status: Annotated[SnapshotStatus | None, typer.Option(help="Only runs in this status.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List snapshot runs from the catalog (no Prefect server needed)."""
    ref = _require_repo(repo)
    if _is_location(ref):
        config = Repository.read_config(open_store(ref))
        catalog_url = os.environ.get("VAULTFLOW_CATALOG_URL")
    else:
        opened, catalog_url = _open(ref)
        config = opened.config
    rows = Catalog(catalog_url).snapshots(repository_id=str(config["id"]), database=database,
                                          status=status)
    if json_out:
        print_json([{
            "id": r.id, "engine": r.engine, "server": r.server, "database": r.database,
            "kind": r.kind, "status": r.status.value, "started": r.started_at,
            "duration_seconds": r.duration_seconds, "logical_size": r.logical_size,
            "stored_size": r.stored_size, "error": r.error,
        } for r in rows])
        return
    if not rows:
        stdout.print("no snapshots in the catalog for this repository "
                      "(if the repository has some, run: vaultflow catalog rebuild)")
        return
    print_table(None, ["id", "engine", "database", "kind", "started", "duration", "logical",
                       "stored", "status"], [
        (r.short_id, r.engine, r.database, r.kind, r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
         f"{r.duration_seconds:.1f}s" if r.duration_seconds is not None else None,
         human_bytes(r.logical_size), human_bytes(r.stored_size), r.status.value)
        for r in rows])


@app.command()
@handles_errors
def export(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id or unique prefix.")],
    to: Annotated[str | None, typer.Option("--to", help="File to write the native dump to.")] = None,
    url: Annotated[bool, typer.Option("--url", help="Upload the dump next to the repository (S3 or Azure) "
                                                    "and print a time-limited download URL.")] = False,
    expires: Annotated[str, typer.Option(help="How long the --url link works (36h, 7d; S3 at most 7d).")] = "24h",
    repo: RepoOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rebuild the native dump (pg_dump archive or SQL script, SQLite file) to a file, or as a
    download link with --url; no Prefect server needed."""
    from vaultflow.operations.restore import export_snapshot

    if (to is None) == (not url):
        raise InputError("give exactly one of --to FILE and --url", "e.g. vaultflow export 1a2b --to app.sql")
    opened, catalog_url = _open(repo)
    snapshot_id = opened.resolve_snapshot(snapshot)
    if url:
        from vaultflow.operations.retention import parse_duration
        from vaultflow.operations.share import export_download_link

        link = export_download_link(opened, snapshot_id, parse_duration(expires))
        # The catalog keeps where and until when, never the signed URL.
        Catalog(catalog_url).record_download_link(snapshot_id=snapshot_id, repository_id=opened.id,
                                                  location=link.location, size=link.size,
                                                  expires_at=link.expires_at)
        kind, hint = _export_kind(link.manifest.streams[0].format)
        if json_out:
            print_json({"snapshot": snapshot_id, "object": link.location, "format": kind, "size": link.size,
                        "url": link.url, "expires_at": link.expires_at.isoformat()})
        else:
            stderr.print(f"uploaded {kind} of {link.manifest.database} ({human_bytes(link.size)}) to {link.location}"
                         f" (not encrypted); the link works until {link.expires_at:%Y-%m-%d %H:%M} UTC; restore "
                         f"the download with {hint}", highlight=False)
            print(link.url)
        return
    assert to is not None
    manifest = export_snapshot(opened, snapshot_id, to)
    kind, hint = _export_kind(manifest.streams[0].format)
    size = os.path.getsize(to)
    if json_out:
        print_json({"snapshot": manifest.id, "file": os.path.abspath(to), "format": kind, "size": size})
    else:
        stdout.print(f"wrote {kind} of {manifest.database} ({human_bytes(size)}) to {to}; restore it with {hint}",
                     highlight=False)


@app.command()
@handles_errors
def show(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id or unique prefix.")],
    repo: RepoOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What one snapshot holds, read from its manifest in the repository (no catalog, no
    Prefect server): source, kind and chain, sizes, tool versions, the database's own
    properties, and every table with its rows and checksum (the names --table takes)."""
    opened, _ = _open(repo)
    manifest = opened.load_manifest(opened.resolve_snapshot(snapshot))
    database: dict[str, object] = {}
    for stream in manifest.streams:
        if "database" in stream.meta:  # PostgreSQL: encoding, locale, settings...
            props = json.loads(stream.meta["database"])
            # Setting values may be secrets (app.jwt_secret...): names only.
            props["settings"] = [e.partition("=")[0] for e in props.get("settings", [])]
            props["role_settings"] = [f"{r}: {e.partition('=')[0]}" for r, e in props.get("role_settings", [])]
            database |= props
        database |= {k: stream.meta[k] for k in ("charset", "collation") if k in stream.meta}  # MySQL
    summary: dict[str, object] = {
        "id": manifest.id, "engine": manifest.engine, "server": manifest.server, "database": manifest.database,
        "kind": manifest.kind, "chain": manifest.chain, "parent": manifest.parent,
        "reused_from": manifest.reused_from, "started_at": manifest.started_at.isoformat(),
        "duration_seconds": round(manifest.duration_seconds, 3), "logical_size": manifest.logical_size,
        "stored_size": manifest.stored_size, "table_filter": manifest.table_filter,
        "vaultflow_version": manifest.vaultflow_version, "tool_versions": manifest.tool_versions,
        "database_properties": database, "streams": len(manifest.streams),
        "tables": [{"table": t.qualified, "rows": t.rows, "checksum": t.checksum} for t in manifest.tables],
    }
    if json_out:
        print_json(summary)
        return
    for key in ("id", "engine", "server", "database", "kind", "chain", "parent", "reused_from", "started_at"):
        if summary[key] is not None:
            stdout.print(f"{key}: {summary[key]}", highlight=False)
    stdout.print(f"size: {human_bytes(manifest.logical_size)} logical, {human_bytes(manifest.stored_size)} stored "
                 f"in {len(manifest.streams)} stream(s), {manifest.duration_seconds:.1f}s", highlight=False)
    if manifest.table_filter:
        stdout.print(f"table filter: {' '.join(manifest.table_filter)}", highlight=False)
    versions = ", ".join(f"{k} {v}" for k, v in sorted(manifest.tool_versions.items()))
    stdout.print(f"versions: vaultflow {manifest.vaultflow_version}" + (f", {versions}" if versions else ""),
                 highlight=False)
    for key, value in database.items():
        if value not in (None, [], -1):
            stdout.print(f"database {key}: {value}", highlight=False)
    print_table(None, ["table", "rows", "checksum"],
                [(t.qualified, t.rows, (t.checksum or "")[:24]) for t in manifest.tables])


def _export_kind(stream_format: str) -> tuple[str, str]:
    """What an export of a snapshot whose first stream has this format is, and the command that loads it."""
    from vaultflow.engines.registry import spec_for_format

    found = spec_for_format(stream_format)
    export = found.export_format(stream_format) if found is not None else None
    return (export.kind, export.hint) if export is not None else ("dump", "the engine's own tools")


@app.command()
@handles_errors
def prune(
    repo: RepoOpt = None,
    policy: Annotated[str, typer.Option(help="Preset: default, aggressive, conservative, compliance.")] = "default",
    keep_last: Annotated[int | None, typer.Option(help="Keep the N newest per database.")] = None,
    keep_within: Annotated[str | None, typer.Option(help="Keep everything younger than this (30d, 36h).")] = None,
    keep_hourly: Annotated[int | None, typer.Option()] = None,
    keep_daily: Annotated[int | None, typer.Option()] = None,
    keep_weekly: Annotated[int | None, typer.Option()] = None,
    keep_monthly: Annotated[int | None, typer.Option()] = None,
    keep_yearly: Annotated[int | None, typer.Option()] = None,
    dry_run: Annotated[bool, typer.Option(help="Only show what would go and the bytes it frees.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Apply a retention policy, then delete chunks no snapshot needs (runs the `retention` flow).

    Explicit --keep-* rules replace the preset. The newest snapshot of every database is kept.
    """
    from vaultflow.operations.retention import PRESETS

    if policy not in PRESETS:
        raise InputError(f"unknown retention preset {policy!r}", f"choose one of {', '.join(sorted(PRESETS))}")
    ref = _prepare_flow_run(repo, verbose)
    from flows.maintenance import RetentionRules, retention

    rules = RetentionRules(preset=cast(Any, policy), keep_last=keep_last, keep_within=keep_within,
                           keep_hourly=keep_hourly, keep_daily=keep_daily, keep_weekly=keep_weekly,
                           keep_monthly=keep_monthly, keep_yearly=keep_yearly)
    rules.policy()  # a malformed policy fails here, before any run starts
    result = retention(repository=ref, rules=rules, dry_run=dry_run)
    if json_out:
        print_json(result)
        return
    forgotten = cast(list[str], result["forgotten"])
    verb = "would forget" if dry_run else "forgot"
    stdout.print(f"{verb} {len(forgotten)} snapshot(s) ({', '.join(i[:8] for i in forgotten) or 'none'}), "
                 f"kept {len(cast(list[str], result['kept']))}; "
                 f"{'would free' if dry_run else 'freed'} {human_bytes(int(str(result['bytes_freed'])))} "
                 f"in {result['chunk_objects']} chunk object(s)", highlight=False)


@app.command()
@handles_errors
def verify(
    snapshot: Annotated[list[str] | None, typer.Argument(help="Snapshot ids; all if none.")] = None,
    repo: RepoOpt = None,
    deep: Annotated[bool, typer.Option(help="Download, decrypt and re-hash every chunk.")] = False,
    policy: Annotated[str | None, typer.Option(help="Also report not_expired against this preset.")] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check snapshots (runs the `verify` flow); exit 1 naming every damaged chunk."""
    ref = _prepare_flow_run(repo, verbose)
    from flows.maintenance import RetentionRules
    from flows.maintenance import verify as verify_flow
    from vaultflow.operations.retention import preset

    rules = None
    if policy is not None:
        preset(policy)  # an unknown preset fails here, before any run starts
        rules = RetentionRules(preset=cast(Any, policy))
    rows = verify_flow(repository=ref, snapshots=snapshot or None, deep=deep, rules=rules)
    if json_out:
        print_json(rows)
    else:
        print_table(None, ["snapshot", "database", "exists", "size", "checksum", "not expired", "valid"], [
            (str(r["snapshot"])[:8], r["database"], r["exists"], r["size_match"],
             "-" if r["checksum_match"] is None else r["checksum_match"], r["not_expired"], r["valid"])
            for r in rows])


@app.command()
@handles_errors
def drill(
    database: Annotated[str | None, typer.Option(help="Drill the newest snapshot of this database.")] = None,
    snapshot: Annotated[str | None, typer.Option(help="Drill this snapshot (id or unique prefix).")] = None,
    scratch: Annotated[str | None, typer.Option(
        help="Scratch server: engine block name or server URL (postgresql://user@host:port, sqlite:///dir/).")
    ] = None,
    suites: Annotated[str | None, typer.Option(help="Directory of expectation suites (JSON/YAML).")] = None,
    repo: RepoOpt = None,
    max_concurrent: Annotated[int, typer.Option(help="Drills at once when drilling every database.")] = 2,
    timeout_minutes: Annotated[int, typer.Option(help="Kill each restore after this long.")] = 360,
    jobs: Annotated[int, typer.Option(help="Tables loaded and checked at once (PostgreSQL).")] = 1,
    scan_constraints: Annotated[bool, typer.Option(
        help="Also scan for default expectations the restored schema enforces (NOT NULL, unique).")] = False,
    server_locale: Annotated[bool, typer.Option(
        help="Create scratch databases with the server's default encoding and locale, not the snapshot's.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Prove snapshots restore: restore into a scratch database, check rows, checksums, schema
    objects and expectation suites, drop it. Without --database/--snapshot: the newest snapshot
    of every database (runs `validate-restore` / `drill-latest`). Exit 1 naming failed checks."""
    if database and snapshot:
        raise InputError("--database and --snapshot are exclusive", "give one of them, or neither to drill all")
    if scratch and "://" in scratch:
        from blocks.resolve import scratch_from_url

        scratch_from_url(scratch)  # a password in it stops here, before a flow run stores it
    if suites:
        from vaultflow.drill import load_suites

        load_suites(suites)  # syntax errors stop here; tables and columns are checked per snapshot
    ref = _prepare_flow_run(repo, verbose)
    from flows.drill import drill_latest, validate_restore

    with progress_bar(not json_out):
        if database or snapshot:
            rows = [validate_restore(snapshot=snapshot, database=database, repository=ref, scratch=scratch,
                                     suites=suites, timeout_minutes=timeout_minutes, jobs=jobs,
                                     scan_constraints=scan_constraints, server_locale=server_locale)]
        else:
            rows = drill_latest(repository=ref, scratch=scratch, suites=suites, max_concurrent=max_concurrent,
                                timeout_minutes=timeout_minutes, jobs=jobs, scan_constraints=scan_constraints,
                                server_locale=server_locale)
    if json_out:
        print_json(rows)
        return
    for row in rows:
        stdout.print(str(row["summary"]), highlight=False)


@app.command()
@handles_errors
def copy(
    snapshot: Annotated[list[str] | None, typer.Argument(help="Snapshot ids; all if none.")] = None,
    repo: RepoOpt = None,
    to: Annotated[str, typer.Option("--to", help="Destination repository: BackupRepository block or location.")] = "",
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Copy snapshots to a second repository, sending only chunks it lacks (runs the `copy` flow).

    A destination given as a location uses VAULTFLOW_PASSPHRASE too; for another passphrase
    name a BackupRepository block.
    """
    if not to:
        raise InputError("no destination repository", "pass --to BLOCK or --to LOCATION (initialised with "
                         "vaultflow init)")
    ref = _prepare_flow_run(repo, verbose)
    if _is_location(to):
        Repository.read_config(open_store(to))
    from flows.maintenance import copy as copy_flow

    result = copy_flow(destination=to, repository=ref, snapshots=snapshot or None)
    if json_out:
        print_json(result)
        return
    copied = cast(list[str], result["copied"])
    stdout.print(f"copied {len(copied)} snapshot(s) ({', '.join(i[:8] for i in copied) or 'none'}) to {to}, "
                 f"{len(cast(list[str], result['already_there']))} already there; {result['chunks_written']} "
                 f"chunk(s) written ({human_bytes(int(str(result['bytes_written'])))}), {result['chunks_reused']} "
                 "already present", highlight=False)


@app.command("check-credentials")
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
    _quiet_prefect(verbose)
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


@app.command()
@handles_errors
def stats(
    repo: RepoOpt = None,
    database: Annotated[str | None, typer.Option(help="Only this database.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Per database: runs, outcomes, sizes, dedup ratio, last backup, last proven restorable (catalog)."""
    ref = _require_repo(repo)
    if _is_location(ref):
        repository_id = str(Repository.read_config(open_store(ref))["id"])
        catalog_url = os.environ.get("VAULTFLOW_CATALOG_URL")
    else:
        opened, catalog_url = _open(ref)
        repository_id = opened.id
    rows = Catalog(catalog_url).stats(repository_id=repository_id, database=database)
    if json_out:
        print_json([r.as_dict() for r in rows])
        return
    print_table(None, ["engine", "server", "database", "runs", "ok", "failed", "logical", "stored", "ratio",
                       "last run", "last status", "last proven restorable", "restore time"], [
        (r.engine, r.server, r.database, r.total, r.succeeded, r.failed, human_bytes(r.logical_bytes),
         human_bytes(r.stored_bytes), r.dedup_ratio,
         r.last_run.strftime("%Y-%m-%d %H:%M") if r.last_run else None, r.last_status,
         r.last_proven_restorable.strftime("%Y-%m-%d %H:%M") if r.last_proven_restorable else "never drilled"
         if r.last_drill is None else "no passed drill",
         f"{r.recovery_seconds:.1f}s" if r.recovery_seconds is not None else None) for r in rows])


@catalog_app.command("rebuild")
@handles_errors
def catalog_rebuild(repo: RepoOpt = None, json_out: JsonOpt = False) -> None:
    """Recreate the catalog's rows for a repository from the manifests it holds."""
    opened, catalog_url = _open(repo)
    manifests = list(opened.manifests())
    count = Catalog(catalog_url).rebuild(manifests, repository_id=opened.id,
                                         repository=opened.store.describe())
    if json_out:
        print_json({"repository_id": opened.id, "snapshots": count})
    else:
        stdout.print(f"catalog rebuilt from {count} manifest(s) in {opened.store.describe()}")


# -- deployments, serve, automations ----------------------------------------------------

ProjectFileOpt = Annotated[Path | None, typer.Option("--file", "-f", help="prefect.yaml (default: the project's).")]


@app.command()
@handles_errors
def deploy(
    file: ProjectFileOpt = None,
    check: Annotated[bool, typer.Option("--check", help="Only validate prefect.yaml.")] = False,
) -> None:
    """Validate prefect.yaml, create missing process work pools, then `prefect deploy --all`."""
    import subprocess

    from deployments.specs import load_project

    project = load_project(file)
    if check:
        stdout.print(f"{project.path}: {len(project.deployments)} deployment(s) valid", highlight=False)
        return
    _quiet_prefect(False)
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    async def ensure_pools() -> None:
        async with get_client() as client:
            for name in sorted({d.work_pool.name for d in project.deployments if d.work_pool}):
                try:
                    await client.read_work_pool(name)
                except ObjectNotFound:
                    await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                    stdout.print(f"created process work pool {name}", highlight=False)

    asyncio.run(ensure_pools())
    from deployments.specs import missing_blocks

    for problem in missing_blocks(project):
        stderr.print(f"warning: {problem}; its runs fail until the block exists "
                     "(prefect block register -m blocks, then Prefect UI > Blocks > +)", highlight=False)
    done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
                           "--prefect-file", str(project.path)], cwd=project.root, check=False)
    if done.returncode:
        raise typer.Exit(1)


@app.command()
@handles_errors
def serve(
    file: ProjectFileOpt = None,
    limit: Annotated[int | None, typer.Option(help="Most flow runs at once.")] = None,
    port: Annotated[int, typer.Option(help="Port of the embedded Prefect server (UI and API).")] = 4200,
) -> None:
    """Serve every deployment of prefect.yaml from this process (no work pool or worker).

    With PREFECT_API_URL set, serves against that server; otherwise starts an embedded
    `prefect server start` on 127.0.0.1 (scheduler, automations, UI) and stops it on exit.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.serving import embedded_server, serve_project
    from deployments.specs import load_project

    project = load_project(file)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if PREFECT_API_URL.value():
        serve_project(project, limit=limit)
        return
    with embedded_server(port=port) as api_url:
        stderr.print(f"Prefect server and UI on {api_url.removesuffix('/api')}", highlight=False)
        os.environ["PREFECT_API_URL"] = api_url  # the flow-run subprocesses read it too
        with temporary_settings({PREFECT_API_URL: api_url}):
            serve_project(project, limit=limit)


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
    _quiet_prefect(False)

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


# -- archival (issue 7): the commands live in vaultflow/cli/archive.py -------------------
from vaultflow.cli import archive as _archive_cli  # noqa: E402

_archive_cli.register(app, handles_errors, _open, _prepare_flow_run)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
