"""Retention decisions over fixed timestamps (no clock, no storage)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vaultflow.errors import InputError
from vaultflow.operations.retention import PRESETS, RetentionPolicy, SnapshotFacts, decide, parse_duration, preset

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def daily(n: int, db: str = "db", start: datetime = NOW) -> list[SnapshotFacts]:
    """One full snapshot a day at 02:00, newest first (day 0 is today)."""
    return [SnapshotFacts(id=f"{db}-{i:03d}", database=db, taken_at=start.replace(hour=2) - timedelta(days=i),
                          chain=f"{db}-{i:03d}") for i in range(n)]


def kept(snaps: list[SnapshotFacts], policy: RetentionPolicy) -> list[str]:
    d = decide(snaps, policy, NOW)
    assert sorted([*d.keep, *d.forget]) == sorted(s.id for s in snaps)
    return sorted(d.keep)


@pytest.mark.parametrize(("policy", "expected"), [
    (RetentionPolicy(keep_last=3), ["db-000", "db-001", "db-002"]),
    (RetentionPolicy(keep_within=timedelta(days=2)), ["db-000", "db-001"]),
    (RetentionPolicy(keep_within=timedelta(days=2, hours=11)), ["db-000", "db-001", "db-002"]),
    (RetentionPolicy(keep_weekly=2), ["db-000", "db-007"]),  # ISO weeks: Sun 22 Nov, Sun 15 Nov
    (RetentionPolicy(keep_monthly=2), ["db-000", "db-022"]),  # 22 Nov and 31 Oct
    (RetentionPolicy(keep_yearly=5), ["db-000"]),
    (RetentionPolicy(keep_last=1, keep_monthly=3), ["db-000", "db-022", "db-053"]),  # + 30 Sep
])
def test_rules(policy: RetentionPolicy, expected: list[str]) -> None:
    assert kept(daily(60), policy) == expected


def test_weekly_buckets_are_iso_weeks() -> None:
    snaps = daily(15)
    weeks = {s.taken_at.isocalendar()[:2] for s in snaps}
    assert len(kept(snaps, RetentionPolicy(keep_weekly=10))) == len(weeks)


def test_hourly_keeps_newest_of_each_hour() -> None:
    snaps = [SnapshotFacts(id=f"s{i}", database="db", taken_at=NOW - timedelta(minutes=20 * i)) for i in range(9)]
    # 12:00, 11:40, 11:20, 11:00, 10:40 ... : the newest of hours 12, 11, 10
    assert kept(snaps, RetentionPolicy(keep_hourly=3)) == ["s0", "s1", "s4"]


def test_newest_is_never_deleted() -> None:
    old = [SnapshotFacts(id="only", database="db", taken_at=NOW - timedelta(days=900))]
    d = decide(old, RetentionPolicy(keep_within=timedelta(days=1)), NOW)
    assert d.keep == {"only": ["newest"]} and d.forget == []


def test_databases_are_independent() -> None:
    snaps = daily(5, "a") + daily(5, "b")
    assert kept(snaps, RetentionPolicy(keep_last=2)) == ["a-000", "a-001", "b-000", "b-001"]


def test_full_of_a_kept_chain_is_kept() -> None:
    full = SnapshotFacts(id="f", database="db", taken_at=NOW - timedelta(days=10), kind="full", chain="c1")
    incs = [SnapshotFacts(id=f"i{i}", database="db", taken_at=NOW - timedelta(days=9 - i), kind="incremental",
                          chain="c1") for i in range(5)]
    other = SnapshotFacts(id="g", database="db", taken_at=NOW - timedelta(days=30), kind="full", chain="c0")
    d = decide([full, other, *incs], RetentionPolicy(keep_last=2), NOW)
    assert set(d.keep) == {"i4", "i3", "f"} and d.keep["f"] == ["chain"]
    assert sorted(d.forget) == ["g", "i0", "i1", "i2"]


def test_presets() -> None:
    assert preset("default") == RetentionPolicy(keep_last=10, keep_within=timedelta(days=30))
    assert preset("aggressive").keep_last == 5 and preset("compliance").keep_within == timedelta(days=365)
    assert set(PRESETS) == {"default", "aggressive", "conservative", "compliance"}
    assert len(kept(daily(400), preset("default"))) == 30  # ages 10 h .. 29 d 10 h
    assert len(kept(daily(400), preset("compliance"))) == 365
    with pytest.raises(InputError, match="unknown retention preset 'weekly'"):
        preset("weekly")


@pytest.mark.parametrize("kwargs", [
    {"keep_last": -1}, {"keep_daily": -3}, {}, {"keep_within": timedelta(0)}, {"keep_last": 0, "keep_daily": 0},
])
def test_malformed_policies(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        RetentionPolicy(**kwargs)  # type: ignore[arg-type]


def test_parse_duration() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("36h") == timedelta(hours=36)
    assert parse_duration("1y") == timedelta(days=365)
    with pytest.raises(InputError):
        parse_duration("ten days")
