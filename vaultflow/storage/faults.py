"""A store wrapper that injects failures and delays, for drills and tests.

Put it under a `RetryingStore` (`RetryingStore(FaultInjectingStore(store, ...))`) to check
that transient failures are ridden out; a `permanent_rate` checks that a backup fails
cleanly (no manifest) when storage starts refusing for good.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from vaultflow.errors import StorageUnwritable, TransientError
from vaultflow.storage.base import ObjectInfo, ObjectLockPolicy, ObjectStore

ALL_OPERATIONS = frozenset({"put", "get", "stat", "list", "delete", "sync"})


@dataclass
class FaultCounts:
    calls: int = 0
    transient: int = 0
    permanent: int = 0
    delayed: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    """Injected failures per operation."""
    calls_by_operation: dict[str, int] = field(default_factory=dict)
    max_in_flight: int = 0
    """The most calls that were inside `inner` at once."""


class FaultInjectingStore(ObjectStore):
    """Before each call of an operation in `operations`: with probability `transient_rate`
    raise `TransientError`, with `permanent_rate` raise `StorageUnwritable`, with
    `delay_rate` sleep `delay_seconds`; otherwise (and after a delay) call `inner`.
    A failed put never reaches `inner`, like a request the endpoint dropped. `counts`
    also records every call per operation and the most puts in flight at once."""

    def __init__(self, inner: ObjectStore, *, transient_rate: float = 0.0, permanent_rate: float = 0.0,
                 delay_rate: float = 0.0, delay_seconds: float = 0.0,
                 operations: Iterable[str] = ALL_OPERATIONS, seed: int | None = None) -> None:
        self.inner = inner
        self.transient_rate = transient_rate
        self.permanent_rate = permanent_rate
        self.delay_rate = delay_rate
        self.delay_seconds = delay_seconds
        self.operations = frozenset(operations)
        self.concurrency = inner.concurrency
        self.counts = FaultCounts()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._in_flight = 0

    def describe(self) -> str:
        return self.inner.describe()

    def _maybe_fail(self, op: str, key: str) -> None:
        with self._lock:
            self.counts.calls_by_operation[op] = self.counts.calls_by_operation.get(op, 0) + 1
        if op not in self.operations:
            return
        with self._lock:
            self.counts.calls += 1
            roll, delay_roll = self._random.random(), self._random.random()
            if roll < self.permanent_rate:
                self.counts.permanent += 1
                fault = "permanent"
            elif roll < self.permanent_rate + self.transient_rate:
                self.counts.transient += 1
                fault = "transient"
            else:
                fault = ""
            if fault:
                self.counts.by_operation[op] = self.counts.by_operation.get(op, 0) + 1
            delayed = not fault and delay_roll < self.delay_rate
            if delayed:
                self.counts.delayed += 1
        if fault == "permanent":
            raise StorageUnwritable(f"injected permanent failure: {op} {key} on {self.describe()}",
                                    "this is a fault-injection drill")
        if fault == "transient":
            raise TransientError(f"injected transient failure: {op} {key} on {self.describe()}")
        if delayed:
            time.sleep(self.delay_seconds)

    def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
        self._maybe_fail("put", key)
        with self._lock:
            self._in_flight += 1
            self.counts.max_in_flight = max(self.counts.max_in_flight, self._in_flight)
        try:
            self.inner.put(key, data, sync=sync)
        finally:
            with self._lock:
                self._in_flight -= 1

    def sync(self, keys: Iterable[str] = ()) -> None:
        self._maybe_fail("sync", "(sync)")
        self.inner.sync(keys)

    def get(self, key: str) -> bytes:
        self._maybe_fail("get", key)
        return self.inner.get(key)

    def stat(self, key: str) -> ObjectInfo | None:
        self._maybe_fail("stat", key)
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._maybe_fail("list", prefix or "(all)")
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._maybe_fail("delete", key)
        self.inner.delete(key)

    def check_object_lock(self) -> None:
        self.inner.check_object_lock()

    def use_object_lock(self, policy: ObjectLockPolicy) -> None:
        self.inner.use_object_lock(policy)

    def retained_until(self, key: str) -> datetime | None:
        self._maybe_fail("stat", key)
        return self.inner.retained_until(key)

    def extend_retention(self, key: str, until: datetime) -> None:
        self._maybe_fail("put", key)
        self.inner.extend_retention(key, until)
