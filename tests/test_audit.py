"""The audit trail: write-once sealed records in the repository, read back in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vaultflow.audit import AUDIT_PREFIX, Actor, record, records
from vaultflow.errors import InputError, IntegrityError
from vaultflow.repository import Repository
from vaultflow.storage import LocalStore


def test_records_round_trip_in_time_order_and_are_sealed(tmp_path: Path) -> None:
    repo = Repository.init(LocalStore(tmp_path / "repo"), "pw")
    t0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
    actor = Actor.here(deployment="backup/nightly", flow_run="run-1")
    second = record(repo, "forget", "succeeded", actor, object="1a2b3c4d", database="sqlite://x/app.db",
                    detail="forgot 1 snapshot", now=t0 + timedelta(minutes=5))
    first = record(repo, "backup", "failed", Actor.here(), object="sqlite://x/app.db", now=t0)
    assert [r.id for r in records(repo)] == [first.id, second.id]
    assert [r.id for r in records(repo, since=t0 + timedelta(minutes=1))] == [second.id]
    assert records(repo)[1].actor.deployment == "backup/nightly" and "backup/nightly" in actor.label()
    raw = repo.store.get(AUDIT_PREFIX + second.id)
    assert b"forgot" not in raw and b"1a2b3c4d" not in raw  # sealed, not plaintext
    reopened = Repository.open(LocalStore(tmp_path / "repo"), "pw")
    assert records(reopened) == records(repo)


def test_an_altered_record_is_refused(tmp_path: Path) -> None:
    repo = Repository.init(LocalStore(tmp_path / "repo"), "pw")
    a = record(repo, "init", "succeeded", Actor.here())
    b = record(repo, "prune", "succeeded", Actor.here())
    repo.store.put(AUDIT_PREFIX + a.id, repo.store.get(AUDIT_PREFIX + b.id))  # swapped for another record
    with pytest.raises(IntegrityError, match=f"audit record {a.id}"):
        records(repo)


def test_the_catalog_index_comes_back_from_the_repository(tmp_path: Path) -> None:
    from vaultflow.catalog import Catalog

    repo = Repository.init(LocalStore(tmp_path / "repo"), "pw")
    record(repo, "backup", "succeeded", Actor(user="dba", host="h1"), object="abc", database="postgresql://db1/app")
    record(repo, "restore", "failed", Actor(user="ops", host="h2", flow_run="r9"), object="abc",
           database="postgresql://db1/app")
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    assert catalog.index_audit(records(repo), repository_id=repo.id) == 2
    catalog.index_audit(records(repo), repository_id=repo.id)  # idempotent
    rows = catalog.audit_events(repository_id=repo.id)
    assert [(r.action, r.outcome, r.actor) for r in rows] == [("backup", "succeeded", "dba@h1"),
                                                               ("restore", "failed", "ops@h2 (flow run r9)")]
    assert [r.action for r in catalog.audit_events(actor="ops")] == ["restore"]
    assert [r.action for r in catalog.audit_events(action="backup", database="app")] == ["backup"]


def test_state_changing_operations_leave_a_record_with_their_outcome(tmp_path: Path) -> None:
    from tests.test_forget import take
    from vaultflow.archive import purge_batches
    from vaultflow.audit import acting_as
    from vaultflow.operations.copy import copy_snapshots
    from vaultflow.operations.forget import forget
    from vaultflow.operations.prune import prune
    from vaultflow.operations.restore import export_snapshot
    from vaultflow.operations.retention import RetentionPolicy
    from vaultflow.sample_data import create

    repo = Repository.init(LocalStore(tmp_path / "repo"), "pw")
    db = create(tmp_path / "app.db", rows=300)
    first, second, third = take(repo, db), take(repo, db), take(repo, db)
    with pytest.raises(InputError):
        forget(repo, ["nosuchsnapshot"])
    forget(repo, [first.id], dry_run=True)  # a dry run changes nothing and records nothing
    with acting_as(Actor.here(deployment="prune/daily", flow_run="run-7")):
        forget(repo, [first.id])
        prune(repo, RetentionPolicy(keep_last=1), datetime.now(UTC))
    dest = Repository.init(LocalStore(tmp_path / "second"), "pw")
    copy_snapshots(repo, dest)

    export_snapshot(repo, third.id, tmp_path / "exported.db")
    purge_batches(repo, delete_after_days=0, dry_run=True)  # a dry run records nothing
    purge_batches(repo, delete_after_days=0)

    trail = [(r.action, r.outcome) for r in records(repo)]
    assert trail == [("backup", "succeeded")] * 3 + [
        ("forget", "failed"), ("forget", "succeeded"), ("prune", "succeeded"), ("export", "succeeded"),
        ("purge", "succeeded")]
    backed_up, *_, failed, forgot, pruned, exported, purged = records(repo)
    assert backed_up.object == first.id and backed_up.database == "app.db" and "full" in backed_up.detail
    assert exported.object == third.id and exported.database == "app.db" and "exported.db" in exported.detail
    assert purged.detail.startswith("purged 0 batch(es)")
    assert "nosuchsnapshot" in failed.detail and failed.actor.deployment is None
    assert forgot.object == first.id and forgot.actor.deployment == "prune/daily"
    assert pruned.object == second.id and pruned.actor.flow_run == "run-7"
    (copied,) = records(dest)
    assert copied.action == "copy" and copied.object == third.id and "1 copied" in copied.detail


def test_since_takes_a_duration_or_a_date_and_actions_are_checked() -> None:
    from vaultflow.audit import check_action, parse_since

    now = datetime(2026, 12, 8, 12, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert parse_since("36h", now) == now - timedelta(hours=36)
    assert parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("2026-12-01T08:00+01:00") == datetime(2026, 12, 1, 7, tzinfo=UTC)
    for bad in ("yesterday", "-7d", "7y", ""):
        with pytest.raises(InputError, match="neither a duration nor a date"):
            parse_since(bad, now)
    assert check_action("backup") == "backup"
    with pytest.raises(InputError, match="unknown action 'delete'.*backup"):
        check_action("delete")
