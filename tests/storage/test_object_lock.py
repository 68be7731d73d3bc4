"""Immutable storage: S3 Object Lock on moto's server (buckets created with object lock enabled).

moto does not apply lock parameters to multipart uploads and lets COMPLIANCE retention be
shortened (notes: anchors-pitr-immutability.md §2.4), so these tests check retention dates
through HeadObject and never rely on moto refusing to shorten one.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from tests.conftest import PASSPHRASE, _run_cli_in_process
from tests.object_servers import S3Server
from vaultflow.engines.sqlite.engine import SqliteEngine
from vaultflow.errors import InputError
from vaultflow.operations.backup import backup_database, plan_backup
from vaultflow.operations.forget import forget
from vaultflow.operations.init import init_repository
from vaultflow.operations.object_lock import extend_locks
from vaultflow.operations.prune import prune
from vaultflow.operations.retention import RetentionPolicy
from vaultflow.repository import Repository, SnapshotManifest, new_object_id
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.manifest import SnapshotKind
from vaultflow.repository.repository import CONFIG_KEY, SNAPSHOT_PREFIX, ObjectLockSettings, chunk_key
from vaultflow.sample_data import create
from vaultflow.storage import ObjectStore
from vaultflow.storage.s3 import S3Settings, S3Store

PREFIX = "repo"
DAY = timedelta(days=1)


def lock_bucket(server: S3Server) -> str:
    name = f"vf-lock-{new_object_id()[:10]}"
    server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def s3_store(server: S3Server, bucket: str) -> ObjectStore:
    return S3Settings(bucket, PREFIX, endpoint_url=server.endpoint, region="us-east-1", access_key_id="testing",
                      secret_access_key=SecretStr("testing")).open()


def locked_repo(server: S3Server, bucket: str, mode: str = "governance") -> Repository:
    lock = ObjectLockSettings("governance" if mode == "governance" else "compliance", DAY)
    init_repository(s3_store(server, bucket), PASSPHRASE, object_lock=lock)
    return Repository.open(s3_store(server, bucket), PASSPHRASE)  # a later command reads the lock from the config


def versions(server: S3Server, bucket: str) -> tuple[Counter[str], Counter[str]]:
    """Object versions per key and delete markers per key (keys without the prefix)."""
    kept: Counter[str] = Counter()
    markers: Counter[str] = Counter()
    for page in server.client().get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            kept[v["Key"][len(PREFIX) + 1:]] += 1
        for v in page.get("DeleteMarkers", []):
            markers[v["Key"][len(PREFIX) + 1:]] += 1
    return kept, markers


def head(server: S3Server, bucket: str, key: str) -> dict[str, Any]:
    result: dict[str, Any] = server.client().head_object(Bucket=bucket, Key=f"{PREFIX}/{key}")
    return result


def delete_version(server: S3Server, bucket: str, key: str) -> str:
    """Try to delete the current version of `key` (no bypass); the error code, or "" if deleted."""
    client = server.client()
    version = head(server, bucket, key)["VersionId"]
    try:
        client.delete_object(Bucket=bucket, Key=f"{PREFIX}/{key}", VersionId=version)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return ""


def shorten(server: S3Server, bucket: str, keys: list[str], until: datetime) -> None:
    """Governance mode: an admin with bypass rights shortens the retention (for a short-lock test)."""
    for key in keys:
        server.client().put_object_retention(Bucket=bucket, Key=f"{PREFIX}/{key}", BypassGovernanceRetention=True,
                                             Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})


def snapshot_keys(m: SnapshotManifest) -> list[str]:
    return [SNAPSHOT_PREFIX + m.id, *sorted({chunk_key(m.chain, c.id) for s in m.streams for c in s.chunks})]


def take(repo: Repository, src: Path, kind: SnapshotKind = "full") -> SnapshotManifest:
    sid, engine = new_object_id(), SqliteEngine(src)
    return backup_database(engine, repo, snapshot_id=sid, plan=plan_backup(repo, engine, kind, sid))


def test_init_records_the_lock_and_every_object_written_is_retained(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = lock_bucket(s3_server)
    before = datetime.now(UTC)
    repo = locked_repo(s3_server, bucket)
    assert repo.object_lock == ObjectLockSettings("governance", DAY)
    m = take(repo, create(tmp_path / "a.db", rows=500))
    for key in [CONFIG_KEY, *snapshot_keys(m)]:
        info = head(s3_server, bucket, key)
        assert info["ObjectLockMode"] == "GOVERNANCE", key
        assert before + DAY - timedelta(seconds=5) <= info["ObjectLockRetainUntilDate"] <= \
            datetime.now(UTC) + DAY + timedelta(seconds=5)
        assert delete_version(s3_server, bucket, key) == "AccessDenied", key
    audit = [k for k in versions(s3_server, bucket)[0] if k.startswith("audit/")]
    assert audit and all(head(s3_server, bucket, k)["ObjectLockMode"] == "GOVERNANCE" for k in audit)


def test_compliance_mode_is_recorded_and_applied(s3_server: S3Server) -> None:
    bucket = lock_bucket(s3_server)
    repo = locked_repo(s3_server, bucket, "compliance")
    assert repo.config["object_lock"] == {"mode": "compliance", "period_seconds": 86400}
    assert head(s3_server, bucket, CONFIG_KEY)["ObjectLockMode"] == "COMPLIANCE"


def test_a_multipart_upload_is_locked_too(s3_server: S3Server, tmp_path: Path) -> None:
    """moto ignores lock parameters on multipart uploads: the store sets the retention afterwards."""
    bucket = lock_bucket(s3_server)
    repo = locked_repo(s3_server, bucket)
    inner = repo.store.inner  # type: ignore[attr-defined]
    assert isinstance(inner, S3Store)
    inner.multipart_threshold = 5 * 2**20
    big = tmp_path / "big"
    big.write_bytes(b"\x01" * (11 * 2**20))
    repo.store.put_file("archives/p/b/rows.parquet", big)
    info = head(s3_server, bucket, "archives/p/b/rows.parquet")
    assert info["ETag"].strip('"').endswith("-3")  # it really went up in 3 parts
    assert info["ObjectLockMode"] == "GOVERNANCE"
    assert info["ObjectLockRetainUntilDate"] > datetime.now(UTC) + DAY - timedelta(minutes=1)
    assert delete_version(s3_server, bucket, "archives/p/b/rows.parquet") == "AccessDenied"


def test_no_key_is_ever_written_twice(s3_server: S3Server, tmp_path: Path) -> None:
    """init, a full, an incremental, a differential, lock refreshes, prune and forget: one version per key."""
    bucket = lock_bucket(s3_server)
    repo = locked_repo(s3_server, bucket)
    src = create(tmp_path / "a.db", rows=3000)
    full = take(repo, src)
    with RepositoryLock(repo, "shared", "test") as held:
        held.refresh()
        held.refresh()
        held.check_held()
    create(tmp_path / "a.db", rows=3500)
    take(repo, src, "incremental")
    take(repo, src, "differential")  # holds the incremental's chunks, which its known set (the full's) lacks
    other = take(repo, create(tmp_path / "b.db", rows=800))
    take(repo, create(tmp_path / "b.db", rows=900))
    shorten(s3_server, bucket, snapshot_keys(other), datetime.now(UTC) + timedelta(seconds=3))
    time.sleep(4)
    pruned = prune(repo, RetentionPolicy(keep_last=1), datetime.now(UTC))  # a.db: its newest and that one's full
    assert [m.id for m in pruned.forget] == [other.id]
    kept = forget(repo, [full.id], with_dependents=True)  # retained: kept, nothing deleted
    assert kept.forget == [] and full.id in kept.locked
    written, markers = versions(s3_server, bucket)
    assert [k for k, n in written.items() if n > 1] == []
    assert not markers  # deletes remove versions, never leave delete markers
    assert not any(k.startswith("locks/") for k in written)
    assert SNAPSHOT_PREFIX + other.id not in written


def test_prune_keeps_locked_snapshots_whole_and_deletes_them_once_the_lock_expired(
        s3_server: S3Server, tmp_path: Path) -> None:
    bucket = lock_bucket(s3_server)
    repo = locked_repo(s3_server, bucket)
    old = take(repo, create(tmp_path / "a.db", rows=600))
    middle = take(repo, create(tmp_path / "a.db", rows=700))
    newest = take(repo, create(tmp_path / "a.db", rows=800))
    policy = RetentionPolicy(keep_last=1)

    plan = prune(repo, policy, datetime.now(UTC))
    assert plan.forget == [] and sorted(plan.locked) == sorted([old.id, middle.id])
    assert all(until > datetime.now(UTC) + DAY - timedelta(minutes=5) for until in plan.locked.values())
    assert sorted(repo.snapshot_ids()) == sorted([old.id, middle.id, newest.id])
    for key in snapshot_keys(old) + snapshot_keys(middle):
        assert repo.store.exists(key), key

    shorten(s3_server, bucket, snapshot_keys(old), datetime.now(UTC) + timedelta(seconds=3))
    time.sleep(4)
    plan = prune(repo, policy, datetime.now(UTC))
    assert [m.id for m in plan.forget] == [old.id] and list(plan.locked) == [middle.id]
    assert plan.retained == {}
    written, markers = versions(s3_server, bucket)
    shared = set(snapshot_keys(middle)) | set(snapshot_keys(newest))
    assert [k for k in snapshot_keys(old) if k in written and k not in shared] == []  # every version went
    assert not markers


def test_forget_of_a_locked_snapshot_keeps_it_and_says_until_when(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = lock_bucket(s3_server)
    repo = locked_repo(s3_server, bucket)
    m = take(repo, create(tmp_path / "a.db", rows=500))
    plan = forget(repo, [m.id])
    assert plan.forget == [] and list(plan.locked) == [m.id]
    assert repo.snapshot_ids() == [m.id]

    # The manifest's lock passed but a chunk is still retained: the snapshot goes, the chunk
    # stays as unreferenced garbage (reported, not an error) for a later prune.
    chunk = snapshot_keys(m)[1]
    shorten(s3_server, bucket, [SNAPSHOT_PREFIX + m.id], datetime.now(UTC) + timedelta(seconds=2))
    time.sleep(3)
    plan = forget(repo, [m.id])
    assert [f.id for f in plan.forget] == [m.id] and chunk in plan.retained
    assert repo.snapshot_ids() == [] and repo.store.exists(chunk)


def test_extend_locks_extends_reused_chunks_and_leaves_forgotten_ones(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = lock_bucket(s3_server)
    repo = locked_repo(s3_server, bucket)
    src = create(tmp_path / "a.db", rows=800)
    full = take(repo, src)
    incremental = take(repo, src, "incremental")  # nothing changed: it names the full's chunks
    old_chunk = snapshot_keys(full)[1]
    assert old_chunk in snapshot_keys(incremental)
    soon = datetime.now(UTC) + timedelta(hours=1)
    shorten(s3_server, bucket, [old_chunk], soon)

    gone = take(repo, create(tmp_path / "b.db", rows=400))
    gone_chunk = snapshot_keys(gone)[1]
    shorten(s3_server, bucket, [SNAPSHOT_PREFIX + gone.id], datetime.now(UTC) + timedelta(seconds=2))
    shorten(s3_server, bucket, [gone_chunk], soon)
    time.sleep(3)
    forget(repo, [gone.id])
    assert repo.store.exists(gone_chunk) and gone.id not in repo.snapshot_ids()

    far = datetime.now(UTC) + 10 * DAY
    repo.store.extend_retention(SNAPSHOT_PREFIX + full.id, far)

    plan = extend_locks(repo)
    assert old_chunk in plan.extended and gone_chunk not in plan.extended
    assert head(s3_server, bucket, old_chunk)["ObjectLockRetainUntilDate"] >= plan.until - timedelta(seconds=1)
    assert abs(head(s3_server, bucket, gone_chunk)["ObjectLockRetainUntilDate"] - soon) < timedelta(seconds=2)
    # never shortened (moto would let a shortening through, so check the date, not a refusal)
    assert SNAPSHOT_PREFIX + full.id not in plan.extended
    assert abs(head(s3_server, bucket, SNAPSHOT_PREFIX + full.id)["ObjectLockRetainUntilDate"] - far) \
        < timedelta(seconds=2)
    assert CONFIG_KEY in plan.extended  # the only copy of the wrapped key stays retained too
    from vaultflow.audit import records

    done = [r for r in records(repo) if r.action == "extend-locks"]
    assert len(done) == 1 and done[0].outcome == "succeeded" and f"{len(plan.extended)} of" in done[0].detail


def test_extend_locks_on_a_repository_without_lock_is_refused(tmp_path: Path) -> None:
    from vaultflow.storage import LocalStore

    repo = Repository.init(LocalStore(tmp_path / "r"), PASSPHRASE)
    with pytest.raises(InputError, match="has no object lock"):
        extend_locks(repo)


# -- bad input: one line, exit 2, nothing written ---------------------------------------


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run_cli_in_process(args, {"VAULTFLOW_PASSPHRASE": PASSPHRASE, **env}, None)


def one_line_refusal(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_object_lock_on_local_or_azure_or_zero_days_is_refused(tmp_path: Path) -> None:
    local = tmp_path / "repo"
    one_line_refusal(run(["init", "--repo", str(local), "--object-lock", "30"], {}), "cannot lock objects")
    assert not local.exists()
    one_line_refusal(run(["init", "--repo", "az://backups/repo", "--object-lock", "30"],
                         {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}), "cannot lock objects")
    one_line_refusal(run(["init", "--repo", str(local), "--object-lock", "0"], {}), "from 1 to 36500")
    one_line_refusal(run(["init", "--repo", str(local), "--object-lock", "99999999"], {}), "from 1 to 36500")
    one_line_refusal(run(["init", "--repo", str(local), "--object-lock", "3", "--lock-mode", "strict"], {}),
                     "--lock-mode")
    assert not local.exists()


def test_object_lock_on_a_bucket_without_it_or_without_versioning_is_refused(s3_server: S3Server) -> None:
    plain = s3_server.new_bucket()
    one_line_refusal(run(["init", "--repo", f"s3://{plain}/{PREFIX}", "--object-lock", "30"], s3_server.env()),
                     plain, "does not have object lock enabled")
    suspended = lock_bucket(s3_server)  # moto lets versioning be suspended on a lock bucket; S3 would not
    s3_server.client().put_bucket_versioning(Bucket=suspended, VersioningConfiguration={"Status": "Suspended"})
    one_line_refusal(run(["init", "--repo", f"s3://{suspended}/{PREFIX}", "--object-lock", "30"],
                         s3_server.env()), "versioning Suspended")
    defaulted = lock_bucket(s3_server)  # a default retention would lock the lock objects too
    s3_server.client().put_object_lock_configuration(Bucket=defaulted, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    one_line_refusal(run(["init", "--repo", f"s3://{defaulted}/{PREFIX}", "--object-lock", "30"],
                         s3_server.env()), "has a default retention")
    for bucket in (plain, suspended, defaulted):
        assert versions(s3_server, bucket) == (Counter(), Counter())


def test_a_lock_shorter_than_the_retention_policy_given_to_init_is_refused(s3_server: S3Server) -> None:
    bucket = lock_bucket(s3_server)
    location = f"s3://{bucket}/{PREFIX}"
    for policy, rule in ((["--max-age", "30d"], "max_age 30d"), (["--keep-within", "8d"], "keep_within 8d"),
                         (["--policy", "compliance"], "max_age 365d")):
        refused = run(["init", "--repo", location, "--object-lock", "7", *policy], s3_server.env())
        one_line_refusal(refused, "--object-lock 7", "governance lock for 7 day(s) is shorter than the retention "
                         f"policy ({rule})", "give --object-lock")
    one_line_refusal(run(["init", "--repo", location, "--max-age", "30d"], s3_server.env()),
                     "checked against --object-lock DAYS")
    assert versions(s3_server, bucket) == (Counter(), Counter())  # nothing written
    created = run(["init", "--repo", location, "--object-lock", "31", "--max-age", "30d"], s3_server.env())
    assert created.returncode == 0, created.stderr
    assert "governance lock for 31 day(s)" in created.stdout


def test_init_and_extend_locks_from_the_command_line(s3_server: S3Server) -> None:
    bucket = lock_bucket(s3_server)
    location = f"s3://{bucket}/{PREFIX}"
    result = run(["init", "--repo", location, "--object-lock", "7", "--lock-mode", "compliance"], s3_server.env())
    assert result.returncode == 0, result.stderr
    assert "compliance lock for 7 day(s)" in result.stdout
    until = head(s3_server, bucket, CONFIG_KEY)["ObjectLockRetainUntilDate"]
    assert until > datetime.now(UTC) + timedelta(days=7) - timedelta(minutes=1)
    result = run(["extend-locks", "--repo", location], s3_server.env())
    assert result.returncode == 0, result.stderr
    assert "extended the lock of" in result.stdout


def test_a_retained_incremental_keeps_the_full_it_was_taken_on_top_of(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = lock_bucket(s3_server)
    repo = locked_repo(s3_server, bucket)
    src = create(tmp_path / "a.db", rows=600)
    full = take(repo, src)
    create(tmp_path / "a.db", rows=650)
    incremental = take(repo, src, "incremental")
    newest = take(repo, create(tmp_path / "a.db", rows=700))  # a new chain
    shorten(s3_server, bucket, snapshot_keys(full), datetime.now(UTC) + timedelta(seconds=2))
    time.sleep(3)
    plan = prune(repo, RetentionPolicy(keep_last=1), datetime.now(UTC))
    assert plan.forget == [] and sorted(plan.locked) == sorted([full.id, incremental.id])
    assert plan.locked[full.id] == plan.locked[incremental.id]  # kept as long as what depends on it
    assert sorted(repo.snapshot_ids()) == sorted([full.id, incremental.id, newest.id])


def test_a_lock_refresh_writes_a_new_object_and_removes_the_old(tmp_path: Path) -> None:
    """No service: the refresh contract on a memory store that counts puts per key."""
    from vaultflow.repository.locks import list_locks
    from vaultflow.storage import MemoryStore

    puts: Counter[str] = Counter()

    class CountingStore(MemoryStore):
        def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
            puts[key] += 1
            super().put(key, data, sync=sync)

    repo = Repository.init(CountingStore(), PASSPHRASE)
    with RepositoryLock(repo, "exclusive", "test") as held:
        first = held.info
        held.refresh()
        held.refresh()
        assert held.info is not None and first is not None and held.info.id != first.id
        assert [lock.id for lock in list_locks(repo)] == [held.info.id]
        held.check_held()
    assert list_locks(repo) == []
    assert max(puts.values()) == 1


def test_prune_forget_and_extend_locks_through_the_flows_and_the_cli(
        s3_server: S3Server, prefect_api: str, isolated_home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = lock_bucket(s3_server)
    repo = locked_repo(s3_server, bucket)
    old = take(repo, create(tmp_path / "a.db", rows=500))
    take(repo, create(tmp_path / "a.db", rows=600))
    env = {**s3_server.env(), "PREFECT_API_URL": prefect_api}
    location = f"s3://{bucket}/{PREFIX}"
    result = run(["prune", "--repo", location, "--keep-last", "1"], env)
    assert result.returncode == 0, result.stderr
    assert f"kept {old.id[:8]} until " in result.stdout and "(object lock)" in result.stdout
    assert "warning" not in result.stderr  # keep-last: no span to outlast the lock
    longer = run(["prune", "--repo", location, "--keep-within", "30d", "--dry-run"], env)
    assert longer.returncode == 0, longer.stderr
    assert [line for line in longer.stderr.splitlines() if line.strip()] == [
        "warning: the repository's governance lock for 1 day(s) is shorter than the retention policy (keep_within "
        "30d): a snapshot the policy keeps loses its lock before the policy lets it go unless extend-locks runs "
        "more often than the lock period"]
    result = run(["forget", old.id, "--repo", location], env)
    assert result.returncode == 0, result.stderr
    assert "forgot 0 snapshot(s)" in result.stdout and f"kept {old.id[:8]} until " in result.stdout
    assert old.id in repo.snapshot_ids()
    from flows.maintenance import extend_locks as extend_flow

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    summary = extend_flow(repository=location)
    assert int(str(summary["objects"])) > 2


def test_a_manifest_delete_refused_after_planning_keeps_it_and_its_parents_whole(tmp_path: Path) -> None:
    """No service: the store refuses one manifest delete the plan did not expect (its retention was
    set meanwhile): that snapshot and the one it was taken on top of stay, with every chunk."""
    from vaultflow.errors import ObjectLocked
    from vaultflow.storage import MemoryStore

    refused: set[str] = set()

    class RefusingStore(MemoryStore):
        def delete(self, key: str) -> None:
            if key in refused:
                raise ObjectLocked(f"{key} is retained", until="2030-01-01T00:00:00+00:00")
            super().delete(key)

    repo = Repository.init(RefusingStore(), PASSPHRASE)
    src = create(tmp_path / "a.db", rows=600)
    full = take(repo, src)
    create(tmp_path / "a.db", rows=650)
    incremental = take(repo, src, "incremental")
    refused.add(SNAPSHOT_PREFIX + incremental.id)
    plan = forget(repo, [full.id], with_dependents=True)
    assert plan.forget == [] and sorted(plan.locked) == sorted([full.id, incremental.id])
    assert plan.garbage == {} and plan.retained == {}
    assert sorted(repo.snapshot_ids()) == sorted([full.id, incremental.id])
    for key in snapshot_keys(full) + snapshot_keys(incremental):
        assert repo.store.exists(key), key


def test_copy_puts_a_chunk_that_repeats_in_a_stream_once() -> None:
    """No service: into an object-locked destination a second put would be a second version."""
    import io
    import os

    from vaultflow.operations.copy import copy_snapshots
    from vaultflow.repository.manifest import SnapshotManifest as Manifest
    from vaultflow.storage import MemoryStore

    puts: Counter[str] = Counter()

    class CountingStore(MemoryStore):
        concurrency = 8

        def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
            puts[key] += 1
            super().put(key, data, sync=sync)

    source = Repository.init(MemoryStore(), PASSPHRASE)
    sid = new_object_id()
    stream = source.writer(sid).write_stream("data", "sqlite3-file", io.BytesIO(os.urandom(3 * 2**20) * 4))
    assert len({c.id for c in stream.chunks}) < len(stream.chunks)  # the stream repeats chunks
    now = datetime.now(UTC)
    source.save_manifest(Manifest(id=sid, chain=sid, engine="sqlite", server="local", database="a.db",
                                  started_at=now, finished_at=now, hostname="h", vaultflow_version="0",
                                  streams=[stream]))
    dest = Repository.init(CountingStore(), PASSPHRASE)
    copy_snapshots(source, dest)
    chunk_puts = {k: n for k, n in puts.items() if k.startswith("chains/")}
    assert chunk_puts and max(chunk_puts.values()) == 1
