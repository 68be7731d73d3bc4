"""The repository: config, chunk store, manifests, on top of any ObjectStore.

Object layout (see docs/design.md section 3):
    config                                   plaintext JSON: format, id, chunker; version 1: KDF and
                                             the wrapped key; version 2: the data and admin public keys
    keys/<key-id>                            version 2: one key object per passphrase (repository/keys.py)
    chains/<chain>/chunks/<id[:2]>/<id>      sealed chunk, aad = b"chunk:" + id
    snapshots/<snapshot-id>                  sealed manifest JSON, aad = b"snapshot:" + id

Write ordering: every chunk of a snapshot is durable before its manifest is written, and
the manifest is written by one atomic put; so a snapshot is either complete or absent.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Protocol, cast

import pyfastcdc

from vaultflow.errors import (
    AmbiguousSnapshot,
    InputError,
    IntegrityError,
    KeyRoleInsufficient,
    RepositoryError,
    RepositoryNotInitialised,
    SnapshotNotFound,
    VaultflowError,
    WrongPassphrase,
)
from vaultflow.repository.crypto import KdfParams, MasterKeys, RoleSealer, Sealer, SealError, b64, unb64
from vaultflow.repository.keys import (
    KEY_PREFIX,
    KeyObject,
    KeyRole,
    RoleSecrets,
    config_binding,
    new_key_object,
    role_at_least,
)
from vaultflow.repository.manifest import ChunkRef, SnapshotManifest, StreamManifest, new_stream_hasher
from vaultflow.repository.passphrase import KEY_ID_ENV, key_id_from_environment
from vaultflow.storage.base import LockMode, ObjectLockPolicy, ObjectStore

CONFIG_KEY = "config"
FORMAT_NAME = "vaultflow-repository"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 (one passphrase, one seal key, admin) stays readable and writable; `vaultflow upgrade`
turns it into version 2 (key roles)."""
SNAPSHOT_PREFIX = "snapshots/"
# zstd level 1 both compresses dumps better than level 3 on ~2 MiB chunks and runs twice as
# fast (measured on pgbench and text/jsonb COPY data: bench/README.md).
DEFAULT_COMPRESSION_LEVEL = 1

ProgressCallback = Callable[[int, int], None]
"""Called as (plaintext bytes read so far, bytes newly stored so far)."""


