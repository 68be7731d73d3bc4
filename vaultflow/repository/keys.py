"""Repository keys of format version 2: one object per key, each a passphrase for one role.

    keys/<key-id>    plaintext JSON KeyObject: role, created, scrypt parameters, the role's
                     secrets wrapped by the passphrase's key, and an Ed25519 signature by the
                     repository's admin signing key (its public half is in the config)

Roles nest: a backup key holds the chunk id key, the chunker seed, the metadata key and the
data public key (in the config); a restore key adds the X25519 data private key (and, on an
upgraded repository, the version 1 seal key); an admin key adds the Ed25519 admin signing key,
without which no key object can be added. docs/design.md section 3.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vaultflow.errors import InputError
from vaultflow.repository.crypto import NONCE_SIZE, KdfParams, SealError, b64, unb64, x25519_public

KeyRole = Literal["backup", "restore", "admin"]
ROLES: tuple[KeyRole, ...] = ("backup", "restore", "admin")
KEY_PREFIX = "keys/"
KEY_OBJECT_FORMAT = "vaultflow-key"


def role_at_least(role: KeyRole, needed: KeyRole) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def parse_role(text: str) -> KeyRole:
    if text not in ROLES:
        raise InputError(f"unknown key role {text!r}", "choose backup, restore or admin")
    return text


@dataclass(frozen=True)
class RoleSecrets:
    """The secrets one key role holds (None where the role lacks them)."""

    role: KeyRole
    id_key: bytes
    chunker_seed: int
    meta_key: bytes
    data_private: bytes | None = None
    admin_signing: bytes | None = None
    legacy_seal_key: bytes | None = None

    @classmethod
    def generate(cls, id_key: bytes | None = None, chunker_seed: int | None = None,
                 legacy_seal_key: bytes | None = None) -> RoleSecrets:
        """A new admin bundle (id key and chunker seed kept when given: an upgrade keeps dedup)."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        seed = chunker_seed if chunker_seed is not None else int.from_bytes(os.urandom(8), "big") >> 1
        return cls("admin", id_key or os.urandom(32), seed, os.urandom(32),
                   X25519PrivateKey.generate().private_bytes_raw(),
                   Ed25519PrivateKey.generate().private_bytes_raw(), legacy_seal_key)

    def narrowed(self, role: KeyRole) -> RoleSecrets:
        """The bundle of `role`, which must not exceed this one's."""
        if not role_at_least(self.role, role):
            raise ValueError(f"a {self.role} bundle cannot make a {role} bundle")
        if role == "backup":
            return replace(self, role=role, data_private=None, admin_signing=None, legacy_seal_key=None)
        if role == "restore":
            return replace(self, role=role, admin_signing=None)
        return self

    @property
    def data_public(self) -> bytes | None:
        return x25519_public(self.data_private) if self.data_private else None

    @property
    def admin_public(self) -> bytes | None:
        if self.admin_signing is None:
            return None
        return Ed25519PrivateKey.from_private_bytes(self.admin_signing).public_key().public_bytes_raw()

    def to_bytes(self) -> bytes:
        fields: dict[str, object] = {"role": self.role, "id_key": b64(self.id_key),
                                     "chunker_seed": self.chunker_seed, "meta_key": b64(self.meta_key)}
        for name in ("data_private", "admin_signing", "legacy_seal_key"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = b64(value)
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RoleSecrets:
        data = json.loads(raw)

        def opt(name: str) -> bytes | None:
            return unb64(data[name]) if name in data else None

        return cls(parse_role(str(data["role"])), unb64(data["id_key"]), int(data["chunker_seed"]),
                   unb64(data["meta_key"]), opt("data_private"), opt("admin_signing"), opt("legacy_seal_key"))


def config_binding(config: dict[str, object]) -> dict[str, object]:
    """The config fields a key's wrapping authenticates: a config altered in any of them (its
    chunker, lock, or public keys) fails every key check."""
    bound = {k: config.get(k) for k in ("format", "version", "id", "chunker", "compression_level")}
    for optional in ("object_lock", "data_public_key", "admin_public_key"):
        if optional in config:
            bound[optional] = config[optional]
    return bound


@dataclass(frozen=True)
class KeyObject:
    """One stored key: `wrapped` is nonce || AES-256-GCM(scrypt(passphrase), secrets, aad)."""

    id: str
    role: KeyRole
    created: str
    kdf: KdfParams
    wrapped: bytes
    signature: bytes = b""

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.id

    def _signed_part(self, repo_id: str) -> bytes:
        body = {"format": KEY_OBJECT_FORMAT, "id": self.id, "role": self.role, "created": self.created,
                "kdf": self.kdf.to_json(), "secrets": b64(self.wrapped)}
        return b"vaultflow-key-object:" + repo_id.encode() + b":" + json.dumps(body, sort_keys=True).encode()

    def to_bytes(self) -> bytes:
        return json.dumps({"format": KEY_OBJECT_FORMAT, "version": 1, "id": self.id, "role": self.role,
                           "created": self.created, "kdf": self.kdf.to_json(), "secrets": b64(self.wrapped),
                           "signature": b64(self.signature)}, indent=2).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> KeyObject:
        data = json.loads(raw)
        if data.get("format") != KEY_OBJECT_FORMAT or data.get("version") != 1:
            raise SealError("not a vaultflow key object of version 1")
        return cls(str(data["id"]), parse_role(str(data["role"])), str(data["created"]),
                   KdfParams.from_json(dict(data["kdf"])), unb64(str(data["secrets"])),
                   unb64(str(data["signature"])))

    def signed_by(self, admin_public: bytes, repo_id: str) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(admin_public).verify(self.signature, self._signed_part(repo_id))
        except (InvalidSignature, ValueError):
            return False
        return True

    def unwrap(self, passphrase: str, config: dict[str, object]) -> RoleSecrets:
        """The secrets, checked against the config's public keys; SealError on a wrong passphrase."""
        kek = self.kdf.derive(passphrase)
        try:
            raw = AESGCM(kek).decrypt(self.wrapped[:NONCE_SIZE], self.wrapped[NONCE_SIZE:],
                                      _wrap_aad(config, self.id, self.role))
        except InvalidTag:
            raise SealError("key check failed") from None
        secrets = RoleSecrets.from_bytes(raw)
        if secrets.role != self.role:
            raise SealError(f"key {self.id} holds {secrets.role} secrets but is labelled {self.role}")
        if secrets.data_private is not None and b64(x25519_public(secrets.data_private)) != config["data_public_key"]:
            raise SealError(f"key {self.id} holds a data key that is not this repository's")
        if secrets.admin_public is not None and b64(secrets.admin_public) != config["admin_public_key"]:
            raise SealError(f"key {self.id} holds a signing key that is not this repository's")
        return secrets


def _wrap_aad(config: dict[str, object], key_id: str, role: KeyRole) -> bytes:
    bound = {**config_binding(config), "key_id": key_id, "role": role}
    return b"vaultflow-role-key:" + json.dumps(bound, sort_keys=True).encode()


def new_key_object(config: dict[str, object], signer: RoleSecrets, role: KeyRole, passphrase: str,
                   kdf: KdfParams | None = None) -> KeyObject:
    """A key object for `role` under `passphrase`, signed with `signer`'s admin signing key."""
    if signer.admin_signing is None:
        raise ValueError("only an admin bundle signs key objects")
    if not passphrase:
        raise InputError("an empty passphrase is not allowed", "set VAULTFLOW_NEW_PASSPHRASE")
    secrets = signer.narrowed(role)
    key_id = os.urandom(16).hex()
    kdf = kdf or KdfParams(salt=os.urandom(16))
    nonce = os.urandom(NONCE_SIZE)
    wrapped = nonce + AESGCM(kdf.derive(passphrase)).encrypt(nonce, secrets.to_bytes(),
                                                             _wrap_aad(config, key_id, role))
    unsigned = KeyObject(key_id, role, datetime.now(UTC).isoformat(timespec="seconds"), kdf, wrapped)
    signing = Ed25519PrivateKey.from_private_bytes(signer.admin_signing)
    signature = signing.sign(unsigned._signed_part(str(config["id"])))
    return replace(unsigned, signature=signature)
