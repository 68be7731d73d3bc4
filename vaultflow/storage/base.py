"""The storage interface: whole small objects addressed by validated keys.

Repository objects are at most a few MiB (chunks are bounded by the chunker's maximum
size), so the core interface moves `bytes`; streaming happens above it, one chunk at a
time. Objects of any size (a staged database backup) go through ranged reads
(`get_range`, `open_read`) and block uploads (`put_block`, `commit_blocks`, `put_stream`),
each call of which is idempotent and so retried like the rest. Keys are
validated here, in one place, so no backend can be handed a path that escapes its root.
"""

from __future__ import annotations

import io
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal

from vaultflow.errors import InputError, VaultflowError

_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")


def validate_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise InputError.

    A key is '/'-separated segments of lowercase letters, digits, '.', '_' and '-', each
    starting with a letter or digit (so no '..', no hidden or absolute names).
    """
    if not _KEY_RE.match(key) or len(key) > 512:
        raise InputError(f"invalid object key {key!r}", "keys are lowercase a-z0-9._- segments")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a valid key optionally ending with '/'."""
    if prefix:
        validate_key(prefix.rstrip("/"))
    return prefix


@dataclass(frozen=True)
class SignedUrl:
    """A URL that reads one object without credentials until `expires_at`; the URL is a
    bearer credential (never logged, never stored)."""

    url: str = field(repr=False)
    expires_at: datetime


LockMode = Literal["governance", "compliance"]


@dataclass(frozen=True)
class ObjectLockPolicy:
    """Write-once retention for every object a store puts from now on: S3 Object Lock `mode`,
    retained until the put's time + `period`. Keys under `exempt_prefixes` are written without
    retention (objects that are rewritten or must go at a time of their own, e.g. `locks/`)."""

    mode: LockMode
    period: timedelta
    exempt_prefixes: tuple[str, ...] = ()

    def applies_to(self, key: str) -> bool:
        return not any(key.startswith(prefix) for prefix in self.exempt_prefixes)


