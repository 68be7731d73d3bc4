"""Repository maintenance flows: `prune`, `forget`, `verify`, `copy`."""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer

from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    VerboseOpt,
    handles_errors,
    is_location,
    open_repo,
    prepare_flow_run,
)
from vaultflow.cli.output import human_bytes, print_json, print_table, stderr, stdout
from vaultflow.errors import InputError
from vaultflow.repository import Repository
from vaultflow.storage import open_store


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
    max_count: Annotated[int | None, typer.Option(help="Cap: keep at most N per database.")] = None,
    max_age: Annotated[str | None, typer.Option(help="Cap: forget anything older than this (30d, 8w).")] = None,
    policy_for: Annotated[list[str] | None, typer.Option(
        "--policy-for", metavar="GLOB=PRESET",
        help="Preset for the databases a glob matches (engine://server/db or the name), e.g. 'shop*=compliance'; "
             "repeatable, first match wins; the other options are for the rest.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Only show what would go and the bytes it frees.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Apply a retention policy, then delete chunks no snapshot needs (runs the `retention` flow).

    Explicit --keep-* / --max-* rules replace the preset. Never forgotten: the newest snapshot of
    every database, the newest a drill proved, the full a kept snapshot depends on.
    """
    from vaultflow.operations.retention import PRESETS

    if policy not in PRESETS:
        raise InputError(f"unknown retention preset {policy!r}", f"choose one of {', '.join(sorted(PRESETS))}")
    from flows.maintenance import DatabaseRetention, RetentionRules, retention

    # Every rule is checked here, before any run starts or anything is deleted.
    rules = RetentionRules(preset=cast(Any, policy), keep_last=keep_last, keep_within=keep_within,
                           keep_hourly=keep_hourly, keep_daily=keep_daily, keep_weekly=keep_weekly,
                           keep_monthly=keep_monthly, keep_yearly=keep_yearly, max_count=max_count,
                           max_age=max_age)
    per_database = [DatabaseRetention(match=glob, preset=cast(Any, name))
                    for glob, name in (_glob_and_preset(text) for text in policy_for or [])]
    ref = prepare_flow_run(repo, verbose)
    result = retention(repository=ref, rules=rules, policy_for=per_database, dry_run=dry_run)
    if result.get("lock_warning"):
        stderr.print(f"warning: {result['lock_warning']}", highlight=False)
    if json_out:
        print_json(result)
        return
    forgotten = cast(list[str], result["forgotten"])
    verb = "would forget" if dry_run else "forgot"
    stdout.print(f"{verb} {len(forgotten)} snapshot(s) ({', '.join(i[:8] for i in forgotten) or 'none'}), "
                 f"kept {len(cast(list[str], result['kept']))}; "
                 f"{'would free' if dry_run else 'freed'} {human_bytes(int(str(result['bytes_freed'])))} "
                 f"in {result['chunk_objects']} chunk object(s)", highlight=False)
    _print_logs(result, dry_run)
    _print_kept_by_lock(result)


def _print_logs(result: dict[str, object], dry_run: bool) -> None:
    """One line for the archived WAL/binlog objects that went (or would), one per archive kept whole."""
    logs = cast(list[str], result.get("log_objects") or [])
    if logs:
        shown = ", ".join(key.rpartition("/")[2] for key in logs[:5]) + (f" and {len(logs) - 5} more"
                                                                          if len(logs) > 5 else "")
        stdout.print(f"{'would delete' if dry_run else 'deleted'} {len(logs)} archived WAL/binlog object(s) no kept "
                     f"snapshot needs ({human_bytes(int(str(result['log_bytes_freed'])))}): {shown}", highlight=False)
    for note in cast(list[str], result.get("log_notes") or []):
        stdout.print(note, highlight=False)
    retained = int(str(result.get("retained_log_objects") or 0))
    if retained:
        stdout.print(f"{retained} archived WAL/binlog object(s) retained by object lock; a later prune deletes them",
                     highlight=False)


def _print_kept_by_lock(result: dict[str, object]) -> None:
    """One line per snapshot an object lock kept, and one for retained unreferenced chunks."""
    for sid, until in cast(dict[str, str], result.get("kept_by_lock") or {}).items():
        stdout.print(f"kept {sid[:8]} until {until} (object lock)", highlight=False)
    retained = int(str(result.get("retained_chunk_objects") or 0))
    if retained:
        stdout.print(f"{retained} unreferenced chunk object(s) retained by object lock; a later prune deletes "
                     "them", highlight=False)


@handles_errors
def extend_locks(repo: RepoOpt = None, json_out: JsonOpt = False) -> None:
    """Extend the object lock of every object the remaining snapshots need (S3 object-locked
    repositories; run with credentials allowed s3:PutObjectRetention, more often than the lock period)."""
    from vaultflow.operations.object_lock import extend_locks as extend

    opened, _ = open_repo(repo)
    plan = extend(opened)
    if json_out:
        print_json({"objects": plan.objects, "extended": len(plan.extended),
                    "until": plan.until.isoformat(timespec="seconds")})
        return
    stdout.print(f"extended the lock of {len(plan.extended)} of {plan.objects} object(s) the snapshots need to "
                 f"{plan.until:%Y-%m-%dT%H:%M:%SZ}", highlight=False)


def _glob_and_preset(text: str) -> tuple[str, str]:
    """'shop*=compliance' -> ('shop*', 'compliance'); refuses a missing part or an unknown preset."""
    from vaultflow.operations.retention import PRESETS

    glob, sep, name = text.rpartition("=")
    if not sep or not glob.strip() or not name.strip():
        raise InputError(f"cannot read --policy-for {text!r}",
                         "write it as GLOB=PRESET, e.g. --policy-for 'shop*=compliance'")
    if name.strip() not in PRESETS:
        raise InputError(f"unknown retention preset {name.strip()!r} in --policy-for {text!r}",
                         f"choose one of {', '.join(sorted(PRESETS))}")
    return glob.strip(), name.strip()


@handles_errors
def forget(
    snapshot: Annotated[list[str], typer.Argument(help="Snapshot ids or unique prefixes.")],
    repo: RepoOpt = None,
    with_dependents: Annotated[bool, typer.Option("--with-dependents",
                                                  help="Also forget the snapshots taken on top of them.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Only show what would go and the bytes it frees.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Delete chosen snapshots, then chunks no snapshot needs (runs the `forget` flow).

    A snapshot others were taken on top of is refused, naming them, unless --with-dependents.
    """
    ref = prepare_flow_run(repo, verbose)
    from vaultflow.operations.forget import plan_forget

    opened, _ = open_repo(ref)
    plan_forget(opened, snapshot, with_dependents=with_dependents)  # unknown ids, dependents: refused before a run
    from flows.maintenance import forget as forget_flow

    result = forget_flow(snapshots=snapshot, repository=ref, with_dependents=with_dependents, dry_run=dry_run)
    if json_out:
        print_json(result)
        return
    forgotten = cast(list[dict[str, str]], result["snapshots"])
    listed = ", ".join(f"{s['id'][:8]} ({s['database']}, {s['kind']})" for s in forgotten)
    stdout.print(f"{'would forget' if dry_run else 'forgot'} {len(forgotten)} snapshot(s): {listed}; "
                 f"{'would free' if dry_run else 'freed'} {human_bytes(int(str(result['bytes_freed'])))} "
                 f"in {result['chunk_objects']} chunk object(s)", highlight=False)
    _print_logs(result, dry_run)
    _print_kept_by_lock(result)


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
    ref = prepare_flow_run(repo, verbose)
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
    ref = prepare_flow_run(repo, verbose)
    if is_location(to):
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
