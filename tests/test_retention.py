"""Retention decisions over fixed timestamps (no clock, no storage)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from vaultflow.errors import InputError
from vaultflow.operations.retention import (
    PRESETS,
    PolicyMap,
    RetentionPolicy,
    SnapshotFacts,
    decide,
    parse_duration,
    preset,
)

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


def test_presets_are_caps() -> None:
    """The presets mean what the seed systems mean: at most N, nothing older than D."""
    assert preset("default") == RetentionPolicy(max_count=10, max_age=timedelta(days=30))
    assert preset("aggressive") == RetentionPolicy(max_count=5, max_age=timedelta(days=7))
    assert preset("compliance") == RetentionPolicy(max_count=100, max_age=timedelta(days=365))
    assert preset("conservative").keep_daily == 14 and preset("conservative").max_count is None  # GFS floors
    assert set(PRESETS) == {"default", "aggressive", "conservative", "compliance"}
    assert kept(daily(400), preset("default")) == [f"db-{i:03d}" for i in range(10)]  # the cap, not 30 days
    assert len(kept(daily(400), preset("aggressive"))) == 5
    assert len(kept(daily(400), preset("compliance"))) == 100
    # Fewer than the count: the age cap decides (ages 10 h .. 29 d 10 h within 30 days).
    assert len(kept(daily(400)[::5], preset("default"))) == 6
    with pytest.raises(InputError, match="unknown retention preset 'weekly'"):
        preset("weekly")


@pytest.mark.parametrize("kwargs", [
    {"keep_last": -1}, {"keep_daily": -3}, {}, {"keep_within": timedelta(0)}, {"keep_last": 0, "keep_daily": 0},
    {"max_count": 0}, {"keep_last": 3, "max_count": 0}, {"max_age": timedelta(0)},
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


def test_caps_cut_what_the_floors_keep() -> None:
    snaps = daily(60)
    assert kept(snaps, RetentionPolicy(keep_daily=30, max_count=7)) == [f"db-{i:03d}" for i in range(7)]
    assert kept(snaps, RetentionPolicy(keep_last=20, max_age=timedelta(days=3))) == ["db-000", "db-001", "db-002"]
    assert kept(snaps, RetentionPolicy(max_age=timedelta(days=1))) == ["db-000"]


def test_caps_never_forget_the_newest_or_the_newest_proven() -> None:
    old = [SnapshotFacts(id=f"s{i}", database="db", taken_at=NOW - timedelta(days=100 + i),
                         proven=(i == 3)) for i in range(6)]
    d = decide(old, RetentionPolicy(max_count=1, max_age=timedelta(days=7)), NOW)
    assert d.keep == {"s0": ["newest"], "s3": ["newest proven"]}
    assert sorted(d.forget) == ["s1", "s2", "s4", "s5"]


def test_caps_keep_the_full_a_kept_incremental_depends_on() -> None:
    full = SnapshotFacts(id="f", database="db", taken_at=NOW - timedelta(days=40), kind="full", chain="c1")
    inc = SnapshotFacts(id="i", database="db", taken_at=NOW - timedelta(days=1), kind="incremental", chain="c1")
    d = decide([full, inc], preset("default"), NOW)
    assert d.keep == {"i": ["within caps", "newest"], "f": ["chain"]}


def test_policies_per_database() -> None:
    snaps = daily(20, "postgresql://db1:5432/app") + daily(20, "postgresql://db1:5432/audit")
    policies = PolicyMap(default=preset("aggressive"), rules=(("audit", RetentionPolicy(max_count=15)),))
    keep = decide(snaps, policies, NOW).keep
    assert sum(k.endswith("/app-" + k[-3:]) for k in keep) == 5
    assert len([k for k in keep if "/audit-" in k]) == 15
    glob = PolicyMap(default=preset("aggressive"), rules=(("postgresql://db1:*/a*", RetentionPolicy(max_count=2)),))
    assert len(decide(snaps, glob, NOW).keep) == 4


@pytest.mark.parametrize("seed", range(300))
def test_random_histories_keep_every_guarantee(seed: int) -> None:
    """Property test over random histories: kinds, chains, drills, gaps (failed runs leave
    no snapshot, so a failure is a gap in the history), random policies."""
    rng = random.Random(seed)
    snaps: list[SnapshotFacts] = []
    for db in ("a", "b", "c")[: rng.randint(1, 3)]:
        t, chain, kinds = NOW - timedelta(days=rng.randint(0, 500)), "", ["full", "incremental", "differential"]
        for i in range(rng.randint(1, 40)):
            kind = "full" if not chain else rng.choice(kinds)
            chain = f"{db}-{i}" if kind == "full" else chain
            snaps.append(SnapshotFacts(id=f"{db}-{i:02d}", database=db, taken_at=t, kind=kind, chain=chain,
                                       proven=rng.random() < 0.2))
            t += timedelta(hours=rng.choice([1, 6, 24, 24, 24, 24 * 7]))  # irregular: missed runs are gaps
    floors = rng.choice([{}, {"keep_last": rng.randint(1, 10)}, {"keep_daily": rng.randint(1, 14)},
                         {"keep_within": timedelta(days=rng.randint(1, 60)), "keep_monthly": rng.randint(0, 6)}])
    caps = rng.choice([{}, {"max_count": rng.randint(1, 20)}, {"max_age": timedelta(days=rng.randint(1, 90))},
                       {"max_count": rng.randint(1, 20), "max_age": timedelta(days=rng.randint(1, 90))}])
    if not floors and not caps:
        caps = {"max_count": 3}
    policy = RetentionPolicy(**floors, **caps)  # type: ignore[arg-type]
    now = max(s.taken_at for s in snaps) + timedelta(hours=rng.randint(0, 24 * 30))
    d = decide(snaps, policy, now)
    assert sorted([*d.keep, *d.forget]) == sorted(s.id for s in snaps) and not set(d.keep) & set(d.forget)
    for db in {s.database for s in snaps}:
        group = sorted((s for s in snaps if s.database == db), key=lambda s: (s.taken_at, s.id), reverse=True)
        kept_here = [s for s in group if s.id in d.keep]
        protected = {group[0].id} | ({next(s.id for s in group if s.proven)} if any(s.proven for s in group)
                                     else set())
        assert group[0].id in d.keep  # never the newest
        if any(s.proven for s in group):
            assert next(s for s in group if s.proven).id in d.keep  # never the newest proven
        kept_chains = {s.chain for s in kept_here}
        for s in group:  # never a full a kept snapshot depends on
            if s.kind == "full" and s.chain in kept_chains:
                assert s.id in d.keep
                protected.add(s.id)
        if "max_count" in caps:  # at most N, except the protected ones
            assert len([s for s in kept_here if s.id not in protected]) <= caps["max_count"]
        if "max_age" in caps:  # nothing older than D, except the protected ones
            assert all(now - s.taken_at <= caps["max_age"] or s.id in protected for s in kept_here)
        if not caps:  # floors alone: every snapshot a floor selects stays
            if "keep_last" in floors:
                assert all(s.id in d.keep for s in group[: floors["keep_last"]])
            if "keep_within" in floors:
                assert all(s.id in d.keep for s in group if now - s.taken_at <= floors["keep_within"])


def test_a_policy_s_horizon_and_a_lock_shorter_than_it() -> None:
    from vaultflow.operations.object_lock import lock_shorter_than_retention
    from vaultflow.repository.repository import ObjectLockSettings

    day = timedelta(days=1)
    assert RetentionPolicy(keep_within=30 * day).horizon == (30 * day, "keep_within 30d")
    assert preset("default").horizon == (30 * day, "max_age 30d")
    assert RetentionPolicy(keep_daily=7, keep_weekly=4).horizon == (28 * day, "keep_weekly 4")
    assert RetentionPolicy(keep_monthly=12, max_age=90 * day).horizon == (90 * day, "max_age 90d")
    assert RetentionPolicy(keep_hourly=36).horizon == (timedelta(hours=36), "keep_hourly 36")
    assert RetentionPolicy(keep_last=5).horizon is None and RetentionPolicy(max_count=3).horizon is None
    per_database = PolicyMap(RetentionPolicy(keep_last=3), (("shop*", preset("compliance")),))
    assert per_database.horizon == (365 * day, "max_age 365d")

    week = ObjectLockSettings("governance", 7 * day)
    assert lock_shorter_than_retention(None, preset("compliance")) is None
    assert lock_shorter_than_retention(week, RetentionPolicy(keep_within=7 * day)) is None
    assert lock_shorter_than_retention(week, RetentionPolicy(keep_last=100)) is None
    line = lock_shorter_than_retention(week, per_database)
    assert line is not None
    assert "governance lock for 7 day(s) is shorter than the retention policy (max_age 365d)" in line