def object_lock_unsupported(store: ObjectStore) -> InputError:
    return InputError(f"{store.describe()} cannot lock objects (object lock needs S3)",
                      "use an s3:// repository on a bucket created with object lock enabled, or leave out "
                      "--object-lock")


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object. `modified` is when it was written, as the backend reports it (a
    listing fills it; None where a backend or a stat does not say)."""

    key: str
    size: int
    modified: datetime | None = None


class ObjectStore(ABC):
    """put/get/stat/list/delete over whole objects.

    Contract for every backend:
    - `put` is atomic: a reader sees the old object, the new one, or none, never a part.
      It returns only when the object is durable, unless `sync=False`: then the object
      is durable once a later `sync()` has returned.
    - `get` raises `KeyError` for a missing object; `stat` returns None.
    - `list` yields every object under `prefix`, in no particular order.
    - `delete` of a missing object is not an error.
    Errors that may pass (connection resets, throttling) raise `TransientError`.

    `concurrency` is how many requests at once suit the backend: the repository uses it
    for chunk uploads and read-ahead (one disk wants few; a remote endpoint wants many
    to hide its round trip).
    """

    concurrency: int = 2

    @abstractmethod
    def put(self, key: str, data: bytes, *, sync: bool = True) -> None: ...

    def sync(self, keys: Iterable[str] = ()) -> None:
        """Make every earlier `put(..., sync=False)` durable, and the objects named in `keys`
        (written by another process, perhaps never synced); a no-op where puts always are."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where this store points, for messages (never a secret)."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    # -- object lock (S3 only; every other store refuses it) ----------------------------

    def check_object_lock(self) -> None:
        """Raise InputError (one line) unless this store can hold locked objects: S3 with
        Object Lock enabled on the bucket (which implies versioning)."""
        raise object_lock_unsupported(self)

    def use_object_lock(self, policy: ObjectLockPolicy) -> None:
        """Put every later object with `policy`'s retention, and make `delete` remove every
        version of a key (raising `ObjectLocked` for a version still retained)."""
        raise object_lock_unsupported(self)

    def retained_until(self, key: str) -> datetime | None:
        """The retain-until date of `key`'s current version; None when unlocked or missing."""
        return None

    def extend_retention(self, key: str, until: datetime) -> None:
        """Set `key`'s current version's retain-until to `until` (callers never shorten it)."""
        raise object_lock_unsupported(self)

    def put_file(self, key: str, path: Path) -> None:
        """Store a file of any size as one object (remote stores stream it in parts)."""
        self.put(key, path.read_bytes())

    def download_url(self, key: str, expires: timedelta) -> SignedUrl:
        """A URL that reads `key` without credentials for `expires` from now, or less when
        the store's own credential expires sooner (the result says until when)."""
        raise InputError(f"{self.describe()} cannot hand out download links",
                         "use --to FILE, or a repository on S3 or Azure Blob storage")

    # -- objects of any size: ranged reads and block uploads ----------------------------

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Up to `length` bytes of `key` from offset `start`: fewer at its end, none past it.
        KeyError for a missing object. Default: the whole object, sliced."""
        return self.get(key)[start:start + length]

    def open_read(self, key: str, block_size: int = 4 * 1024 * 1024) -> BinaryIO:
        """A buffered stream over `key`, read as `get_range` calls of `block_size` bytes (so a
        wrapper's retries cover every range, and memory stays bounded). KeyError for a
        missing object; the stream ends at the size `key` had when it was opened."""
        info = self.stat(key)
        if info is None:
            raise KeyError(key)
        return io.BufferedReader(_RangeReader(self, key, info.size), block_size)

    def put_block(self, key: str, index: int, data: bytes) -> None:
        """Stage block `index` (0, 1, ...) of `key`; invisible until `commit_blocks`. Staging
        the same block again replaces it. Default: held in this process's memory."""
        validate_key(key)
        with _PENDING_LOCK:
            _pending(self).setdefault(key, {})[index] = bytes(data)

    def commit_blocks(self, key: str, count: int) -> None:
        """Make blocks 0..count-1 of `key`, in order, the object `key`, atomically (as `put`);
        its staged blocks are gone afterwards. A missing block raises VaultflowError."""
        validate_key(key)
        with _PENDING_LOCK:
            blocks = _pending(self).get(key, {})
            missing = [i for i in range(count) if i not in blocks]
            data = b"".join(blocks[i] for i in range(count)) if not missing else b""
        if missing:
            raise VaultflowError(f"block {missing[0]} of {key} in {self.describe()} was never staged")
        self.put(key, data)
        with _PENDING_LOCK:
            _pending(self).pop(key, None)

    def discard_blocks(self, key: str) -> None:
        """Drop the blocks staged for `key` and never committed (by this process, or where the
        backend keeps them, by any writer of that object). A committed object `key` is left
        as it is (a backend may then leave its stray blocks to expire). No blocks is fine."""
        validate_key(key)
        with _PENDING_LOCK:
            _pending(self).pop(key, None)

    def put_stream(self, key: str, fill: Callable[[BlockSink], None], *,
                   block_size: int = 8 * 1024 * 1024) -> None:
        """Store what `fill` writes to the sink it is given as the one object `key`, of a size
        not known beforehand: blocks of `block_size` are staged as they fill (memory bounded
        by one block) and committed when `fill` returns, so the object appears whole or not
        at all. If `fill` or an upload raises, the staged blocks are discarded (best effort)
        and the error goes on."""
        sink = BlockSink(self, key, block_size)
        try:
            fill(sink)
            sink.commit()
        except BaseException:
            try:
                self.discard_blocks(key)
            except (VaultflowError, OSError):
                pass  # the error on its way matters more; uncommitted blocks expire or are swept
            raise


_PENDING_LOCK = threading.Lock()


def _pending(store: ObjectStore) -> dict[str, dict[int, bytes]]:
    found: dict[str, dict[int, bytes]] = store.__dict__.setdefault("_pending_blocks", {})
    return found


class BlockSink:
    """The writable end `ObjectStore.put_stream` hands its `fill`: buffers one block, stages
    each full block with `put_block`, commits the count at the end."""

    def __init__(self, store: ObjectStore, key: str, block_size: int) -> None:
        if block_size < 1:
            raise InputError(f"block size {block_size} is not positive", "give a block size of at least 1 byte")
        self._store, self._key, self._size = store, key, block_size
        self._buffer = bytearray()
        self._count = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) >= self._size:
            self._stage(bytes(self._buffer[:self._size]))
            del self._buffer[:self._size]
        return len(data)

    def _stage(self, data: bytes) -> None:
        self._store.put_block(self._key, self._count, data)
        self._count += 1

    def commit(self) -> None:
        if self._buffer:
            self._stage(bytes(self._buffer))
            self._buffer.clear()
        self._store.commit_blocks(self._key, self._count)


class _RangeReader(io.RawIOBase):
    """A raw stream over `size` bytes of one object, read with `get_range`."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        self._store, self._key, self._size = store, key, size
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._offset)
        if want <= 0:
            return 0
        data = self._store.get_range(self._key, self._offset, want)
        n = len(data)
        buffer[:n] = data
        self._offset += n
        return n
