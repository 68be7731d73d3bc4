"""Retention: which snapshots a policy keeps. Pure functions of (snapshots, policy, now).

Rules are a union, as in restic: a snapshot is kept if any rule keeps it. Per database:
- `keep_last` N newest snapshots;
- `keep_within` every snapshot taken in that span before `now`;
- `keep_hourly/daily/weekly/monthly/yearly` N: the newest snapshot of each of the N most
  recent hours/days/ISO weeks/months/years that have a snapshot (GFS tiers);
- always the newest snapshot (a database never loses its last good backup);
- always the full snapshot that starts the chain of any kept snapshot.
"""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        counts = {name: getattr(self, name) for name in _TIERS} | {"keep_last": self.keep_last}
        negative = [f"{k}={v}" for k, v in counts.items() if v < 0]
        if negative:
            raise InputError(f"retention policy has negative counts ({', '.join(negative)})",
                             "use 0 to switch a rule off")
        if self.keep_within is not None and self.keep_within <= timedelta(0):
            raise InputError("retention policy keep_within must be a positive duration", "e.g. 30d")
        if not any(counts.values()) and self.keep_within is None:
            raise InputError("retention policy keeps nothing (every rule is zero)",
                             "set keep_last, keep_within or a GFS count, or use a preset")


PRESETS: dict[str, RetentionPolicy] = {
    "default": RetentionPolicy(keep_last=10, keep_within=timedelta(days=30)),
    "aggressive": RetentionPolicy(keep_last=5, keep_within=timedelta(days=7)),
    "conservative": RetentionPolicy(keep_last=14, keep_daily=14, keep_weekly=8, keep_monthly=12,
                                    keep_yearly=3),
    "compliance": RetentionPolicy(keep_last=100, keep_within=timedelta(days=365)),
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


@dataclass
class RetentionDecision:
    keep: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> reasons
    forget: list[str] = field(default_factory=list)


def decide(snapshots: Sequence[SnapshotFacts], policy: RetentionPolicy, now: datetime) -> RetentionDecision:
    """Split snapshots into kept (with reasons) and forgotten, per database."""
    by_db: dict[str, list[SnapshotFacts]] = defaultdict(list)
    for snap in snapshots:
        by_db[snap.database].append(snap)
    decision = RetentionDecision()
    for group in by_db.values():
        group.sort(key=lambda s: (s.taken_at, s.id), reverse=True)
        reasons: dict[str, list[str]] = defaultdict(list)
        reasons[group[0].id].append("newest")
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
        kept_chains = {s.chain for s in group if s.id in reasons and s.chain}
        for snap in group:
            if snap.kind == "full" and snap.chain in kept_chains and snap.id not in reasons:
                reasons[snap.id].append("chain")
        for snap in group:
            if snap.id in reasons:
                decision.keep[snap.id] = reasons[snap.id]
            else:
                decision.forget.append(snap.id)
    return decision


def parse_duration(text: str) -> timedelta:
    """'36h', '30d', '8w', '1y' (365 days)."""
    units = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1),
             "y": timedelta(days=365)}
    value, unit = text[:-1], text[-1:].lower()
    if unit not in units or not value.isdigit():
        raise InputError(f"cannot read duration {text!r}", "write it like 36h, 30d, 8w or 1y")
    return int(value) * units[unit]
