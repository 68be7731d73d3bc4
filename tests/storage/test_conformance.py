"""One conformance suite, run against every storage backend."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from vaultflow.errors import InputError, VaultflowError
from vaultflow.storage import LocalStore, MemoryStore, ObjectStore
from vaultflow.storage.azure import AzureSettings
from vaultflow.storage.s3 import S3Settings

BackendFactory = Callable[[pytest.FixtureRequest, Path], ObjectStore]


def _s3(request: pytest.FixtureRequest, tmp: Path) -> ObjectStore:
    server = request.getfixturevalue("s3_server")
    return S3Settings(server.new_bucket(), "some/prefix", endpoint_url=server.endpoint, region="us-east-1",
                      access_key_id="testing", secret_access_key=SecretStr("testing")).open()


def _azure(request: pytest.FixtureRequest, tmp: Path) -> ObjectStore:
    server = request.getfixturevalue("azurite")
    return AzureSettings(server.new_container(), "some/prefix",
                         connection_string=SecretStr(server.connection_string)).open()


BACKENDS: dict[str, BackendFactory] = {
    "local": lambda request, tmp: LocalStore(tmp / "store"),
    "memory": lambda request, tmp: MemoryStore(),
    "s3": _s3,
    "azure": _azure,
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    yield BACKENDS[request.param](request, tmp_path)


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


def test_list_by_prefix_inside_a_segment_and_nested(store: ObjectStore) -> None:
    for key in ("chains/ab/chunks/00/001", "chains/ab/chunks/01/011", "chains/abc/chunks/00/002", "chainsx"):
        store.put(key, b"x")
    assert sorted(i.key for i in store.list("chains/ab/")) == ["chains/ab/chunks/00/001", "chains/ab/chunks/01/011"]
    assert sorted(i.key for i in store.list("chains/ab")) == [
        "chains/ab/chunks/00/001", "chains/ab/chunks/01/011", "chains/abc/chunks/00/002"]
    assert sorted(i.key for i in store.list("chains")) == [
        "chains/ab/chunks/00/001", "chains/ab/chunks/01/011", "chains/abc/chunks/00/002", "chainsx"]
    assert {i.size for i in store.list("chains/")} == {1}


def test_list_many_objects_pages(store: ObjectStore) -> None:
    # More than one listing page on S3 (1000 keys per page).
    from concurrent.futures import ThreadPoolExecutor

    keys = [f"many/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put(k, b"", sync=False), keys))
    store.sync()
    assert sorted(i.key for i in store.list("many/")) == keys


def test_large_object(store: ObjectStore) -> None:
    data = os.urandom(16 * 2**20)
    store.put("big", data)
    assert store.get("big") == data
    info = store.stat("big")
    assert info is not None and info.size == len(data)


def test_empty_object(store: ObjectStore) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.stat("empty") == type(store.stat("empty"))("empty", 0)


def test_describe_names_no_secret(store: ObjectStore) -> None:
    text = store.describe()
    assert "testing" not in text and "AccountKey" not in text and "Eby8" not in text


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "A/upper", "a//b", ".hidden", "a/", "a b"])
def test_key_validation(store: ObjectStore, key: str) -> None:
    with pytest.raises(InputError):
        store.put(key, b"x")
    for op in (store.get, store.stat, store.delete):
        with pytest.raises(InputError):
            op(key)
    if key not in ("", "a/"):  # an empty prefix (all) and a trailing '/' are fine for listing
        with pytest.raises(InputError):
            list(store.list(key))


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


def test_put_file(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(9 * 2**20)
    path = tmp_path / "upload"
    path.write_bytes(data)
    store.put_file("exports/x.db", path)
    assert store.get("exports/x.db") == data


def test_ranged_reads_and_open_read(store: ObjectStore) -> None:
    data = os.urandom(3 * 2**20 + 12345)
    store.put("staged/x.bak", data)
    assert store.get_range("staged/x.bak", 1000, 5000) == data[1000:6000]
    assert store.get_range("staged/x.bak", len(data) - 10, 100) == data[-10:]  # fewer at the end
    assert store.get_range("staged/x.bak", len(data) + 5, 100) == b""  # none past it
    with store.open_read("staged/x.bak", block_size=256 * 1024) as stream:
        assert stream.read(7) == data[:7]
        assert stream.read() == data[7:]
    with pytest.raises(KeyError):
        store.get_range("staged/missing", 0, 10)
    with pytest.raises(KeyError):
        store.open_read("staged/missing")


def test_put_stream_commits_whole_in_blocks(store: ObjectStore) -> None:
    data = os.urandom(2 * 2**20 + 777)

    def fill(sink: object) -> None:
        for i in range(0, len(data), 100_003):  # pieces that straddle the blocks
            sink.write(data[i:i + 100_003])  # type: ignore[attr-defined]
            assert store.stat("staged/y.bak") is None  # invisible until committed

    store.put_stream("staged/y.bak", fill, block_size=512 * 1024)
    assert store.get("staged/y.bak") == data
    assert [i.key for i in store.list("staged/")] == ["staged/y.bak"]  # no block left over to list
    store.put_stream("staged/empty", lambda sink: None)
    assert store.get("staged/empty") == b""

    def failing(sink: object) -> None:
        sink.write(os.urandom(300 * 1024))  # type: ignore[attr-defined]
        raise OSError("raised by the test")

    with pytest.raises(OSError, match="raised by the test"):
        store.put_stream("staged/z.bak", failing, block_size=100 * 1024)
    assert store.stat("staged/z.bak") is None
    assert sorted(i.key for i in store.list("staged/")) == ["staged/empty", "staged/y.bak"]


def test_discard_blocks_drops_uncommitted_blocks_only(store: ObjectStore) -> None:
    store.put_block("staged/a.bak", 0, b"half a backup")
    store.discard_blocks("staged/a.bak")
    with pytest.raises(VaultflowError):
        store.commit_blocks("staged/a.bak", 1)  # the block is gone
    assert store.stat("staged/a.bak") is None and list(store.list("staged/")) == []
    store.discard_blocks("staged/never")  # nothing staged is fine
    store.put_stream("staged/b.bak", lambda sink: sink.write(b"kept"), block_size=2)
    store.put_block("staged/b.bak", 0, b"stray")
    store.discard_blocks("staged/b.bak")
    assert store.get("staged/b.bak") == b"kept"
    store.put_block("staged/c.bak", 1, b"second")
    store.put_block("staged/c.bak", 0, b"first ")
    store.put_block("staged/c.bak", 0, b"first ")  # again, as a retry does
    store.commit_blocks("staged/c.bak", 2)
    assert store.get("staged/c.bak") == b"first second"
