"""Repository commands: `init`, `check-credentials`."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, cast

import typer

from vaultflow.cli.app import (
    JsonOpt,
    RepoOpt,
    VerboseOpt,
    ask_passphrase,
    handles_errors,
    is_location,
    quiet_prefect,
    require_repo,
)
from vaultflow.cli.output import error, print_json, print_table, stdout
from vaultflow.errors import InputError
from vaultflow.operations.init import init_repository
from vaultflow.repository.repository import ObjectLockSettings
from vaultflow.storage import open_store
from vaultflow.storage.base import LockMode

if TYPE_CHECKING:
    from vaultflow.operations.retention import RetentionPolicy

MAX_LOCK_DAYS = 36500  # S3 accepts up to 100 years
ObjectLockOpt = Annotated[int | None, typer.Option(
    "--object-lock", metavar="DAYS",
    help="S3 only: write every object retained by S3 Object Lock for DAYS (a bucket created with object lock).")]
LockModeOpt = Annotated[str, typer.Option(
    "--lock-mode", help="governance (an admin with bypass rights may shorten it) or compliance (nobody can).")]


def object_lock_settings(days: int | None, mode: str) -> ObjectLockSettings | None:
    """The lock `init --object-lock DAYS --lock-mode MODE` asks for; DAYS below 1 is refused."""
    if mode not in ("governance", "compliance"):
        raise InputError(f"unknown --lock-mode {mode!r}", "choose governance or compliance")
    if days is None:
        return None
    if not 1 <= days <= MAX_LOCK_DAYS:
        raise InputError(f"--object-lock {days} is not a number of days from 1 to {MAX_LOCK_DAYS}",
                         "give e.g. --object-lock 30 (longer than the longest retention you keep snapshots for)")
    return ObjectLockSettings(cast(LockMode, mode), timedelta(days=days))


def intended_retention(preset_name: str | None, keep_within: str | None, max_age: str | None
                       ) -> RetentionPolicy | None:
    """The retention policy `init --policy/--keep-within/--max-age` says prune will apply, or None."""
    from vaultflow.operations.retention import PRESETS, RetentionPolicy, parse_duration, preset

    if keep_within or max_age:
        return RetentionPolicy(keep_within=parse_duration(keep_within) if keep_within else None,
                               max_age=parse_duration(max_age) if max_age else None)
    if preset_name is None:
        return None
    if preset_name not in PRESETS:
        raise InputError(f"unknown retention preset {preset_name!r}", f"choose one of {', '.join(sorted(PRESETS))}")
    return preset(preset_name)


def check_lock_covers(lock: ObjectLockSettings | None, retention: RetentionPolicy | None) -> None:
    """Refuse, in one line, a retention policy given to init that outlasts its object lock."""
    if retention is None:
        return
    if lock is None:
        raise InputError("--policy, --keep-within and --max-age are checked against --object-lock DAYS",
                         "give --object-lock DAYS with them, or leave them out")
    from vaultflow.operations.object_lock import lock_shorter_than_retention

    problem = lock_shorter_than_retention(lock, retention)
    horizon = retention.horizon
    if problem is None or horizon is None:
        return
    days = math.ceil(horizon[0] / timedelta(days=1)) + 1
    raise InputError(f"--object-lock {lock.period / timedelta(days=1):g}: {problem}",
                     f"give --object-lock {days} or more (the policy's span plus a day between extend-locks runs), "
                     "or a shorter policy")


@handles_errors
def init(repo: RepoOpt = None, object_lock: ObjectLockOpt = None, lock_mode: LockModeOpt = "governance",
         policy: Annotated[str | None, typer.Option(
             help="With --object-lock: the retention preset prune will apply; a lock shorter than it is refused "
                  "(checked, not stored).")] = None,
         keep_within: Annotated[str | None, typer.Option(
             help="With --object-lock: prune's --keep-within (30d), checked like --policy.")] = None,
         max_age: Annotated[str | None, typer.Option(
             help="With --object-lock: prune's --max-age (90d), checked like --policy.")] = None,
         json_out: JsonOpt = False) -> None:
    """Create an empty repository at a path, s3://bucket/prefix, az://container/prefix, or where a
    BackupRepository block points (with the block's passphrase).

    With --object-lock DAYS (S3 only) every object is retained for DAYS (docs/storage.md); given the
    retention prune will apply (--policy, --keep-within, --max-age), a shorter lock is refused.
    """
    lock = object_lock_settings(object_lock, lock_mode)
    check_lock_covers(lock, intended_retention(policy, keep_within, max_age))
    location = require_repo(repo)
    if is_location(location):
        store = open_store(location)
        if lock is not None:
            store.check_object_lock()  # refused before the passphrase is asked for
        created = init_repository(store, ask_passphrase(confirm=True), object_lock=lock)
    else:
        from blocks.resolve import resolve_repository

        resolved = resolve_repository(location)
        assert resolved.passphrase is not None
        created = init_repository(resolved.store(), resolved.passphrase.get_secret_value(), object_lock=lock)
    if json_out:
        print_json({"repository_id": created.id, "location": created.store.describe(),
                    "object_lock": lock.to_json() if lock is not None else None})
    else:
        suffix = f", every object written under a {lock.describe()}" if lock is not None else ""
        stdout.print(f"created repository {created.id[:8]} at {created.store.describe()}{suffix}")


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
    quiet_prefect(verbose)
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
