"""Key management (`vaultflow key ...`) and the upgrade of a version 1 repository to key roles.

Every change needs an admin key (only it signs key objects) and is recorded in the audit trail
as action "key". docs/design.md section 3, "Keys and key wrapping".
"""

from __future__ import annotations

from collections.abc import Callable

from vaultflow.audit import audited
from vaultflow.errors import InputError
from vaultflow.repository.crypto import SEAL_VERSION, KdfParams, MasterKeys
from vaultflow.repository.keys import KeyObject, KeyRole, RoleSecrets
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.repository import SNAPSHOT_PREFIX, Repository
from vaultflow.storage import ObjectStore


def add_key(repo: Repository, role: KeyRole, passphrase: str) -> KeyObject:
    """Add a key of `role` under a new passphrase; refused unless the key opened is an admin key."""
    repo.require("admin", "key add")
    with audited(repo, "key", detail=f"add a {role} key") as note:
        key = repo.add_key(role, passphrase)
        note.object, note.detail = key.id, f"added {role} key {key.id[:8]}"
    return key


def remove_key(repo: Repository, key_id: str) -> KeyObject:
    """Remove a key (a unique id prefix will do); refused for the last admin key and for a non-admin."""
    repo.require("admin", "key remove")
    with audited(repo, "key", object=key_id, detail=f"remove key {key_id}") as note:
        removed = repo.remove_key(key_id)
        note.object, note.detail = removed.id, f"removed {removed.role} key {removed.id[:8]}"
    return removed


def change_passphrase(repo: Repository, new_passphrase: str, key_id: str | None = None) -> tuple[KeyObject, str]:
    """Give key `key_id` (default: the key opened) a new passphrase: a new key object of the same
    role, then the old one removed. Returns the new key and the removed key's id."""
    repo.require("admin", "key passwd")
    ref = key_id or repo.key_id
    matches = [k for k in repo.key_objects() if k.id.startswith(ref.strip().lower())] if len(ref) >= 4 else []
    if len(matches) != 1:
        raise InputError(f"key id {ref!r} matches {'no' if not matches else 'more than one'} key of the repository "
                         f"at {repo.store.describe()}", "list the keys with: vaultflow key list")
    old = matches[0]
    with audited(repo, "key", object=old.id, detail=f"new passphrase for key {old.id[:8]}") as note:
        new = repo.add_key(old.role, new_passphrase)
        repo.remove_key(old.id)
        note.object, note.detail = new.id, f"{old.role} key {old.id[:8]} replaced by {new.id[:8]} (new passphrase)"
    return new, old.id


def _aad_for(key: str) -> bytes | None:
    """The AAD of a metadata object, from its key (section 3's layout); None for other objects."""
    if key.startswith(SNAPSHOT_PREFIX):
        return b"snapshot:" + key[len(SNAPSHOT_PREFIX):].encode()
    if key.startswith("audit/"):
        return b"audit:" + key[len("audit/"):].encode()
    if key.startswith("links/"):
        return b"link:" + key[len("links/"):].encode()
    if key.startswith("archives/"):  # a batch record: .../batch (earlier format) or .../batch.<seq>
        where, _, name = key[len("archives/"):].rpartition("/")
        if name == "batch":
            return b"archive-batch:" + where.encode()
        if name.startswith("batch.") and name[len("batch."):].isdigit():
            return f"archive-batch:{where}#{int(name[len('batch.'):])}".encode()
    return None


METADATA_PREFIXES = (SNAPSHOT_PREFIX, "audit/", "links/", "archives/")


def upgrade_repository(store: ObjectStore, passphrase: str, *,
                       progress: Callable[[int], None] | None = None) -> tuple[Repository, int]:
    """Turn the version 1 repository at `store` into version 2 in place; returns it (opened with
    its first admin key, the old passphrase) and how many metadata objects were re-sealed.

    The version 1 seal key becomes the restore bundle's legacy key (old chunks stay readable to
    restore and admin keys only); the id key and chunker seed are kept, so deduplication goes on.
    Under an exclusive lock: the admin key object, then the config as version 2, then every
    metadata object still sealed with the old key re-sealed with the metadata key (so a backup key
    can plan). Running it again on a version 2 repository re-seals what a crash left, and is
    otherwise a no-op. Refused on an object-locked repository: its config cannot be rewritten."""
    config = Repository.read_config(store)
    if config.get("object_lock") is not None:
        raise InputError(f"the repository at {store.describe()} is object-locked: its config cannot be rewritten",
                         "create a new repository (vaultflow init --object-lock) and copy the snapshots into it")
    repo = Repository.open(store, passphrase)
    if repo.version == 2:
        repo.require("admin", "upgrade")
        return repo, _reseal_metadata(repo, progress)
    assert isinstance(repo.keys, MasterKeys)
    with RepositoryLock(repo, "exclusive", "upgrade to format version 2"):
        secrets = RoleSecrets.generate(repo.keys.id_key, repo.keys.chunker_seed, repo.keys.seal_key)
        new_config = {k: v for k, v in config.items() if k not in ("kdf", "key")}
        new_config["upgraded_from"] = 1
        upgraded = Repository._write_v2(store, new_config, secrets, passphrase,
                                        KdfParams.from_json(dict(config["kdf"])))  # type: ignore[call-overload]
        count = _reseal_metadata(upgraded, progress)
    with audited(upgraded, "key", object=upgraded.key_id,
                 detail=f"upgraded to format version 2, {count} metadata object(s) re-sealed"):
        pass
    return upgraded, count


def _reseal_metadata(repo: Repository, progress: Callable[[int], None] | None) -> int:
    count = 0
    for prefix in METADATA_PREFIXES:
        for info in repo.store.list(prefix):
            aad = _aad_for(info.key)
            if aad is None:
                continue
            blob = repo.store.get(info.key)
            if blob[:1] != bytes([SEAL_VERSION]):
                continue
            repo.store.put(info.key, repo.sealer.seal(repo.sealer.open(blob, aad, max_size=2**31), aad))
            count += 1
            if progress is not None:
                progress(count)
    return count