class ByteSink(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC settings. pyfastcdc's real mean is about avg + min (here ~1.25 MiB).

    Runs of identical bytes (blank-padded columns) give the gear hash no cut points, so
    such data is cut at `max_size`; 2 MiB keeps a small change there from re-storing more.
    `normalization` 2 narrows the size spread around the mean (FastCDC's NC level).
    """

    min_size: int = 256 * 1024
    avg_size: int = 1024 * 1024
    max_size: int = 2 * 1024 * 1024
    normalization: int = 2


UNLOCKED_PREFIXES = ("locks/", "exports/", "links/", KEY_PREFIX)
"""Written without object lock retention and deleted as usual: repository locks (rewritten
while held, and protecting no data), plaintext exports and their link records (which must go
when their links expire), and key objects (`key remove` must work; the storage policy keeps
every role but admin from deleting them, docs/storage.md)."""


@dataclass(frozen=True)
class ObjectLockSettings:
    """A repository's object lock, recorded in its config as `object_lock`: every object
    outside UNLOCKED_PREFIXES is written retained in `mode` for `period` from its put."""

    mode: LockMode
    period: timedelta

    def to_json(self) -> dict[str, object]:
        return {"mode": self.mode, "period_seconds": int(self.period.total_seconds())}

    @classmethod
    def from_config(cls, config: dict[str, object]) -> ObjectLockSettings | None:
        raw = config.get("object_lock")
        if not isinstance(raw, dict):
            return None
        mode = str(raw.get("mode"))
        if mode not in ("governance", "compliance"):
            raise RepositoryError(f"repository config names an unknown object lock mode {mode!r}",
                                  "use a vaultflow release that reads it")
        return cls(cast(LockMode, mode), timedelta(seconds=int(str(raw.get("period_seconds")))))

    def policy(self) -> ObjectLockPolicy:
        return ObjectLockPolicy(self.mode, self.period, UNLOCKED_PREFIXES)

    def describe(self) -> str:
        days = self.period / timedelta(days=1)
        return f"{self.mode} lock for {days:g} day(s)" if days >= 1 else f"{self.mode} lock for {self.period}"


def new_object_id() -> str:
    return os.urandom(16).hex()


def chunk_key(chain: str, chunk_id: str) -> str:
    return f"chains/{chain}/chunks/{chunk_id[:2]}/{chunk_id}"


class Repository:
    """An opened repository. Construct with `init` or `open`."""

    def __init__(self, store: ObjectStore, config: dict[str, object], keys: MasterKeys | RoleSecrets,
                 key_id: str | None = None) -> None:
        """`keys`: a version 1 repository's master keys (its one passphrase acts as admin), or the
        secrets of the version 2 key `key_id`."""
        self.store = store
        self.config = config
        self.id = str(config["id"])
        self.version = int(str(config["version"]))
        chunker = config["chunker"]
        assert isinstance(chunker, dict)
        # Configs written before `normalization` existed were cut with pyfastcdc's default, 1.
        self.chunker = ChunkerParams(**{"normalization": 1, **{k: int(v) for k, v in chunker.items()}})
        self.keys = keys
        self.object_lock = ObjectLockSettings.from_config(config)
        if self.object_lock is not None:
            store.use_object_lock(self.object_lock.policy())
        level = int(str(config.get("compression_level", DEFAULT_COMPRESSION_LEVEL)))
        self.role: KeyRole
        self.key_id = key_id or ""
        self.sealer: Sealer | RoleSealer
        if isinstance(keys, MasterKeys):
            self.role = "admin"
            self.sealer = Sealer(keys, level=level)
        else:
            self.role = keys.role
            self.sealer = RoleSealer(repo_id=self.id, role=keys.role, key_id=self.key_id, id_key=keys.id_key,
                                     meta_key=keys.meta_key, data_public=unb64(str(config["data_public_key"])),
                                     data_private=keys.data_private, legacy_seal_key=keys.legacy_seal_key,
                                     level=level)

    @property
    def can_read_data(self) -> bool:
        """Whether this key opens stored data (chunks, WAL, binlogs, archived rows): restore or admin."""
        return role_at_least(self.role, "restore")

    def require(self, role: KeyRole, action: str) -> None:
        """Refuse `action` unless the opened key's role is at least `role`: one KeyRoleInsufficient
        line, before anything is changed. The cryptography enforces the restore boundary anyway
        (a backup key cannot open data); this check makes it one clear line."""
        if role_at_least(self.role, role):
            return
        article = "an" if role == "admin" else "a"
        key = f"key {self.key_id[:8]}" if self.key_id else "the repository's key"
        raise KeyRoleInsufficient(
            f"{action} needs {article} {role} key; the key opened is a {self.role} key ({key}) "
            f"of the repository at {self.store.describe()}",
            f"use the passphrase of {article} {role} key")

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        store: ObjectStore,
        passphrase: str,
        *,
        kdf: KdfParams | None = None,
        chunker: ChunkerParams | None = None,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        object_lock: ObjectLockSettings | None = None,
        format_version: int = FORMAT_VERSION,
    ) -> Repository:
        """Create a new repository; refuse if the location already holds one. With `object_lock`,
        the store must hold locked objects (`check_object_lock`), and everything written from the
        config on is retained; nothing is written when that check fails. `format_version` 2 (the
        default) writes the passphrase as the first admin key `keys/<id>`; 1 writes the old format."""
        if object_lock is not None:
            if object_lock.period < timedelta(seconds=1):
                raise InputError(f"an object lock of {object_lock.period} is too short",
                                 "give --object-lock DAYS of at least 1")
            store.check_object_lock()
        if store.exists(CONFIG_KEY):
            raise RepositoryError(
                f"a repository already exists at {store.describe()}",
                "use it as it is, or choose an empty location",
            )
        if not passphrase:
            raise WrongPassphrase("an empty passphrase is not allowed", "set VAULTFLOW_PASSPHRASE")
        kdf = kdf or KdfParams(salt=os.urandom(16))
        chunker = chunker or ChunkerParams()
        if format_version not in READABLE_VERSIONS:
            raise InputError(f"repository format version {format_version} does not exist", "use 1 or 2")
        repo_id = new_object_id()
        config: dict[str, object] = {
            "format": FORMAT_NAME,
            "version": format_version,
            "id": repo_id,
            "created": datetime.now(UTC).isoformat(),
            "chunker": {"min_size": chunker.min_size, "avg_size": chunker.avg_size,
                        "max_size": chunker.max_size, "normalization": chunker.normalization},
            "compression": "zstd",
            "compression_level": compression_level,
            "encryption": "aes-256-gcm",
            "chunk_id": "blake3-keyed",
        }
        if object_lock is not None:
            config["object_lock"] = object_lock.to_json()
            store.use_object_lock(object_lock.policy())
        if format_version == 1:
            keys = MasterKeys.generate()
            config["kdf"] = kdf.to_json()
            # The wrapping authenticates the id and the chunker settings along with the keys.
            config["key"] = b64(keys.wrap(kdf.derive(passphrase), _key_aad(config)))
            store.put(CONFIG_KEY, json.dumps(config, indent=2).encode())
            return cls(store, config, keys)
        secrets = RoleSecrets.generate()
        return cls._write_v2(store, config, secrets, passphrase, kdf)

    @classmethod
    def _write_v2(cls, store: ObjectStore, config: dict[str, object], secrets: RoleSecrets, passphrase: str,
                  kdf: KdfParams | None) -> Repository:
        """Write the first admin key object, then the version 2 config naming its public keys
        (the key first: a config is only ever visible with a key that opens it)."""
        config.update({"version": 2, "encryption": "x25519-hkdf-aes-256-gcm (data), aes-256-gcm (metadata)",
                       "data_public_key": b64(secrets.data_public or b""),
                       "admin_public_key": b64(secrets.admin_public or b"")})
        key = new_key_object(config, secrets, "admin", passphrase, kdf)
        store.put(key.key, key.to_bytes())
        store.put(CONFIG_KEY, json.dumps(config, indent=2).encode())
        return cls(store, config, secrets, key.id)

    @staticmethod
    def read_config(store: ObjectStore) -> dict[str, object]:
        """The plaintext config; needs no passphrase."""
        try:
            raw = store.get(CONFIG_KEY)
        except KeyError:
            raise RepositoryNotInitialised(
                f"no vaultflow repository at {store.describe()}",
                f"create one with: vaultflow init --repo {store.describe()}",
            ) from None
        try:
            config = json.loads(raw)
        except ValueError:
            raise RepositoryError(f"repository config at {store.describe()} is not valid JSON") from None
        if config.get("format") != FORMAT_NAME or config.get("version") not in READABLE_VERSIONS:
            raise RepositoryError(
                f"{store.describe()} holds format {config.get('format')!r} "
                f"version {config.get('version')!r}, not {FORMAT_NAME} 1 or 2",
                "use a vaultflow release that reads it",
            )
        return dict(config)

    @classmethod
    def open(cls, store: ObjectStore, passphrase: str) -> Repository:
        """Open with the key `passphrase` unlocks: version 1's one key, or the version 2 key object
        (signed by the repository's admin key) it unwraps; WrongPassphrase when none does."""
        config = cls.read_config(store)
        if config["version"] == 2:
            return cls._open_v2(store, config, passphrase)
        kdf = KdfParams.from_json(dict(config["kdf"]))  # type: ignore[call-overload]
        try:
            keys = MasterKeys.unwrap(
                kdf.derive(passphrase), unb64(str(config["key"])), _key_aad(config)
            )
        except SealError:
            raise WrongPassphrase(
                f"wrong passphrase for the repository at {store.describe()} (or its config was altered)",
                "set VAULTFLOW_PASSPHRASE (or the block's passphrase) to the one it was created with",
            ) from None
        return cls(store, config, keys)

    @classmethod
    def _open_v2(cls, store: ObjectStore, config: dict[str, object], passphrase: str) -> Repository:
        """The key the passphrase unwraps: with a VAULTFLOW_KEY_ID hint only the key it names (one
        scrypt), else every signed key object in turn (one scrypt each)."""
        admin_public = unb64(str(config["admin_public_key"]))
        hint = key_id_from_environment()
        candidates = key_objects(store, hint)
        if hint is not None:
            if len({obj.id for obj in candidates}) != 1:
                raise InputError(f"{KEY_ID_ENV}={hint} names {'no' if not candidates else 'more than one'} key of "
                                 f"the repository at {store.describe()}",
                                 f"unset {KEY_ID_ENV}, or set it to a key id from: vaultflow key list")
        unsigned = 0
        for obj in candidates:
            if not obj.signed_by(admin_public, str(config["id"])):
                unsigned += 1
                continue
            try:
                secrets = obj.unwrap(passphrase, config)
            except SealError:
                continue
            return cls(store, config, secrets, obj.id)
        note = f" ({unsigned} key object(s) not signed by its admin key were ignored)" if unsigned else ""
        if hint is not None:
            raise WrongPassphrase(f"key {candidates[0].id[:8]} of the repository at {store.describe()} ({KEY_ID_ENV}) "
                                  f"does not open with this passphrase{note}",
                                  f"set VAULTFLOW_PASSPHRASE to that key's passphrase, or unset {KEY_ID_ENV}")
        raise WrongPassphrase(
            f"no key of the repository at {store.describe()} opens with this passphrase (wrong passphrase, "
            f"a removed key, or an altered config){note}",
            "set VAULTFLOW_PASSPHRASE (or the block's passphrase) to the passphrase of one of its keys")

    # -- keys (format version 2) -------------------------------------------------------

    def key_objects(self) -> list[KeyObject]:
        """The stored key objects that the repository's admin key signed."""
        admin_public = unb64(str(self.config["admin_public_key"]))
        return [k for k in key_objects(self.store) if k.signed_by(admin_public, self.id)]

    def _require_v2(self, action: str) -> None:
        if self.version != 2:
            raise RepositoryError(f"{action}: the repository at {self.store.describe()} is format version 1, "
                                  "which has one passphrase and no key roles",
                                  f"upgrade it first: vaultflow upgrade --repo {self.store.describe()}")

    def add_key(self, role: KeyRole, passphrase: str) -> KeyObject:
        """Store a new key of `role` under `passphrase` (admin only; the caller checks the role)."""
        self._require_v2("key add")
        assert isinstance(self.keys, RoleSecrets)
        key = new_key_object(self.config, self.keys, role, passphrase)
        self.store.put(key.key, key.to_bytes())
        return key

    def remove_key(self, key_id: str) -> KeyObject:
        """Delete the key object `key_id` (a unique prefix of 4+ characters will do); refused for the
        last admin key. Returns what was removed."""
        self._require_v2("key remove")
        keys = self.key_objects()
        ref = key_id.strip().lower()
        matches = [k for k in keys if k.id.startswith(ref)] if len(ref) >= 4 else []
        if len(matches) != 1:
            what = "matches no key" if not matches else "is ambiguous"
            raise InputError(f"key id {key_id!r} {what} of the repository at {self.store.describe()}",
                             "list the keys with: vaultflow key list")
        target = matches[0]
        if target.role == "admin" and sum(k.role == "admin" for k in keys) == 1:
            raise InputError(f"key {target.id[:8]} is the repository's last admin key",
                             "add another admin key first (vaultflow key add --role admin)")
        self.store.delete(target.key)
        return target

    # -- snapshots -------------------------------------------------------------------

    def snapshot_ids(self) -> list[str]:
        return sorted(
            info.key[len(SNAPSHOT_PREFIX) :] for info in self.store.list(SNAPSHOT_PREFIX)
        )

    def resolve_snapshot(self, ref: str) -> str:
        """Full id for an id or unique id prefix (at least 4 characters)."""
        ref = ref.strip().lower()
        if len(ref) < 4 or not all(c in "0123456789abcdef" for c in ref):
            raise SnapshotNotFound(
                f"snapshot id {ref!r} is not a hex id of at least 4 characters",
                "list ids with: vaultflow snapshots",
            )
        matches = [i for i in self.snapshot_ids() if i.startswith(ref)]
        if not matches:
            raise SnapshotNotFound(
                f"no snapshot {ref!r} in the repository at {self.store.describe()}",
                "list ids with: vaultflow snapshots",
            )
        if len(matches) > 1:
            raise AmbiguousSnapshot(
                f"snapshot id {ref!r} is ambiguous: it matches {', '.join(m[:12] for m in matches[:5])}",
                "give more characters of the id",
            )
        return matches[0]

    def save_manifest(self, manifest: SnapshotManifest) -> None:
        """Write the manifest. Call only after every chunk it names is durable."""
        payload = manifest.model_dump_json(by_alias=True).encode()
        self.store.put(
            SNAPSHOT_PREFIX + manifest.id, self.sealer.seal(payload, _manifest_aad(manifest.id))
        )

    def load_manifest(self, snapshot_id: str) -> SnapshotManifest:
        try:
            blob = self.store.get(SNAPSHOT_PREFIX + snapshot_id)
        except KeyError:
            raise SnapshotNotFound(
                f"no snapshot {snapshot_id} in the repository at {self.store.describe()}",
                "list ids with: vaultflow snapshots",
            ) from None
        try:
            payload = self.sealer.open(blob, _manifest_aad(snapshot_id))
        except SealError as exc:
            raise IntegrityError(
                f"manifest of snapshot {snapshot_id[:8]} failed its check: {exc}",
                "the snapshot cannot be trusted; restore another one",
            ) from None
        return SnapshotManifest.model_validate_json(payload)

    def manifests(self) -> Iterator[SnapshotManifest]:
        for sid in self.snapshot_ids():
            yield self.load_manifest(sid)

    # -- chunks ----------------------------------------------------------------------

    def chain_chunks(self, chain: str) -> dict[str, int]:
        """Chunk id -> stored size of every chunk already in `chain` (one listing)."""
        prefix = f"chains/{chain}/chunks/"
        return {info.key.rsplit("/", 1)[1]: info.size for info in self.store.list(prefix)}

    def writer(self, chain: str, *, workers: int | None = None, known: dict[str, int] | None = None,
               repair: bool = False) -> ChunkWriter:
        """A writer into `chain` that reuses `known` chunks (default: every chunk the chain holds).

        `workers` (sealing and uploading threads per stream) defaults to the store's
        `concurrency`: 2 for a local disk, VAULTFLOW_STORAGE_CONCURRENCY (8) for object storage.
        On an object-locked repository a chunk the chain holds is never put again (that would
        add a version of the same key) unless `repair` asks to replace damaged ones.
        """
        return ChunkWriter(self, chain, workers=workers or self.store.concurrency, known=known,
                           reuse_chain=self.object_lock is not None and not repair)

    def read_stream(
        self,
        snapshot_id: str,
        stream: StreamManifest,
        sink: ByteSink,
        chain: str,
        *,
        prefetch: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Write the stream's plaintext to `sink`, verifying every chunk and the whole.

        Raises IntegrityError before writing a chunk that fails its check; the caller
        must then treat everything already written as garbage.
        """
        total = stream.hasher()
        done = 0
        # Chunks fetched ahead: at least 4, more when the store wants more requests at once.
        prefetch = prefetch or max(4, self.store.concurrency)
        with ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="vf-read") as pool:
            pending: list[tuple[ChunkRef, Future[bytes]]] = []
            chunks = iter(stream.chunks)
            for ref in chunks:
                pending.append((ref, pool.submit(self.load_chunk, snapshot_id, chain, ref)))
                if len(pending) >= prefetch:
                    break
            while pending:
                ref, fut = pending.pop(0)
                nxt = next(chunks, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self.load_chunk, snapshot_id, chain, nxt)))
                try:
                    data = fut.result()
                except BaseException:
                    for _, f in pending:
                        f.cancel()
                    raise
                total.update(data)
                sink.write(data)
                done += len(data)
                if progress:
                    progress(done, 0)
        if total.hexdigest() != stream.digest or done != stream.size:
            raise IntegrityError(
                f"stream {stream.name!r} of snapshot {snapshot_id[:8]} does not match its "
                "recorded digest/size",
                "the snapshot is damaged; restore another one",
            )

    def put_chunk(self, chain: str, data: bytes, *, sync: bool = False) -> ChunkRef:
        """Seal and store one chunk of plaintext in `chain`; its reference in this repository."""
        cid = self.sealer.chunk_id(data)
        blob = self.sealer.seal(data, _chunk_aad(cid), content_id=cid)
        self.store.put(chunk_key(chain, cid), blob, sync=sync)
        return ChunkRef(id=cid, size=len(data), stored=len(blob))

    def load_chunk(self, snapshot_id: str, chain: str, ref: ChunkRef) -> bytes:
        """One chunk's plaintext, authenticated and re-hashed; IntegrityError otherwise."""
        key = chunk_key(chain, ref.id)
        try:
            blob = self.store.get(key)
        except KeyError:
            raise IntegrityError(
                f"chunk {ref.id[:12]} of snapshot {snapshot_id[:8]} is missing from the repository",
                "the snapshot is damaged; restore another one",
            ) from None
        try:
            data = self.sealer.open(blob, _chunk_aad(ref.id), max_size=ref.size)
        except (SealError, Exception) as exc:
            if isinstance(exc, IntegrityError | KeyRoleInsufficient):
                raise
            raise IntegrityError(
                f"chunk {ref.id[:12]} of snapshot {snapshot_id[:8]} failed its check: {exc}",
                "the snapshot is damaged; restore another one",
            ) from None
        if len(data) != ref.size or self.sealer.chunk_id(data) != ref.id:
            raise IntegrityError(
                f"chunk {ref.id[:12]} of snapshot {snapshot_id[:8]} has the wrong content",
                "the snapshot is damaged; restore another one",
            )
        return data


class StreamAborted(VaultflowError):
    """A stream stopped because another stream of the same backup failed first."""


class ChunkWriter:
    """Cuts streams into chunks and stores the chunks the chain does not hold yet.

    The reading thread only cuts and feeds the whole-stream digest; chunk ids, sealing
    and puts run on `workers` threads. Memory is bounded: at most `2 * workers` chunks
    (each <= the maximum chunk size) are in flight. Chunks already in the chain (from an
    earlier attempt of the same backup) are reused without being written again. Puts are
    not synced one by one: `write_stream` returns only after `store.sync()`, so every
    chunk is durable before a manifest can name it.
    """

    def __init__(self, repo: Repository, chain: str, *, workers: int = 2,
                 known: dict[str, int] | None = None, reuse_chain: bool = False) -> None:
        self.repo = repo
        self.chain = chain
        in_chain = repo.chain_chunks(chain)
        # reuse_chain: chunks the chain holds count as known whatever `known` says (object lock:
        # nothing is written twice; S3 puts are durable, so reusing one needs no sync either).
        self.known = dict(in_chain) if known is None or reuse_chain else dict(known)
        # Chunks already in the chain may come from a run that died before syncing them;
        # those this writer reuses are synced before the stream is reported done, and one
        # it writes again (repair, differential) replaces a referenced object, so durably.
        self._in_chain = set(in_chain)
        self._reused: set[str] = set()
        self._pending: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._workers = workers
        self._aborted = threading.Event()
        self.bytes_read = 0
        self.bytes_stored = 0

    def abort(self) -> None:
        """Make every `write_stream` in progress stop at its next chunk with StreamAborted
        (another stream of the same backup failed; the snapshot cannot be written anyway)."""
        self._aborted.set()

    def write_stream(
        self,
        name: str,
        fmt: str,
        reader: IO[bytes],
        progress: ProgressCallback | None = None,
        *,
        tap: Callable[[bytes], None] | None = None,
        meta: dict[str, str] | None = None,
    ) -> StreamManifest:
        """Store one stream; `tap` sees every byte in order (for row counts and checksums)."""
        params = self.repo.chunker
        cdc = pyfastcdc.FastCDC(
            avg_size=params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,  # type: ignore[arg-type]
            seed=self.repo.keys.chunker_seed,
        )
        total = new_stream_hasher()
        futures: list[Future[tuple[str, int]]] = []
        inflight = threading.BoundedSemaphore(2 * self._workers)
        failures: list[BaseException] = []
        size = 0

        def on_done(fut: Future[tuple[str, int]]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                failures.append(fut.exception())  # type: ignore[arg-type]
            inflight.release()

        with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="vf-seal") as pool:
            try:
                for piece in cdc.cut_stream(reader):
                    if self._aborted.is_set():
                        raise StreamAborted(f"stream {name!r} stopped: another stream of the backup failed")
                    data = bytes(piece.data)
                    total.update(data)
                    if tap is not None:
                        tap(data)
                    size += len(data)
                    inflight.acquire()
                    if failures:
                        raise failures[0]
                    fut = pool.submit(self._store_chunk, data)
                    fut.add_done_callback(on_done)
                    futures.append(fut)
                    with self._lock:
                        self.bytes_read += len(data)
                    if progress:
                        progress(self.bytes_read, self.bytes_stored)
                ids = [f.result() for f in futures]
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        with self._lock:
            reused, self._reused = self._reused, set()
        self.repo.store.sync(chunk_key(self.chain, cid) for cid in reused)
        chunks = [ChunkRef(id=cid, size=n, stored=self.known[cid]) for cid, n in ids]
        if progress:
            progress(self.bytes_read, self.bytes_stored)
        return StreamManifest(name=name, format=fmt, size=size, blake3=total.hexdigest(),
                              chunks=chunks, meta=meta or {})

    def _store_chunk(self, data: bytes) -> tuple[str, int]:
        """Store the chunk unless the chain has it; if another thread (of this or another
        stream) is storing the same chunk, wait for it, and take over if it failed."""
        cid = self.repo.sealer.chunk_id(data)
        while True:
            with self._lock:
                if cid in self.known:
                    if cid in self._in_chain:
                        self._reused.add(cid)
                    return cid, len(data)
                pending = self._pending.get(cid)
                if pending is None:
                    done = self._pending[cid] = threading.Event()
                    break
            pending.wait()
        try:
            blob = self.repo.sealer.seal(data, _chunk_aad(cid), content_id=cid)
            self.repo.store.put(chunk_key(self.chain, cid), blob, sync=cid in self._in_chain)
            with self._lock:
                self.known[cid] = len(blob)
                self.bytes_stored += len(blob)
        finally:
            with self._lock:
                del self._pending[cid]
            done.set()
        return cid, len(data)


def _key_aad(config: dict[str, object]) -> bytes:
    """Version 1's key AAD; `object_lock` is bound too, so a config rewritten without its lock fails."""
    return b"vaultflow-key:" + json.dumps(config_binding(config), sort_keys=True).encode()


def key_objects(store: ObjectStore, id_prefix: str | None = None) -> list[KeyObject]:
    """Every parseable object under keys/ (unsigned ones too: callers check signatures), or only
    those whose key id starts with `id_prefix` (the others are not read)."""
    found = []
    for info in store.list(KEY_PREFIX + (id_prefix or "")):
        try:
            found.append(KeyObject.from_bytes(store.get(info.key)))
        except (KeyError, SealError, ValueError):  # removed meanwhile, or not a key object
            continue
    return found


def _chunk_aad(chunk_id: str) -> bytes:
    return b"chunk:" + chunk_id.encode()


def _manifest_aad(snapshot_id: str) -> bytes:
    return b"snapshot:" + snapshot_id.encode()


def open_repository(location: str | ObjectStore, passphrase: str | None) -> Repository:
    """Open the repository at a location (path or URL, or an opened store) with a passphrase."""
    from vaultflow.storage import open_store

    store = open_store(location) if isinstance(location, str) else location
    if not passphrase:
        Repository.read_config(store)  # "not initialised" beats "no passphrase"
        raise WrongPassphrase(
            f"no passphrase given for the repository at {store.describe()}",
            "set VAULTFLOW_PASSPHRASE or the BackupRepository block's passphrase",
        )
    return Repository.open(store, passphrase)
