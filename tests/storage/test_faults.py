"""Fault injection: retries ride out transient failures; permanent ones fail a backup cleanly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.conftest import PASSPHRASE
from tests.engines.cases import EngineCase
from tests.object_servers import S3Server
from vaultflow.errors import ConnectionFailed, StorageUnwritable
from vaultflow.operations.backup import BackupPlan, backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.repository.repository import ChunkerParams
from vaultflow.storage import LocalStore, MemoryStore, ObjectStore, RetryingStore, RetryPolicy
from vaultflow.storage.faults import FaultInjectingStore
from vaultflow.storage.s3 import S3Settings, S3Store

FAST = RetryPolicy(attempts=8, base_delay=0.005, max_delay=0.05)


def test_retries_hide_transient_failures() -> None:
    faulty = FaultInjectingStore(MemoryStore(), transient_rate=0.3, seed=1)
    store = RetryingStore(faulty, FAST)
    for i in range(100):
        store.put(f"k/{i}", bytes([i]))
    assert [store.get(f"k/{i}") for i in range(100)] == [bytes([i]) for i in range(100)]
    assert len(list(store.list("k/"))) == 100
    assert faulty.counts.transient > 20


def test_retries_are_bounded_and_say_so() -> None:
    store = RetryingStore(FaultInjectingStore(MemoryStore(), transient_rate=1.0), RetryPolicy(attempts=3,
                                                                                              base_delay=0.001))
    with pytest.raises(ConnectionFailed) as info:
        store.put("x", b"1")
    line = info.value.line()
    assert info.value.transient and "\n" not in line
    assert "put x on memory://memory failed 3 times" in line and "injected transient failure" in line


def test_permanent_failures_are_not_retried() -> None:
    faulty = FaultInjectingStore(MemoryStore(), permanent_rate=1.0)
    with pytest.raises(StorageUnwritable):
        RetryingStore(faulty, FAST).put("x", b"1")
    assert faulty.counts.calls == 1


def test_delays_are_injected() -> None:
    faulty = FaultInjectingStore(MemoryStore(), delay_rate=1.0, delay_seconds=0.001)
    faulty.put("x", b"1")
    assert faulty.get("x") == b"1" and faulty.counts.delayed == 2


def _faulty_repo(root: Path, **faults: object) -> tuple[Repository, FaultInjectingStore, ObjectStore]:
    clean = LocalStore(root)
    # Small chunks: hundreds of store calls per backup, so 10 % of them is many failures.
    Repository.init(clean, PASSPHRASE, chunker=ChunkerParams(min_size=8192, avg_size=32768, max_size=65536))
    faulty = FaultInjectingStore(clean, seed=7, **faults)  # type: ignore[arg-type]
    return Repository.open(RetryingStore(faulty, FAST), PASSPHRASE), faulty, clean


def test_backup_and_restore_round_trip_under_ten_percent_transient_failures(
        case: EngineCase, tmp_path: Path) -> None:
    url = case.create_source(tmp_path)
    case.bulk(url, mib=6)
    repo, faulty, clean = _faulty_repo(tmp_path / "repo", transient_rate=0.1, delay_rate=0.05, delay_seconds=0.01)
    manifest = backup_database(case.engine(url), repo, snapshot_id=new_object_id())
    assert faulty.counts.by_operation.get("put", 0) >= 5, faulty.counts

    target = case.new_target(tmp_path)
    restore_snapshot(repo, manifest.id, case.engine(target))
    assert faulty.counts.by_operation.get("get", 0) >= 5, faulty.counts
    assert case.engine(target).table_stats() == case.engine(url).table_stats() == manifest.tables
    assert case.schema(target) == case.schema(url)
    assert Repository.open(clean, PASSPHRASE).snapshot_ids() == [manifest.id]


def test_backup_fails_cleanly_under_permanent_failures(case: EngineCase, tmp_path: Path) -> None:
    url = case.create_source(tmp_path)
    case.bulk(url, mib=6)
    repo, faulty, clean = _faulty_repo(tmp_path / "repo", permanent_rate=0.1, operations={"put"})
    with pytest.raises(StorageUnwritable):
        backup_database(case.engine(url), repo, snapshot_id=new_object_id())
    assert faulty.counts.permanent >= 1
    assert Repository.open(clean, PASSPHRASE).snapshot_ids() == []
    assert [i.key for i in clean.list("snapshots/")] == []


def test_backup_to_s3_lists_chunks_once_and_uploads_concurrently(
        case: EngineCase, tmp_path: Path, s3_server: S3Server) -> None:
    """Existing chunks come from one listing of the chain, not a HEAD per chunk; puts overlap."""
    url = case.create_source(tmp_path)
    case.bulk(url, mib=6)
    settings = S3Settings(s3_server.new_bucket(), "r", endpoint_url=s3_server.endpoint, region="us-east-1",
                          access_key_id="testing", secret_access_key=SecretStr("testing"), concurrency=6)
    counting = FaultInjectingStore(S3Store(settings), delay_rate=1.0, delay_seconds=0.02, operations={"put"})
    store = RetryingStore(counting, FAST)
    Repository.init(store, PASSPHRASE, chunker=ChunkerParams(min_size=8192, avg_size=32768, max_size=65536))
    repo = Repository.open(store, PASSPHRASE)
    first = backup_database(case.engine(url), repo, snapshot_id=new_object_id())
    chunks = {c.id for s in first.streams for c in s.chunks}
    calls = counting.counts.calls_by_operation
    assert len(chunks) > 50 and calls.get("stat", 0) <= 3, calls
    assert calls["list"] <= 10 and calls["put"] >= len(chunks)
    assert counting.counts.max_in_flight > 1, "chunk puts never overlapped"

    # A second full backup into the same chain reuses every chunk: one more listing, no chunk put.
    before = dict(calls)
    plan = BackupPlan("full", chain=first.chain)
    backup_database(case.engine(url), repo, snapshot_id=new_object_id(), plan=plan)
    new_puts = calls["put"] - before["put"]
    assert new_puts < len(chunks) / 2, (new_puts, len(chunks))
    assert calls.get("stat", 0) - before.get("stat", 0) <= 3


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self.data


def test_s3_store_rides_out_slowdown_replies(s3_server: S3Server) -> None:
    """30 % of requests get a real `503 SlowDown` reply, parsed by botocore as from AWS."""
    import random

    from botocore.awsrequest import AWSResponse

    inner = S3Store(S3Settings(s3_server.new_bucket(), "p", endpoint_url=s3_server.endpoint, region="us-east-1",
                               access_key_id="testing", secret_access_key=SecretStr("testing")))
    roll, replies = random.Random(1), {"503": 0}
    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")

    def slow_down(request: object, **_: object) -> AWSResponse | None:
        if roll.random() < 0.3:
            replies["503"] += 1
            return AWSResponse(request.url, 503, {}, _Body(body))  # type: ignore[attr-defined]
        return None

    inner.client.meta.events.register("before-send.s3", slow_down)
    store = RetryingStore(inner, FAST)
    for i in range(40):
        store.put(f"k/{i}", bytes([i]) * 100)
    assert sorted(o.key for o in store.list("k/")) == sorted(f"k/{i}" for i in range(40))
    assert [store.get(f"k/{i}") for i in range(40)] == [bytes([i]) * 100 for i in range(40)]
    assert replies["503"] > 10
