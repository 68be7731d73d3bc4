"""The storage interface: whole small objects addressed by validated keys.

Objects are at most a few MiB (chunks are bounded by the chunker's maximum size), so the
interface moves `bytes`; streaming happens above it, one chunk at a time. Keys are
validated here, in one place, so no backend can be handed a path that escapes its root.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from vaultflow.errors import InputError

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


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


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

    def put_file(self, key: str, path: Path) -> None:
        """Store a file of any size as one object (remote stores stream it in parts)."""
        self.put(key, path.read_bytes())

    def download_url(self, key: str, expires: timedelta) -> SignedUrl:
        """A URL that reads `key` without credentials for `expires` from now, or less when
        the store's own credential expires sooner (the result says until when)."""
        raise InputError(f"{self.describe()} cannot hand out download links",
                         "use --to FILE, or a repository on S3 or Azure Blob storage")
