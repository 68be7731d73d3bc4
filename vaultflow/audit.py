"""The audit trail: one write-once record per state-changing action, kept in the repository.

    audit/<yyyymmddThhmmss>-<12 hex>    sealed JSON AuditRecord, AAD = "audit:" + <record id>

Records are never rewritten or deleted by vaultflow (prune and GC look only under
`chains/` and `snapshots/`), so the trail survives a lost catalog: `catalog rebuild`
reads them back. The catalog's `audit_events` table is an index of them.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from pydantic import BaseModel, Field

from vaultflow.errors import InputError, IntegrityError, VaultflowError
from vaultflow.repository.crypto import SealError
from vaultflow.repository.repository import Repository

AUDIT_PREFIX = "audit/"

AuditAction = Literal["init", "backup", "restore", "export", "link", "forget", "prune", "purge", "archive",
                      "unarchive", "drill", "copy", "key", "extend-locks", "mark"]
AuditOutcome = Literal["succeeded", "failed", "cancelled"]


class Actor(BaseModel):
    """Who acted: the OS user and host, and when run by Prefect the deployment and flow run."""

    user: str
    host: str
    deployment: str | None = None
    flow_run: str | None = None

    @classmethod
    def here(cls, *, deployment: str | None = None, flow_run: str | None = None) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers)
            user = str(os.getuid())
        return cls(user=user, host=socket.gethostname(), deployment=deployment, flow_run=flow_run)

    def label(self) -> str:
        where = f"{self.user}@{self.host}"
        if self.deployment:
            where += f" (deployment {self.deployment})"
        elif self.flow_run:
            where += f" (flow run {self.flow_run})"
        return where


class AuditRecord(BaseModel):
    """One action on one object. `object` is what it acted on (a snapshot id, a policy, a
    database); `detail` a short summary, never a secret (no URL with a signature, no password)."""

    version: int = 1
    id: str
    at: datetime
    action: AuditAction
    outcome: AuditOutcome
    actor: Actor
    object: str = ""
    database: str | None = None
    detail: str = ""
    role: str | None = None  # the role of the repository key used (backup, restore, admin); None before roles
    key: str | None = None  # the id of the version 2 key used; None on a version 1 repository
    extra: dict[str, str] = Field(default_factory=dict)


def new_record_id(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dt%H%M%S}-{secrets.token_hex(6)}"


def _aad(record_id: str) -> bytes:
    return b"audit:" + record_id.encode()


def record(repo: Repository, action: AuditAction, outcome: AuditOutcome, actor: Actor, *, object: str = "",
           database: str | None = None, detail: str = "", extra: dict[str, str] | None = None,
           now: datetime | None = None) -> AuditRecord:
    """Write one audit record (synced put) and return it."""
    at = now or datetime.now(UTC)
    entry = AuditRecord(id=new_record_id(at), at=at, action=action, outcome=outcome, actor=actor, object=object,
                        database=database, detail=detail[:500], extra=extra or {}, role=repo.role,
                        key=repo.key_id or None)
    repo.store.put(AUDIT_PREFIX + entry.id, repo.sealer.seal(entry.model_dump_json().encode(), _aad(entry.id)),
                   sync=True)
    return entry


_acting: ContextVar[Actor | None] = ContextVar("vaultflow_audit_actor", default=None)


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Attribute the audit records written inside the block to `actor` (the flow layer sets the
    deployment and flow run; the core cannot ask Prefect)."""
    token = _acting.set(actor)
    try:
        yield actor
    finally:
        _acting.reset(token)


RunActor = Callable[[], "Actor | None"]
_run_actor: RunActor | None = None


def attribute_runs_with(source: RunActor | None) -> None:
    """Set how to tell the actor of the orchestrated run in progress (None outside one).
    The tasks layer registers a reader of Prefect's run context: the core cannot ask Prefect,
    and it holds in every thread a task runs in."""
    global _run_actor
    _run_actor = source


def current_actor() -> Actor:
    """The actor of `acting_as`, else the run in progress, else this process's user and host."""
    return _acting.get() or (_run_actor() if _run_actor is not None else None) or Actor.here()


class AuditNote:
    """What an `audited` block learned while it ran: the object and a detail to record."""

    def __init__(self, object: str, database: str | None, detail: str) -> None:
        self.object, self.database, self.detail = object, database, detail
        self.extra: dict[str, str] = {}
        self.failed = False  # an action that reports its failure rather than raising it (a drill)


@contextmanager
def audited(repo: Repository, action: AuditAction, *, object: str = "", database: str | None = None,
            detail: str = "") -> Iterator[AuditNote]:
    """Record one action when the block ends: succeeded, failed (with the error's line, which
    never holds a secret) or cancelled (interrupted). The action's own error wins over a
    failure to write the record."""
    note = AuditNote(object, database, detail)
    outcome: AuditOutcome = "succeeded"
    try:
        yield note
        if note.failed:
            outcome = "failed"
    except (KeyboardInterrupt, SystemExit):
        outcome = "cancelled"
        raise
    except BaseException as exc:
        outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
        note.detail = _error_line(exc) or note.detail
        raise
    finally:
        try:
            record(repo, action, outcome, current_actor(), object=note.object, database=note.database,
                   detail=note.detail, extra=note.extra)
        except Exception:
            if outcome == "succeeded":
                raise
            # the action's own error is already on its way out; it says more than this one


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, VaultflowError):
        return exc.line()
    return type(exc).__name__


def records(repo: Repository, *, since: datetime | None = None) -> list[AuditRecord]:
    """Every audit record in the repository (oldest first), from `since` on."""
    out: list[AuditRecord] = []
    for info in repo.store.list(AUDIT_PREFIX):
        record_id = info.key.removeprefix(AUDIT_PREFIX)
        if since is not None and record_id[:15] < f"{since.astimezone(UTC):%Y%m%dt%H%M%S}":
            continue
        try:
            payload = repo.sealer.open(repo.store.get(info.key), _aad(record_id))
        except SealError:
            raise IntegrityError(f"audit record {record_id} is damaged or was altered",
                                 "the trail cannot be trusted past it; keep the repository for inspection") from None
        entry = AuditRecord.model_validate_json(payload)
        if since is None or entry.at >= since:
            out.append(entry)
    return sorted(out, key=lambda r: (r.at, r.id))


_SINCE_AGO = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`7d`, `36h`, `30m`, `2w` ago, or an ISO date or time (UTC unless it says otherwise);
    InputError otherwise."""
    value = text.strip()
    ago = _SINCE_AGO.match(value)
    if ago:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--since {text!r} is neither a duration nor a date",
                         "write it like 7d, 36h, 30m, 2w, 2026-12-01 or 2026-12-01T08:00") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def check_action(action: str) -> AuditAction:
    """`action` as an AuditAction; InputError naming the known ones otherwise."""
    known: tuple[AuditAction, ...] = get_args(AuditAction)
    for a in known:
        if a == action:
            return a
    raise InputError(f"unknown action {action!r}", "choose one of " + ", ".join(known))


def matching(entries: list[AuditRecord], *, action: str | None = None, database: str | None = None,
             actor: str | None = None) -> list[AuditRecord]:
    """The records of `action`, whose database and actor label contain `database` and `actor`
    (as the catalog's `audit_events` matches them)."""
    return [e for e in entries
            if (action is None or e.action == action)
            and (database is None or database in (e.database or ""))
            and (actor is None or actor in e.actor.label())]
