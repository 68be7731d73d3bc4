"""One conformance suite, run against every storage backend."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultflow.errors import InputError
from vaultflow.storage import LocalStore, ObjectStore

BackendFactory = Callable[[Path], ObjectStore]
BACKENDS: dict[str, BackendFactory] = {"local": lambda tmp: LocalStore(tmp / "store")}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    yield BACKENDS[request.param](tmp_path)


def test_put_get_stat_delete(store: ObjectStore) -> None:
    assert store.stat("a/b") is None
    store.put("a/b", b"hello")
    assert store.get("a/b") == b"hello"
    info = store.stat("a/b")
    assert info is not None and info.size == 5
    assert store.exists("a/b")
    store.put("a/b", b"replaced")
    assert store.get("a/b") == b"replaced"
    store.delete("a/b")
    assert store.stat("a/b") is None
    store.delete("a/b")  # deleting a missing object is not an error
    with pytest.raises(KeyError):
        store.get("a/b")


def test_unsynced_puts_are_visible_and_sync_returns(store: ObjectStore) -> None:
    for i in range(10):
        store.put(f"u/{i}", bytes([i]) * 100, sync=False)
    store.sync()
    assert sorted(store.get(f"u/{i}") for i in range(10)) == sorted(bytes([i]) * 100 for i in range(10))
    store.sync()  # nothing pending is fine


def test_list_by_prefix(store: ObjectStore) -> None:
    for key in ("snapshots/1", "snapshots/2", "chains/c/chunks/ab/abc", "config"):
        store.put(key, key.encode())
    assert sorted(i.key for i in store.list("snapshots/")) == ["snapshots/1", "snapshots/2"]
    assert sorted(i.key for i in store.list("chains/c/")) == ["chains/c/chunks/ab/abc"]
    assert len(list(store.list(""))) == 4
    assert list(store.list("nothing/")) == []


def test_large_object(store: ObjectStore) -> None:
    data = os.urandom(16 * 2**20)
    store.put("big", data)
    assert store.get("big") == data


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "A/upper", "a//b", ".hidden", "a/", "a b"])
def test_key_validation(store: ObjectStore, key: str) -> None:
    with pytest.raises(InputError):
        store.put(key, b"x")


def test_concurrent_writers(store: ObjectStore) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                store.put(f"w/{n}/{i}", f"{n}-{i}".encode() * 1000)
                store.put("shared", f"{n}".encode() * 1000)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(list(store.list("w/"))) == 160
    shared = store.get("shared")
    assert len(set(shared)) == 1 and len(shared) == 1000  # one writer's whole object, never a mix


def test_local_store_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put("x/y", b"1")
    assert [p.name for p in (tmp_path / "s" / "x").iterdir()] == ["y"]
