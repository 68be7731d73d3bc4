"""The `retention` (prune), `forget`, `verify` and `copy` flows."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Annotated, Literal, Self

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field, model_validator

from blocks.parameters import RepositoryChoice
from blocks.resolve import block_label
from tasks.maintenance import (
    copy_repository,
    extend_repository_locks,
    forget_snapshots,
    prune_repository,
    verify_archived_logs,
    verify_repository,
)
from tasks.reporting import error_line, publish_repository_event, publish_snapshots_deleted, publish_stats
from vaultflow.errors import IntegrityError
from vaultflow.operations.forget import ForgetPlan
from vaultflow.operations.prune import PrunePlan
from vaultflow.operations.retention import PolicyMap, RetentionPolicy, parse_duration, preset
from vaultflow.operations.verify import broken_by_chunk

RepositoryParam = Annotated[RepositoryChoice | None, Field(description="BackupRepository block (or its name) "
                                                                             "or path")]
DURATION_PATTERN = r"^\d+[hdwyHDWY]$"


class RetentionRules(BaseModel):
    """A named preset, or explicit rules: any rule set here replaces the preset entirely.

    Building one checks it (through RetentionPolicy): a rule set that keeps nothing, a cap of
    zero or a bad duration raises InputError, before any run touches a repository."""

    preset: Literal["default", "aggressive", "conservative", "compliance"] = "default"
    keep_last: int | None = Field(default=None, ge=0)
    keep_within: str | None = Field(default=None, description="e.g. 30d, 36h, 8w, 1y",
                                    json_schema_extra={"pattern": DURATION_PATTERN})
    keep_hourly: int | None = Field(default=None, ge=0)
    keep_daily: int | None = Field(default=None, ge=0)
    keep_weekly: int | None = Field(default=None, ge=0)
    keep_monthly: int | None = Field(default=None, ge=0)
    keep_yearly: int | None = Field(default=None, ge=0)
    max_count: int | None = Field(default=None, description="Cap: at most this many snapshots per database",
                                  json_schema_extra={"minimum": 1})
    max_age: str | None = Field(default=None, description="Cap: nothing older than this (e.g. 30d)",
                                json_schema_extra={"pattern": DURATION_PATTERN})

    @model_validator(mode="after")
    def _keeps_something(self) -> Self:
        self.policy()  # raises InputError, which pydantic passes through unchanged
        return self

    def policy(self) -> RetentionPolicy:
        counts = {name: getattr(self, name) for name in _COUNT_RULES if getattr(self, name) is not None}
        if not counts and not self.keep_within and not self.max_age:
            return preset(self.preset)
        within = parse_duration(self.keep_within) if self.keep_within else None
        max_age = parse_duration(self.max_age) if self.max_age else None
        return RetentionPolicy(keep_within=within, max_age=max_age, **counts)


_COUNT_RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "max_count")


class DatabaseRetention(RetentionRules):
    """The rules of the databases a glob matches: on the database key (engine://server/db) or
    its name, e.g. `shop*` or `*.db`. The first matching entry wins."""

    match: str = Field(min_length=1, description="Glob on engine://server/db or the database name, e.g. shop*")


def retention_policy(rules: RetentionRules, policy_for: list[DatabaseRetention]) -> RetentionPolicy | PolicyMap:
    """One policy, or per-database policies with `rules` for databases no glob matches."""
    if not policy_for:
        return rules.policy()
    return PolicyMap(rules.policy(), tuple((entry.match, entry.policy()) for entry in policy_for))


@flow(name="retention", validate_parameters=True)
def retention(
    repository: RepositoryParam = None,
    rules: RetentionRules = RetentionRules(),  # noqa: B008 - pydantic default shown in the UI form
    policy_for: Annotated[list[DatabaseRetention], Field(
        description="Per-database rules, first matching glob wins; `rules` is for the rest")] = [],  # noqa: B006
    dry_run: Annotated[bool, Field(description="Only report what would be deleted")] = False,
) -> dict[str, object]:
    """Apply a retention policy: forget snapshots, then delete chunks nothing references.

    Emits vaultflow.prune.succeeded (databases that lost snapshots as related resources) or
    vaultflow.prune.failed, and one vaultflow.snapshot.deleted per forgotten snapshot.
    """
    ref = _repository_ref(repository)
    try:
        plan, catalog_url, repository_id = prune_repository(repository, retention_policy(rules, policy_for), dry_run)
    except BaseException as exc:
        publish_repository_event("prune", "failed", ref, {"error": error_line(exc)})
        raise
    if plan.lock_warning:
        get_run_logger().warning(plan.lock_warning)
    publish_repository_event("prune", "succeeded", ref, {
        "dry_run": dry_run, "forgotten": len(plan.forget), "chunk_objects": len(plan.garbage),
        "bytes_freed": plan.bytes_freed}, [(m.engine, m.server, m.database) for m in plan.forget])
    if not dry_run:
        publish_snapshots_deleted(ref, plan.forget, "retention")
    publish_stats(catalog_url, repository_id)
    rows = [{"snapshot": m.short_id, "database": m.database, "taken": m.started_at.isoformat(timespec="seconds"),
             "stored_bytes": m.stored_size, "action": "would forget" if dry_run else "forgotten"}
            for m in plan.forget] + _lock_rows(plan.locked) + _log_rows(plan, dry_run)
    create_table_artifact(key="vaultflow-retention", table=rows or [{"snapshot": "-", "action": "nothing to forget"}],
                          description=f"Retention ({rules.preset}"
                          f"{f', {len(policy_for)} per-database rule(s)' if policy_for else ''}"
                          f"{', dry run' if dry_run else ''})")
    return {"dry_run": dry_run, "forgotten": [m.id for m in plan.forget], "kept": sorted(plan.keep),
            "chunk_objects": len(plan.garbage), "bytes_freed": plan.bytes_freed, **_lock_result(plan.locked,
                                                                                                 plan.retained),
            **_log_result(plan), "lock_warning": plan.lock_warning}


@flow(name="forget", validate_parameters=True)
def forget(
    snapshots: Annotated[list[str], Field(description="Snapshot ids or unique prefixes to forget", min_length=1)],
    repository: Annotated[str | None, Field(description="BackupRepository block name or path")] = None,
    with_dependents: Annotated[bool, Field(description="Also forget the snapshots taken on top of them")] = False,
    dry_run: Annotated[bool, Field(description="Only report what would be deleted")] = False,
) -> dict[str, object]:
    """Forget chosen snapshots, then delete chunks nothing references. A snapshot others were
    taken on top of is refused (the run fails, nothing is deleted) unless `with_dependents`.

    Emits one vaultflow.snapshot.deleted per forgotten snapshot, or vaultflow.forget.failed.
    """
    ref = _repository_ref(repository)
    try:
        plan, catalog_url, repository_id = forget_snapshots(repository, snapshots, with_dependents, dry_run)
    except BaseException as exc:
        publish_repository_event("forget", "failed", ref, {"error": error_line(exc), "snapshots": snapshots})
        raise
    if not dry_run:
        publish_snapshots_deleted(ref, plan.forget, "forget")
        publish_stats(catalog_url, repository_id)
    rows = [{"snapshot": m.short_id, "database": m.database, "kind": m.kind,
             "taken": m.started_at.isoformat(timespec="seconds"), "stored_bytes": m.stored_size,
             "action": "would forget" if dry_run else "forgotten"} for m in plan.forget] + _lock_rows(plan.locked)
    rows += _log_rows(plan, dry_run)
    create_table_artifact(key="vaultflow-forget", table=rows,
                          description=f"Forget{' (dry run)' if dry_run else ''}: {plan.bytes_freed} bytes "
                                      f"in {len(plan.garbage)} chunk object(s)")
    return {"dry_run": dry_run, "forgotten": [m.id for m in plan.forget],
            "snapshots": [{"id": m.id, "database": m.database, "kind": m.kind,
                           "taken": m.started_at.isoformat(timespec="seconds")} for m in plan.forget],
            "chunk_objects": len(plan.garbage), "bytes_freed": plan.bytes_freed,
            **_lock_result(plan.locked, plan.retained), **_log_result(plan)}


def _log_result(plan: PrunePlan | ForgetPlan) -> dict[str, object]:
    """The WAL/binlog part of a prune or forget result: every archived log object deleted (or, dry,
    that would be), their bytes, those the store retains, and the archives kept whole with why."""
    return {"log_objects": sorted(plan.logs), "log_bytes_freed": plan.log_bytes_freed,
            "log_notes": list(plan.log_notes), "retained_log_objects": len(plan.logs_retained)}


def _log_rows(plan: PrunePlan | ForgetPlan, dry_run: bool) -> list[dict[str, object]]:
    """One artifact row per archive directory (wal/<sysid>/<timeline>, binlog/<server>) losing objects."""
    by_directory: dict[str, list[int]] = {}
    for key, size in plan.logs.items():
        by_directory.setdefault(key.rpartition("/")[0], []).append(size)
    return [{"snapshot": "-", "database": directory, "stored_bytes": sum(sizes),
             "action": f"{'would delete' if dry_run else 'deleted'} {len(sizes)} archived log object(s)"}
            for directory, sizes in sorted(by_directory.items())] + [
        {"snapshot": "-", "action": note} for note in plan.log_notes]


def _lock_rows(locked: dict[str, datetime]) -> list[dict[str, object]]:
    return [{"snapshot": sid[:8], "action": f"kept until {until:%Y-%m-%dT%H:%M:%SZ} (object lock)"}
            for sid, until in sorted(locked.items())]


def _lock_result(locked: dict[str, datetime], retained: dict[str, datetime]) -> dict[str, object]:
    """The object-lock part of a prune or forget result: snapshots kept (id -> until) and
    unreferenced chunk objects the store still retains."""
    return {"kept_by_lock": {sid: until.isoformat(timespec="seconds") for sid, until in sorted(locked.items())},
            "retained_chunk_objects": len(retained)}


@flow(name="extend-locks", validate_parameters=True)
def extend_locks(repository: RepositoryParam = None) -> dict[str, object]:
    """Extend the object lock of every object the remaining snapshots need to now + the
    repository's lock period where it ends sooner (never shortened). Run it with the admin identity,
    more often than the lock period."""
    ref = _repository_ref(repository)
    try:
        plan = extend_repository_locks(repository)
    except BaseException as exc:
        publish_repository_event("extend-locks", "failed", ref, {"error": error_line(exc)})
        raise
    publish_repository_event("extend-locks", "succeeded", ref, {"objects": plan.objects,
                                                                "extended": len(plan.extended)})
    return {"objects": plan.objects, "extended": len(plan.extended),
            "until": plan.until.isoformat(timespec="seconds")}


@flow(name="verify", validate_parameters=True)
def verify(
    repository: RepositoryParam = None,
    snapshots: Annotated[list[str] | None, Field(description="Snapshot ids; all if empty")] = None,
    deep: Annotated[bool, Field(description="Download and re-hash every chunk")] = False,
    rules: Annotated[RetentionRules | None, Field(description="Report not_expired against this policy")] = None,
) -> list[dict[str, object]]:
    """Check snapshots, and without `snapshots` the archived WAL and binlogs too; the run fails if any
    snapshot is not valid, naming the damaged chunks, or if a log has a gap, naming its first missing
    file and the time it cuts off (deep: also a log object that fails to open).

    Emits vaultflow.verify.succeeded or vaultflow.verify.failed (with the error and the
    databases whose snapshots failed, or the archives with gaps).
    """
    ref = _repository_ref(repository)
    try:
        verdicts = verify_repository(repository, snapshots, deep, rules.policy() if rules else None)
        problems = [] if snapshots else verify_archived_logs(repository, deep)
    except BaseException as exc:
        publish_repository_event("verify", "failed", ref, {"error": error_line(exc), "deep": deep})
        raise
    create_table_artifact(key="vaultflow-verify", table=[
        {k: v for k, v in vd.as_dict().items() if k != "damaged_chunks"} | {"damaged": len(vd.damaged_chunks)}
        for vd in verdicts] or [{"snapshot": "-"}], description="Snapshot integrity")
    bad = [v for v in verdicts if not v.valid]
    if bad:
        broken = broken_by_chunk(bad)
        detail = "; ".join(f"chunk {cid[:12]} breaks {', '.join(s[:8] for s in sids)}"
                           for cid, sids in list(broken.items())[:5])
        failure = IntegrityError(f"{len(bad)} of {len(verdicts)} snapshot(s) failed verification"
                                 + (f": {detail}" if detail else f": {bad[0].error}"),
                                 "restore from another snapshot; `vaultflow backup --kind incremental --repair` "
                                 "rewrites the chunks a new dump produces again, a new full starts a fresh chain")
        publish_repository_event("verify", "failed", ref, {
            "error": failure.line(), "deep": deep, "snapshots": len(verdicts), "invalid": len(bad),
            "databases": sorted({v.database for v in bad})})
        raise failure
    if problems:
        shown = "; ".join(p.message for p in problems[:3]) + (f"; and {len(problems) - 3} more"
                                                               if len(problems) > 3 else "")
        failure = IntegrityError(f"{len(problems)} problem(s) in the archived WAL/binlogs: {shown}",
                                 "take a new base backup (or logical snapshot) to start a window after the gap; "
                                 "restores to moments past it are refused")
        publish_repository_event("verify", "failed", ref, {
            "error": failure.line(), "deep": deep, "snapshots": len(verdicts),
            "log_problems": [p.as_dict() for p in problems]})
        raise failure
    publish_repository_event("verify", "succeeded", ref, {"deep": deep, "snapshots": len(verdicts)})
    return [v.as_dict() for v in verdicts]


@flow(name="copy", validate_parameters=True)
def copy(
    destination: Annotated[RepositoryChoice, Field(description="BackupRepository block (or its name) or path to "
                                                               "copy into (initialised with `vaultflow init`)")],
    repository: Annotated[RepositoryChoice | None, Field(
        description="BackupRepository block (or its name) or path to copy from")] = None,
    snapshots: Annotated[list[str] | None, Field(description="Snapshot ids; all if empty")] = None,
) -> dict[str, object]:
    """Copy snapshots to a second repository, transferring only the chunks it does not hold."""
    result = copy_repository(repository, destination, snapshots)
    create_table_artifact(key="vaultflow-copy", table=[
        {"copied": len(result.copied), "already_there": len(result.already_there),
         "chunks_written": result.chunks_written, "chunks_reused": result.chunks_reused,
         "bytes_written": result.bytes_written}], description=f"Copy to {block_label(destination)}")
    return result.as_dict()


def _repository_ref(repository: RepositoryChoice | None) -> str:
    return block_label(repository) or os.environ.get("VAULTFLOW_REPO") or "unset"
