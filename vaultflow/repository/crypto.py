"""Keys and sealed objects.

A repository has random master keys (AES-256-GCM for sealing, a BLAKE3 key for chunk ids,
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
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SEAL_VERSION = 1
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

    def seal(self, payload: bytes, aad: bytes) -> bytes:
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


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))
