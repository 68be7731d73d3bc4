"""An in-process store: a dict behind a lock. For tests and for wrapping in fault injection."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from vaultflow.storage.base import ObjectInfo, ObjectStore, validate_key, validate_prefix


class MemoryStore(ObjectStore):
    """Objects in a dict; every put is atomic and immediately durable (for this process)."""

    def __init__(self, name: str = "memory") -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._name = name

    def describe(self) -> str:
        return f"memory://{self._name}"

    def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
        validate_key(key)
        with self._lock:
            self._objects[key] = bytes(data)

    def get(self, key: str) -> bytes:
        validate_key(key)
        with self._lock:
            return self._objects[key]

    def stat(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        with self._lock:
            data = self._objects.get(key)
        return None if data is None else ObjectInfo(key, len(data))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        with self._lock:
            items = [ObjectInfo(k, len(v)) for k, v in self._objects.items() if k.startswith(prefix)]
        yield from items

    def get_range(self, key: str, start: int, length: int) -> bytes:
        validate_key(key)
        with self._lock:
            return self._objects[key][start:start + length]

    # put_block/commit_blocks/discard_blocks: the base class's, which hold blocks in memory.

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._lock:
            self._objects.pop(key, None)
