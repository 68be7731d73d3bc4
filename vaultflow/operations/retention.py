"""Retention: which snapshots a policy keeps. Pure functions of (snapshots, policy, now).

Two kinds of rule, per database:

Floors (restic's rules, a union: a snapshot is kept if any floor keeps it):
- `keep_last` N newest snapshots;
- `keep_within` every snapshot taken in that span before `now`;
- `keep_hourly/daily/weekly/monthly/yearly` N: the newest snapshot of each of the N most
  recent hours/days/ISO weeks/months/years that have a snapshot (GFS tiers).
A policy without floors starts from every snapshot.

Caps (what Databasus-style tools mean by "10 backups, 30 days"), applied to what the floors
kept: `max_count` keeps at most the N newest, `max_age` nothing older than D.

Never forgotten, whatever the rules say (keep-minimum-one):
- the newest snapshot of a database (snapshots exist only once they succeeded, so this is
  the newest succeeded one: a database never loses its last good backup);
- the newest snapshot a restore drill proved restorable;
- the full snapshot that starts the chain of any kept snapshot (what a kept one depends on).
So a cap can be exceeded by those, and only by those.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vaultflow.errors import InputError

_TIERS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "keep_hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "keep_daily": lambda t: (t.year, t.month, t.day),
    "keep_weekly": lambda t: tuple(t.isocalendar()[:2]),
    "keep_monthly": lambda t: (t.year, t.month),
    "keep_yearly": lambda t: (t.year,),
}


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 0
    keep_within: timedelta | None = None
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    max_count: int | None = None  # cap: at most this many per database (None: no cap)
    max_age: timedelta | None = None  # cap: nothing older than this (None: no cap)

    @property
    def has_floors(self) -> bool:
        return bool(self.keep_last or self.keep_within or any(getattr(self, t) for t in _TIERS))

    @property
    def horizon(self) -> tuple[timedelta, str] | None:
        """How long this policy means to keep a snapshot, and the rule that says so: the longest
        time floor (keep_within; a GFS tier of N as N hours, days, weeks, 31-day months or 366-day
        years, the least it spans), cut by max_age; None when only counts bound it (keep_last,
        max_count without max_age)."""
        spans = [(self.keep_within, f"keep_within {_days(self.keep_within)}")] if self.keep_within else []
        spans += [(_TIER_SPANS[tier] * getattr(self, tier), f"{tier} {getattr(self, tier)}")
                  for tier in _TIERS if getattr(self, tier)]
        longest = max(spans, key=lambda span: span[0], default=None)
        if self.max_age is not None and (longest is None or self.max_age < longest[0]):
            return self.max_age, f"max_age {_days(self.max_age)}"
        return longest

    def __post_init__(self) -> None:
        if self.max_count is not None and self.max_count < 1:
            raise InputError(f"retention cap max_count={self.max_count} would delete every backup",
                             "give a cap of at least 1, or leave it out")
        if self.max_age is not None and self.max_age <= timedelta(0):
            raise InputError("retention cap max_age must be a positive duration", "e.g. 30d")
        counts = {name: getattr(self, name) for name in _TIERS} | {"keep_last": self.keep_last}
        negative = [f"{k}={v}" for k, v in counts.items() if v < 0]
        if negative:
            raise InputError(f"retention policy has negative counts ({', '.join(negative)})",
                             "use 0 to switch a rule off")
        if self.keep_within is not None and self.keep_within <= timedelta(0):
            raise InputError("retention policy keep_within must be a positive duration", "e.g. 30d")
        if not self.has_floors and self.max_count is None and self.max_age is None:
            raise InputError("retention policy keeps nothing (every rule is zero)",
                             "set keep_last, keep_within, a GFS count or a cap (max_count, max_age), or use a preset")


PRESETS: dict[str, RetentionPolicy] = {
    # Caps, as the tools these presets are named after mean them: at most N, none older than D.
    "default": RetentionPolicy(max_count=10, max_age=timedelta(days=30)),
    "aggressive": RetentionPolicy(max_count=5, max_age=timedelta(days=7)),
    "compliance": RetentionPolicy(max_count=100, max_age=timedelta(days=365)),
    # Grandfather-father-son floors.
    "conservative": RetentionPolicy(keep_last=14, keep_daily=14, keep_weekly=8, keep_monthly=12,
                                    keep_yearly=3),
}


def preset(name: str) -> RetentionPolicy:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown retention preset {name!r}",
                         f"choose one of {', '.join(sorted(PRESETS))}") from None


@dataclass(frozen=True)
class SnapshotFacts:
    """What retention needs to know of a snapshot."""

    id: str
    database: str  # any key that identifies the database, e.g. engine://server/db
    taken_at: datetime
    kind: str = "full"
    chain: str = ""
    proven: bool = False  # a restore drill of this snapshot passed


@dataclass
class RetentionDecision:
    keep: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> reasons
    forget: list[str] = field(default_factory=list)


PolicyFor = Callable[[str], RetentionPolicy]
"""The policy of one database, given its key (as SnapshotFacts.database)."""


_TIER_SPANS = {"keep_hourly": timedelta(hours=1), "keep_daily": timedelta(days=1), "keep_weekly": timedelta(weeks=1),
               "keep_monthly": timedelta(days=31), "keep_yearly": timedelta(days=366)}


def _days(span: timedelta) -> str:
    return f"{span / timedelta(days=1):g}d" if span >= timedelta(days=1) else f"{span / timedelta(hours=1):g}h"


@dataclass(frozen=True)
class PolicyMap:
    """Policies per database: the first rule whose glob matches the database key
    (`engine://server/db`) or its database name wins, else `default`."""

    default: RetentionPolicy
    rules: tuple[tuple[str, RetentionPolicy], ...] = ()

    @property
    def horizon(self) -> tuple[timedelta, str] | None:
        """The longest horizon of its policies (RetentionPolicy.horizon)."""
        spans = [h for h in (p.horizon for p in (self.default, *(rule for _, rule in self.rules))) if h is not None]
        return max(spans, key=lambda span: span[0], default=None)

    def __call__(self, database: str) -> RetentionPolicy:
        name = database.rsplit("/", 1)[-1]
        for pattern, policy in self.rules:
            if fnmatch.fnmatchcase(database, pattern) or fnmatch.fnmatchcase(name, pattern):
                return policy
        return self.default


def decide(snapshots: Sequence[SnapshotFacts], policy: RetentionPolicy | PolicyFor, now: datetime
           ) -> RetentionDecision:
    """Split snapshots into kept (with reasons) and forgotten, per database.

    `policy` is one policy for every database, or a function (a PolicyMap) giving each
    database its own."""
    by_db: dict[str, list[SnapshotFacts]] = defaultdict(list)
    for snap in snapshots:
        by_db[snap.database].append(snap)
    decision = RetentionDecision()
    for database, group in by_db.items():
        group.sort(key=lambda s: (s.taken_at, s.id), reverse=True)
        reasons = _decide_database(group, policy if isinstance(policy, RetentionPolicy) else policy(database), now)
        for snap in group:
            if snap.id in reasons:
                decision.keep[snap.id] = reasons[snap.id]
            else:
                decision.forget.append(snap.id)
    return decision


def _decide_database(group: list[SnapshotFacts], policy: RetentionPolicy, now: datetime) -> dict[str, list[str]]:
    """Reasons per kept snapshot of one database; `group` is sorted newest first."""
    reasons: dict[str, list[str]] = defaultdict(list)
    if policy.has_floors:
        for snap in group[: policy.keep_last]:
            reasons[snap.id].append("last")
        if policy.keep_within is not None:
            for snap in group:
                if now - snap.taken_at <= policy.keep_within:
                    reasons[snap.id].append("within")
        for tier, bucket_of in _TIERS.items():
            wanted = getattr(policy, tier)
            seen: set[tuple[int, ...]] = set()
            for snap in group:
                if len(seen) >= wanted:
                    break
                bucket = bucket_of(snap.taken_at)
                if bucket not in seen:
                    seen.add(bucket)
                    reasons[snap.id].append(tier.removeprefix("keep_"))
    else:
        for snap in group:
            reasons[snap.id].append("within caps")  # caps only: everything, then the caps cut
    kept = [s for s in group if s.id in reasons]
    for index, snap in enumerate(kept):
        over_count = policy.max_count is not None and index >= policy.max_count
        too_old = policy.max_age is not None and now - snap.taken_at > policy.max_age
        if over_count or too_old:
            del reasons[snap.id]
    # Keep-minimum-one, after the caps: these are never forgotten.
    reasons[group[0].id].append("newest")
    proven = next((s for s in group if s.proven), None)
    if proven is not None:
        reasons[proven.id].append("newest proven")
    kept_chains = {s.chain for s in group if s.id in reasons and s.chain}
    for snap in group:
        if snap.kind == "full" and snap.chain in kept_chains and snap.id not in reasons:
            reasons[snap.id].append("chain")
    return reasons


def parse_duration(text: str) -> timedelta:
    """'36h', '30d', '8w', '1y' (365 days)."""
    units = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1),
             "y": timedelta(days=365)}
    value, unit = text[:-1], text[-1:].lower()
    if unit not in units or not value.isdigit():
        raise InputError(f"cannot read duration {text!r}", "write it like 36h, 30d, 8w or 1y")
    return int(value) * units[unit]
