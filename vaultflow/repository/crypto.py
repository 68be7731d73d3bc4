"""Keys and sealed objects.

Format version 1 (below) has one set of secrets for everything. Format version 2 gives each
key a role (`RoleSecrets`, repository/keys.py) and seals with `RoleSealer`: data objects to the
repository's X25519 data public key (only restore and admin keys hold its private half),
planning metadata with a metadata key every role holds. docs/design.md section 3.

A version 1 repository has random master keys (AES-256-GCM for sealing, a BLAKE3 key for chunk ids,
a chunker seed). They are stored in the config object wrapped by a key derived from the
passphrase with scrypt; the GCM tag of that wrapping is the key check.

A sealed object is: version byte, 12-byte random nonce, AES-256-GCM ciphertext of
(compression byte + payload), authenticated together with the object's name (`aad`), so a
stored object cannot be swapped for another without failing authentication.
"""

from __future__ import annotations

import base64
import functools
import os
import threading
from dataclasses import dataclass

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from vaultflow.errors import KeyRoleInsufficient

SEAL_VERSION = 1
SEAL_DATA = 2
"""Seal version of a data object in a version 2 repository: sealed to the data public key."""
SEAL_META = 3
"""Seal version of a metadata object in a version 2 repository: sealed with the metadata key."""
DATA_AAD_PREFIXES = (b"chunk:", b"archive-rows:", b"wal:", b"binlog:")
"""The object kinds (named by their AAD's prefix) whose content is stored data: a version 2
repository seals them so that only the data private key opens them. Every other kind (manifests,
locks, audit, link and archive batch records) is planning metadata, sealed with the metadata key."""
KEY_SIZE = 32
_DATA_HEADER = 1 + KEY_SIZE + KEY_SIZE  # version, session public key, keyed content id
_RAW = 0
_ZSTD = 1
NONCE_SIZE = 12


class SealError(Exception):
    """An object failed authentication or could not be decoded."""


@functools.lru_cache(maxsize=8)
def _scrypt(salt: bytes, n: int, r: int, p: int, passphrase: str) -> bytes:
    """The key-wrapping key, derived once per process for each repository and passphrase:
    a fleet run opens a repository several times for every database it backs up, and each
    derivation costs 0.1-0.2 s of CPU. The process holds the passphrase anyway."""
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


