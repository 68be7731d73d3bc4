"""Repository format: sealing, chunking, manifests, ordering and failure behaviour."""

from __future__ import annotations

import errno
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vaultflow.errors import (
    AmbiguousSnapshot,
    IntegrityError,
    RepositoryNotInitialised,
    SnapshotNotFound,
    StorageFull,
    WrongPassphrase,
)
from vaultflow.repository import ChunkerParams, Repository, SnapshotManifest, new_object_id
from vaultflow.repository.repository import chunk_key
from vaultflow.storage import LocalStore

PASS = "pw-for-tests"
SMALL = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)


def make_repo(tmp_path: Path, chunker: ChunkerParams = SMALL) -> Repository:
    return Repository.init(LocalStore(tmp_path / "repo"), PASS, chunker=chunker)


def sample(size: int, seed: int = 1) -> bytes:
    import random

    rnd = random.Random(seed)
    return rnd.randbytes(size // 2) + b"row,text,0123456789\n" * (size // 40)


def manifest_for(repo: Repository, sid: str, stream_data: bytes) -> SnapshotManifest:
    stream = repo.writer(sid).write_stream("dump", "raw", io.BytesIO(stream_data))
    now = datetime.now(UTC)
    return SnapshotManifest(id=sid, chain=sid, engine="test", server="here", database="db",
                            started_at=now, finished_at=now, hostname="h", vaultflow_version="0",
                            streams=[stream])


def test_round_trip_and_open(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    data = sample(3 * 2**20)
    sid = new_object_id()
    m = manifest_for(repo, sid, data)
    repo.save_manifest(m)
    reopened = Repository.open(LocalStore(tmp_path / "repo"), PASS)
    loaded = reopened.load_manifest(sid)
    assert loaded == m and len(loaded.streams[0].chunks) > 5
    out = io.BytesIO()
    reopened.read_stream(sid, loaded.streams[0], out, sid)
    assert out.getvalue() == data
    assert m.stored_size < m.logical_size  # compressed


def test_wrong_passphrase_and_not_initialised(tmp_path: Path) -> None:
    make_repo(tmp_path)
    with pytest.raises(WrongPassphrase) as info:
        Repository.open(LocalStore(tmp_path / "repo"), "other")
    assert "wrong passphrase" in str(info.value) and "other" not in str(info.value)
    with pytest.raises(RepositoryNotInitialised) as info2:
        Repository.open(LocalStore(tmp_path / "empty"), PASS)
    assert "vaultflow init" in str(info2.value)


def test_storage_holds_no_plaintext(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    marker = b"SECRET-CUSTOMER-NAME-" * 5000
    repo.save_manifest(manifest_for(repo, new_object_id(), marker))
    for path in (tmp_path / "repo").rglob("*"):
        if path.is_file():
            assert b"SECRET-CUSTOMER" not in path.read_bytes()


def test_identical_chunks_are_stored_once(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    block = os.urandom(300 * 1024)
    sid = new_object_id()
    m = manifest_for(repo, sid, block * 8)
    ids = [c.id for c in m.streams[0].chunks]
    assert len(set(ids)) < len(ids)
    stored = list(repo.store.list(f"chains/{sid}/chunks/"))
    assert len(stored) == len(set(ids))


class FailingStore(LocalStore):
    """Raises a real ENOSPC after `budget` puts (a disk filling up)."""

    def __init__(self, root: Path, budget: int) -> None:
        super().__init__(root)
        self.budget = budget
        self.puts = 0

    def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
        if key.startswith("chains/"):
            self.puts += 1
            if self.puts > self.budget:
                raise self._map(OSError(errno.ENOSPC, "No space left on device"), key)
        super().put(key, data, sync=sync)


def test_store_failure_leaves_no_snapshot_and_retry_reuses_chunks(tmp_path: Path) -> None:
    make_repo(tmp_path)
    failing = FailingStore(tmp_path / "repo", budget=5)
    repo = Repository.open(failing, PASS)
    data = sample(4 * 2**20, seed=3)
    sid = new_object_id()
    with pytest.raises(StorageFull) as info:
        manifest_for(repo, sid, data)
    assert "no space left" in str(info.value)
    assert repo.snapshot_ids() == []
    already = len(repo.chain_chunks(sid))
    assert already >= 5

    failing.budget = 10**9
    failing.puts = 0
    m = manifest_for(repo, sid, data)  # the retry of the same backup
    repo.save_manifest(m)
    total = len({c.id for c in m.streams[0].chunks})
    assert failing.puts == total - already  # chunks from the failed attempt were reused
    out = io.BytesIO()
    repo.read_stream(sid, m.streams[0], out, sid)
    assert out.getvalue() == data


def test_flipped_byte_in_chunk_is_detected(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    sid = new_object_id()
    m = manifest_for(repo, sid, sample(2 * 2**20))
    repo.save_manifest(m)
    victim = m.streams[0].chunks[3]
    path = tmp_path / "repo" / chunk_key(sid, victim.id)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    written = io.BytesIO()
    with pytest.raises(IntegrityError) as info:
        repo.read_stream(sid, m.streams[0], written, sid)
    assert victim.id[:12] in str(info.value)
    # nothing after the damaged chunk reached the sink
    assert len(written.getvalue()) == sum(c.size for c in m.streams[0].chunks[:3])


def test_swapped_chunk_is_detected(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    sid = new_object_id()
    m = manifest_for(repo, sid, sample(2 * 2**20, seed=9))
    a, b = m.streams[0].chunks[1], m.streams[0].chunks[2]
    pa, pb = (tmp_path / "repo" / chunk_key(sid, c.id) for c in (a, b))
    pa.write_bytes(pb.read_bytes())
    with pytest.raises(IntegrityError):
        repo.read_stream(sid, m.streams[0], io.BytesIO(), sid)


def test_snapshot_id_resolution(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    for sid in ("abcd0000" + "0" * 24, "abcd1111" + "1" * 24):
        repo.save_manifest(manifest_for(repo, sid, b"x" * 10))
    assert repo.resolve_snapshot("abcd1") == "abcd1111" + "1" * 24
    with pytest.raises(AmbiguousSnapshot):
        repo.resolve_snapshot("abcd")
    with pytest.raises(SnapshotNotFound):
        repo.resolve_snapshot("ffff")
    with pytest.raises(SnapshotNotFound):
        repo.resolve_snapshot("xyz!")


_MEMORY_PROBE = """
import io, os, resource, sys
from vaultflow.repository import Repository
from vaultflow.storage import LocalStore

class Generated(io.RawIOBase):
    def __init__(self, total):
        self.left = total
    def readable(self):
        return True
    def readinto(self, buf):
        n = min(len(buf), self.left, 1 << 20)
        buf[:n] = os.urandom(n)
        self.left -= n
        return n

repo = Repository.init(LocalStore(sys.argv[1]), "pw")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
repo.writer("c").write_stream("s", "raw", io.BufferedReader(Generated(int(sys.argv[2]) << 20)))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


def test_memory_is_bounded_by_chunk_size(tmp_path: Path) -> None:
    """Peak memory while storing a stream does not grow with the stream's size."""
    import subprocess
    import sys

    def growth(mib: int) -> int:
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(tmp_path / f"r{mib}"), str(mib)],
                             capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    small, large = growth(32), growth(256)
    assert large < 80, f"peak RSS grew by {large} MiB while storing 256 MiB"
    assert large <= small + 16, f"memory grows with stream size: {small} MiB vs {large} MiB"


class SlowStore(LocalStore):
    """Puts take a while, so two writers meet on the same chunk while it is being stored."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.chunk_puts: list[str] = []

    def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
        if key.startswith("chains/"):
            time.sleep(0.05)
            self.chunk_puts.append(key)
        super().put(key, data, sync=sync)


def test_parallel_streams_sharing_chunks(tmp_path: Path) -> None:
    make_repo(tmp_path)
    slow = SlowStore(tmp_path / "repo")
    repo = Repository.open(slow, PASS)
    writer = repo.writer("c", workers=2)
    data = sample(3 * 2**20, seed=5)
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda name: writer.write_stream(name, "raw", io.BytesIO(data)), ["a", "b"])
    assert [c.id for c in a.chunks] == [c.id for c in b.chunks]
    assert len(slow.chunk_puts) == len(set(slow.chunk_puts)) == len({c.id for c in a.chunks})


def test_streams_recorded_with_sha256_still_restore_and_verify(tmp_path: Path) -> None:
    """Streams written before BLAKE3 became the stream digest carry `sha256`: still read,
    still checked; a wrong one is still caught."""
    import hashlib

    from vaultflow.operations.verify import verify_snapshots

    repo = make_repo(tmp_path)
    data = sample(2**20)
    sid = new_object_id()
    m = manifest_for(repo, sid, data)
    assert m.streams[0].blake3 and m.streams[0].sha256 is None
    old = m.streams[0].model_copy(update={"blake3": None, "sha256": hashlib.sha256(data).hexdigest()})
    repo.save_manifest(m.model_copy(update={"streams": [old]}))
    loaded = repo.load_manifest(sid).streams[0]
    out = io.BytesIO()
    repo.read_stream(sid, loaded, out, sid)
    assert out.getvalue() == data
    assert all(v.valid for v in verify_snapshots(repo, [sid], deep=True))
    wrong = old.model_copy(update={"sha256": hashlib.sha256(b"other").hexdigest()})
    with pytest.raises(IntegrityError):
        repo.read_stream(sid, wrong, io.BytesIO(), sid)
