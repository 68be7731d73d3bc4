"""Copy snapshots into a second repository (3-2-1 backups), storing only what it lacks.

The two repositories have different keys, so a chunk cannot move as it is: each chunk is
read and authenticated in the source, its id computed with the destination's id key, and
it is sealed and stored there only if the destination chain does not list it yet. A copied
snapshot keeps its id, chain and parent; its manifest is written last, after every chunk
it names is durable, so an interrupted copy leaves no snapshot, and running it again
copies what is still missing.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vaultflow.audit import audited
from vaultflow.repository import Repository, SnapshotManifest
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.manifest import ChunkRef, StreamManifest
from vaultflow.repository.repository import chunk_key


@dataclass
class CopyResult:
    copied: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    chunks_written: int = 0
    chunks_reused: int = 0
    bytes_written: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"copied": self.copied, "already_there": self.already_there, "chunks_written": self.chunks_written,
                "chunks_reused": self.chunks_reused, "bytes_written": self.bytes_written}


def copy_snapshots(source: Repository, dest: Repository, snapshot_ids: list[str] | None = None) -> CopyResult:
    """Copy the given snapshots (all if None) that `dest` does not hold, oldest first."""
    source.require("restore", "copy")
    result = CopyResult()
    with (audited(dest, "copy", detail=f"from {source.store.describe()}") as note,
          RepositoryLock(source, "shared", f"copy to {dest.store.describe()}", wait=60),
          RepositoryLock(dest, "shared", f"copy from {source.store.describe()}", wait=600) as dest_lock):
        present = set(dest.snapshot_ids())
        wanted = snapshot_ids if snapshot_ids is not None else source.snapshot_ids()
        manifests = sorted((source.load_manifest(i) for i in wanted), key=lambda m: m.started_at)
        indexes: dict[str, dict[str, int]] = {}
        for manifest in manifests:
            if manifest.id in present:
                result.already_there.append(manifest.id)
                continue
            known = indexes.setdefault(manifest.chain, dest.chain_chunks(manifest.chain))
            copier = _ChunkCopier(source, dest, manifest, known, result)
            streams = [copier.copy_stream(stream) for stream in manifest.streams]
            dest.store.sync(chunk_key(manifest.chain, cid) for cid in copier.reused)
            dest_lock.check_held()
            dest.save_manifest(manifest.model_copy(update={"streams": streams}))
            result.copied.append(manifest.id)
        note.object = " ".join(result.copied)
        note.detail += f": {len(result.copied)} copied, {len(result.already_there)} already there"
    return result


class _ChunkCopier:
    def __init__(self, source: Repository, dest: Repository, manifest: SnapshotManifest, known: dict[str, int],
                 result: CopyResult) -> None:
        self.source, self.dest, self.manifest, self.known, self.result = source, dest, manifest, known, result
        self.reused: set[str] = set()
        self._lock = threading.Lock()
        self._pending: dict[str, threading.Event] = {}  # chunk id -> set once its put ended

    def copy_stream(self, stream: StreamManifest) -> StreamManifest:
        workers = max(self.source.store.concurrency, self.dest.store.concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vf-copy") as pool:
            chunks = list(pool.map(self._copy_chunk, stream.chunks))
        return stream.model_copy(update={"chunks": chunks})

    def _copy_chunk(self, ref: ChunkRef) -> ChunkRef:
        data = self.source.load_chunk(self.manifest.id, self.manifest.chain, ref)
        cid = self.dest.sealer.chunk_id(data)
        while True:  # a chunk twice in a stream is put once: the second waits for the first's put
            with self._lock:
                stored = self.known.get(cid)
                if stored is not None:
                    self.reused.add(cid)
                    self.result.chunks_reused += 1
                    return ChunkRef(id=cid, size=ref.size, stored=stored)
                pending = self._pending.get(cid)
                if pending is None:
                    done = self._pending[cid] = threading.Event()
                    break
            pending.wait()  # if that put failed, this one tries
        try:
            new = self.dest.put_chunk(self.manifest.chain, data)
            with self._lock:
                self.known[cid] = new.stored
                self.result.chunks_written += 1
                self.result.bytes_written += new.stored
        finally:
            with self._lock:
                del self._pending[cid]
            done.set()
        return new