@dataclass(frozen=True)
class KdfParams:
    n: int = 2**15
    r: int = 8
    p: int = 1
    salt: bytes = b""

    def derive(self, passphrase: str) -> bytes:
        return _scrypt(self.salt, self.n, self.r, self.p, passphrase)

    def to_json(self) -> dict[str, object]:
        return {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p, "salt": b64(self.salt)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> KdfParams:
        if data.get("name") != "scrypt":
            raise SealError(f"unsupported key derivation {data.get('name')!r}")
        return cls(
            n=int(str(data["n"])), r=int(str(data["r"])), p=int(str(data["p"])),
            salt=unb64(str(data["salt"])),
        )


@dataclass(frozen=True)
class MasterKeys:
    seal_key: bytes
    id_key: bytes
    chunker_seed: int

    @classmethod
    def generate(cls) -> MasterKeys:
        # 63 bits: pyfastcdc shifts the seed left by one inside a 64-bit integer.
        return cls(os.urandom(32), os.urandom(32), int.from_bytes(os.urandom(8), "big") >> 1)

    def to_bytes(self) -> bytes:
        return self.seal_key + self.id_key + self.chunker_seed.to_bytes(8, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> MasterKeys:
        if len(raw) != 72:
            raise SealError("master key has the wrong length")
        return cls(raw[:32], raw[32:64], int.from_bytes(raw[64:], "big"))

    def wrap(self, kek: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + AESGCM(kek).encrypt(nonce, self.to_bytes(), aad)

    @classmethod
    def unwrap(cls, kek: bytes, wrapped: bytes, aad: bytes) -> MasterKeys:
        try:
            raw = AESGCM(kek).decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)
        except InvalidTag:
            raise SealError("key check failed") from None
        return cls.from_bytes(raw)


class Sealer:
    """Compresses, encrypts and authenticates objects with one repository's keys.

    Thread-safe: each thread gets its own zstd context (contexts are not shareable).
    """

    def __init__(self, keys: MasterKeys, level: int = 3) -> None:
        self._aead = AESGCM(keys.seal_key)
        self._id_key = keys.id_key
        self._level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(level=self._level)
        return cctx

    def chunk_id(self, data: bytes | memoryview) -> str:
        return blake3.blake3(data, key=self._id_key).hexdigest()

    def seal(self, payload: bytes, aad: bytes, *, content_id: str | None = None) -> bytes:
        """Seal `payload` (`content_id` is accepted for `RoleSealer`'s sake and not needed here)."""
        packed = self._compressor().compress(payload)
        if len(packed) < len(payload):
            body = bytes([_ZSTD]) + packed
        else:
            body = bytes([_RAW]) + payload
        nonce = os.urandom(NONCE_SIZE)
        return bytes([SEAL_VERSION]) + nonce + self._aead.encrypt(nonce, body, aad)

    def open(self, blob: bytes, aad: bytes, max_size: int = 64 * 2**20) -> bytes:
        if len(blob) < 1 + NONCE_SIZE + 16 or blob[0] != SEAL_VERSION:
            raise SealError("not a sealed object of a known version")
        nonce = blob[1 : 1 + NONCE_SIZE]
        try:
            body = self._aead.decrypt(nonce, blob[1 + NONCE_SIZE :], aad)
        except InvalidTag:
            raise SealError("authentication failed (altered or foreign object)") from None
        if body[0] == _RAW:
            return body[1:]
        if body[0] == _ZSTD:
            return zstandard.ZstdDecompressor().decompress(body[1:], max_output_size=max_size)
        raise SealError(f"unknown compression {body[0]}")

    def holds(self, blob: bytes, aad: bytes, data: bytes, max_size: int = 64 * 2**20) -> bool:
        """Whether the sealed `blob` holds exactly `data` (wal-push and binlog push idempotence)."""
        return self.open(blob, aad, max_size=max_size) == data

    def open_written(self, blob: bytes, aad: bytes, max_size: int = 64 * 2**20) -> bytes:
        """Open an object this sealer wrote (a read-back); with one key, the same as `open`."""
        return self.open(blob, aad, max_size)


def _unpack(body: bytes, max_size: int) -> bytes:
    if body[0] == _RAW:
        return body[1:]
    if body[0] == _ZSTD:
        return zstandard.ZstdDecompressor().decompress(body[1:], max_output_size=max_size)
    raise SealError(f"unknown compression {body[0]}")


def is_data_aad(aad: bytes) -> bool:
    return aad.startswith(DATA_AAD_PREFIXES)


def x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


class RoleSealer:
    """Seals and opens the objects of a version 2 repository with one key role's secrets.

    Data objects (`DATA_AAD_PREFIXES`): `0x02 | session public key (32) | keyed content id (32) |
    nonce (12) | AES-256-GCM(session key, nonce, C || body, header || AAD)`. One writer session
    per sealer: an ephemeral X25519 pair made on the first data seal, its private half dropped
    once the session key, HKDF-SHA256 of X25519(session private, data public) with info binding
    the repository id and both public keys, is derived. Opening needs the data private key
    (`KeyRoleInsufficient` without it); session keys are cached by session public key.
    Metadata: `0x03 | nonce (12) | AES-256-GCM(metadata key, nonce, C || body, AAD)`.
    Version 1 blobs (an upgraded repository's old objects) open with the legacy seal key.
    Thread-safe like `Sealer`.
    """

    def __init__(self, *, repo_id: str, role: str, key_id: str, id_key: bytes, meta_key: bytes,
                 data_public: bytes, data_private: bytes | None = None, legacy_seal_key: bytes | None = None,
                 level: int = 3) -> None:
        self._repo_id = repo_id.encode()
        self._role = role
        self._key_id = key_id
        self._id_key = id_key
        self._meta = AESGCM(meta_key)
        self._data_public = data_public
        self._data_private = X25519PrivateKey.from_private_bytes(data_private) if data_private else None
        self._legacy = Sealer(MasterKeys(legacy_seal_key, id_key, 0), level) if legacy_seal_key else None
        self._level = level
        self._local = threading.local()
        self._session_lock = threading.Lock()
        self._session: tuple[bytes, AESGCM] | None = None
        self._readers: dict[bytes, AESGCM] = {}

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(level=self._level)
        return cctx

    def _pack(self, payload: bytes) -> bytes:
        packed = self._compressor().compress(payload)
        return bytes([_ZSTD]) + packed if len(packed) < len(payload) else bytes([_RAW]) + payload

    def chunk_id(self, data: bytes | memoryview) -> str:
        return blake3.blake3(data, key=self._id_key).hexdigest()

    def _session_key(self, shared: bytes, session_public: bytes) -> AESGCM:
        info = b"vaultflow-data-session:" + self._repo_id + b":" + self._data_public + session_public
        return AESGCM(HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(shared))

    def _writer_session(self) -> tuple[bytes, AESGCM]:
        with self._session_lock:
            if self._session is None:
                private = X25519PrivateKey.generate()
                public = private.public_key().public_bytes_raw()
                shared = private.exchange(X25519PublicKey.from_public_bytes(self._data_public))
                self._session = (public, self._session_key(shared, public))
            return self._session

    def seal(self, payload: bytes, aad: bytes, *, content_id: str | None = None) -> bytes:
        """Seal `payload`; `content_id` (its keyed BLAKE3 id, when the caller has it) saves a hash."""
        body = self._pack(payload)
        nonce = os.urandom(NONCE_SIZE)
        if not is_data_aad(aad):
            return bytes([SEAL_META]) + nonce + self._meta.encrypt(nonce, body, aad)
        public, session = self._writer_session()
        cid = bytes.fromhex(content_id) if content_id is not None else blake3.blake3(payload, key=self._id_key).digest()
        header = bytes([SEAL_DATA]) + public + cid
        return header + nonce + session.encrypt(nonce, body, header + aad)

    def _reader(self, session_public: bytes) -> AESGCM:
        if self._data_private is None:
            raise self.refusal("opening stored data")
        reader = self._readers.get(session_public)
        if reader is None:
            try:
                shared = self._data_private.exchange(X25519PublicKey.from_public_bytes(session_public))
            except ValueError:
                raise SealError("the object names an invalid session key") from None
            reader = self._readers[session_public] = self._session_key(shared, session_public)
        return reader

    def refusal(self, action: str) -> KeyRoleInsufficient:
        """The one error line for a role that lacks the restore secret."""
        return KeyRoleInsufficient(
            f"{action} needs a restore key; the key opened is a {self._role} key (key {self._key_id[:8]})",
            "use the passphrase of a restore key")

    def open(self, blob: bytes, aad: bytes, max_size: int = 64 * 2**20) -> bytes:
        if len(blob) < 1 + NONCE_SIZE + 16:
            raise SealError("not a sealed object of a known version")
        version = blob[0]
        if version == SEAL_META:
            try:
                body = self._meta.decrypt(blob[1 : 1 + NONCE_SIZE], blob[1 + NONCE_SIZE :], aad)
            except InvalidTag:
                raise SealError("authentication failed (altered or foreign object)") from None
            return _unpack(body, max_size)
        if version == SEAL_DATA:
            if len(blob) < _DATA_HEADER + NONCE_SIZE + 16:
                raise SealError("sealed data object is truncated")
            header = blob[:_DATA_HEADER]
            reader = self._reader(header[1 : 1 + KEY_SIZE])
            nonce = blob[_DATA_HEADER : _DATA_HEADER + NONCE_SIZE]
            try:
                body = reader.decrypt(nonce, blob[_DATA_HEADER + NONCE_SIZE :], header + aad)
            except InvalidTag:
                raise SealError("authentication failed (altered or foreign object)") from None
            return _unpack(body, max_size)
        if version == SEAL_VERSION:
            if self._legacy is not None:
                return self._legacy.open(blob, aad, max_size)
            if is_data_aad(aad):
                raise self.refusal("opening data stored before the repository's upgrade")
            raise SealError(f"sealed before the repository's upgrade with the version 1 key, which a {self._role} key "
                            "lacks (run vaultflow upgrade again to re-seal it)")
        raise SealError("not a sealed object of a known version")

    def open_written(self, blob: bytes, aad: bytes, max_size: int = 64 * 2**20) -> bytes:
        """Open an object this sealer wrote in its current writer session, which a backup key can do
        too (it holds that session's key, and had the plaintext): the read-back that checks what was
        stored (archive batches, R28). Any other data object needs the data private key, as `open`."""
        session = self._session
        if (session is not None and blob[:1] == bytes([SEAL_DATA]) and len(blob) >= _DATA_HEADER + NONCE_SIZE + 16
                and blob[1 : 1 + KEY_SIZE] == session[0]):
            header = blob[:_DATA_HEADER]
            nonce = blob[_DATA_HEADER : _DATA_HEADER + NONCE_SIZE]
            try:
                body = session[1].decrypt(nonce, blob[_DATA_HEADER + NONCE_SIZE :], header + aad)
            except InvalidTag:
                raise SealError("authentication failed (altered or foreign object)") from None
            return _unpack(body, max_size)
        return self.open(blob, aad, max_size)

    def holds(self, blob: bytes, aad: bytes, data: bytes, max_size: int = 64 * 2**20) -> bool:
        """Whether `blob` holds exactly `data`. A data object is compared by the keyed content id in
        its header, so a backup key can answer it without opening anything (it learns equality only)."""
        if blob[:1] == bytes([SEAL_DATA]) and len(blob) >= _DATA_HEADER:
            return blob[1 + KEY_SIZE : _DATA_HEADER] == blake3.blake3(data, key=self._id_key).digest()
        return self.open(blob, aad, max_size=max_size) == data


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))
