"""Bounded retries with exponential backoff and full jitter, as a store wrapper.

Remote backends raise `TransientError` on the first 5xx, throttling reply or broken
connection; `RetryingStore` retries those and nothing else, then gives up with one line
saying how often and for how long it tried. Every operation of the interface is
idempotent (a put writes the same bytes again, a delete of a missing object is fine), so
repeating one is always safe.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from vaultflow.errors import ConnectionFailed, TransientError
from vaultflow.storage.base import ObjectInfo, ObjectLockPolicy, ObjectStore, SignedUrl

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; the wait before try n+1 is uniform in [0, min(max, base * 2**n)]."""

    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class RetryingStore(ObjectStore):
    """Wraps a store; retries its `TransientError`s under `policy`."""

    def __init__(self, inner: ObjectStore, policy: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner = inner
        self.policy = policy or RetryPolicy()
        self.concurrency = inner.concurrency
        self._sleep = sleep

    def describe(self) -> str:
        return self.inner.describe()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        for attempt in range(self.policy.attempts):
            try:
                return fn()
            except TransientError as exc:
                last = exc
                if attempt + 1 < self.policy.attempts:
                    self._sleep(self.policy.delay(attempt))
        raise ConnectionFailed(
            f"{what} on {self.inner.describe()} failed {self.policy.attempts} times in "
            f"{time.monotonic() - started:.1f} s; last: {last.what}",
            last.fix or "check the storage endpoint and network; the run can be retried",
        )

    def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
        self._call(f"put {key}", lambda: self.inner.put(key, data, sync=sync))

    def sync(self, keys: Iterable[str] = ()) -> None:
        keys = list(keys)
        self._call("sync", lambda: self.inner.sync(keys))

    def get(self, key: str) -> bytes:
        return self._call(f"get {key}", lambda: self.inner.get(key))

    def stat(self, key: str) -> ObjectInfo | None:
        return self._call(f"stat {key}", lambda: self.inner.stat(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Materialised per attempt: a listing that breaks half way is started again.
        yield from self._call(f"list {prefix or '(all)'}", lambda: list(self.inner.list(prefix)))

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.inner.delete(key))

    def put_file(self, key: str, path: Path) -> None:
        self._call(f"upload {key}", lambda: self.inner.put_file(key, path))

    def download_url(self, key: str, expires: timedelta) -> SignedUrl:
        return self.inner.download_url(key, expires)

    def check_object_lock(self) -> None:
        self._call("read object lock settings", self.inner.check_object_lock)

    def use_object_lock(self, policy: ObjectLockPolicy) -> None:
        self.inner.use_object_lock(policy)

    def retained_until(self, key: str) -> datetime | None:
        return self._call(f"read retention of {key}", lambda: self.inner.retained_until(key))

    def extend_retention(self, key: str, until: datetime) -> None:
        self._call(f"extend retention of {key}", lambda: self.inner.extend_retention(key, until))

    # open_read and put_stream are the base class's: built on the calls below, each retried.

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._call(f"get {key} (bytes {start}+{length})", lambda: self.inner.get_range(key, start, length))

    def put_block(self, key: str, index: int, data: bytes) -> None:
        self._call(f"upload block {index} of {key}", lambda: self.inner.put_block(key, index, data))

    def commit_blocks(self, key: str, count: int) -> None:
        self._call(f"commit {count} blocks of {key}", lambda: self.inner.commit_blocks(key, count))

    def discard_blocks(self, key: str) -> None:
        self._call(f"discard blocks of {key}", lambda: self.inner.discard_blocks(key))
