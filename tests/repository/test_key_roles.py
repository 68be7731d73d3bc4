"""Key roles (format version 2): what a backup, restore and admin key can and cannot do, enforced
by the cryptography; version 1 repositories and their upgrade."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tasks.retry_policy import is_transient
from tests.engines.cases import SqliteCase
from tests.storage.test_conformance import BACKENDS
from vaultflow.audit import records
from vaultflow.errors import InputError, KeyRoleInsufficient, WrongPassphrase
from vaultflow.operations.backup import backup_database, plan_backup
from vaultflow.operations.keys import add_key, change_passphrase, remove_key, upgrade_repository
from vaultflow.operations.restore import export_snapshot, restore_snapshot
from vaultflow.repository import Repository, SnapshotManifest, new_object_id
from vaultflow.repository.crypto import SEAL_DATA, SEAL_META, SEAL_VERSION, RoleSealer, unb64
from vaultflow.repository.keys import KeyObject
from vaultflow.repository.manifest import SnapshotKind
from vaultflow.repository.repository import key_objects
from vaultflow.storage import LocalStore, ObjectStore

ADMIN, BACKUP, RESTORE = "admin passphrase", "backup passphrase", "restore passphrase"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    yield BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def sqlite() -> SqliteCase:
    return SqliteCase()


def backup(repo: Repository, url: str, kind: SnapshotKind) -> SnapshotManifest:
    engine = SqliteCase().engine(url)
    sid = new_object_id()
    return backup_database(engine, repo, snapshot_id=sid, plan=plan_backup(repo, engine, kind, sid))


def reopen(store: ObjectStore, passphrase: str) -> Repository:
    return Repository.open(store, passphrase)


def test_backup_key_backs_up_every_kind_and_cannot_restore(store: ObjectStore, sqlite: SqliteCase,
                                                           tmp_path: Path) -> None:
    admin = Repository.init(store, ADMIN)
    add_key(admin, "backup", BACKUP)
    add_key(admin, "restore", RESTORE)
    worker = reopen(store, BACKUP)
    assert worker.role == "backup" and not worker.can_read_data
    url = sqlite.create_source(tmp_path)
    full = backup(worker, url, "full")
    sqlite.change_a_little(url, 40)
    inc = backup(worker, url, "incremental")
    sqlite.change_a_little(url, 40)
    diff = backup(worker, url, "differential")
    assert inc.parent == full.id and diff.parent == full.id and diff.kind == "differential"
    assert inc.chain == full.chain == diff.chain

    target = sqlite.new_target(tmp_path)
    with pytest.raises(KeyRoleInsufficient) as refused:
        restore_snapshot(worker, diff.id, sqlite.engine(target))
    assert refused.value.line().count("\n") == 0 and "needs a restore key" in refused.value.line()
    assert "backup key" in refused.value.line() and not Path(target[len("sqlite:///"):]).exists()
    with pytest.raises(KeyRoleInsufficient):
        export_snapshot(worker, diff.id, tmp_path / "out.db")
    assert not (tmp_path / "out.db").exists()
    assert not is_transient(refused.value)  # a permanent error: tasks do not retry it

    restore_snapshot(reopen(store, RESTORE), diff.id, sqlite.engine(target))
    assert sqlite.engine(target).table_stats() == sqlite.engine(url).table_stats()
    roles = {(r.action, r.role) for r in records(admin)}
    assert ("backup", "backup") in roles and ("restore", "restore") in roles and ("key", "admin") in roles


def test_backup_key_material_cannot_open_stored_chunks(store: ObjectStore, sqlite: SqliteCase,
                                                       tmp_path: Path) -> None:
    """Load the backup key's own secrets and try every key it holds on a stored chunk."""
    admin = Repository.init(store, ADMIN)
    backup_key = add_key(admin, "backup", BACKUP)
    worker = reopen(store, BACKUP)
    m = backup(worker, sqlite.create_source(tmp_path), "full")
    secrets = backup_key.unwrap(BACKUP, admin.config)
    assert secrets.data_private is None and secrets.admin_signing is None and secrets.legacy_seal_key is None
    ref = m.streams[0].chunks[0]
    blob = store.get(f"chains/{m.chain}/chunks/{ref.id[:2]}/{ref.id}")
    assert blob[0] == SEAL_DATA
    aad = b"chunk:" + ref.id.encode()
    for key in (secrets.meta_key, secrets.id_key):
        for start in (1, 1 + 64):  # as a metadata object, and past the data header
            with pytest.raises(InvalidTag):
                AESGCM(key).decrypt(blob[start:start + 12], blob[start + 12:], aad)
    sealer = RoleSealer(repo_id=admin.id, role="backup", key_id=backup_key.id, id_key=secrets.id_key,
                        meta_key=secrets.meta_key, data_public=unb64(str(admin.config["data_public_key"])))
    with pytest.raises(KeyRoleInsufficient):
        sealer.open(blob, aad)
    with pytest.raises(KeyRoleInsufficient):
        worker.load_chunk(m.id, m.chain, ref)
    # What the backup key does open: the planning metadata.
    assert store.get(f"snapshots/{m.id}")[0] == SEAL_META and worker.load_manifest(m.id) == m
    assert len(admin.load_chunk(m.id, m.chain, ref)) == ref.size


def test_chunk_ids_deduplicate_across_keys_and_sessions(tmp_path: Path) -> None:
    admin = Repository.init(LocalStore(tmp_path / "r"), ADMIN)
    add_key(admin, "backup", BACKUP)
    worker = reopen(admin.store, BACKUP)
    data = b"same rows again\n" * 5000
    first = worker.put_chunk("c", data)
    assert admin.sealer.chunk_id(data) == first.id == reopen(admin.store, BACKUP).sealer.chunk_id(data)
    assert admin.load_chunk("s", "c", first) == data


def test_backup_key_checks_wal_and_binlog_idempotence_without_opening(tmp_path: Path) -> None:
    from vaultflow.engines.mysql.binlog import push_binlog
    from vaultflow.errors import IntegrityError

    admin = Repository.init(LocalStore(tmp_path / "r"), ADMIN)
    add_key(admin, "backup", BACKUP)
    worker = reopen(admin.store, BACKUP)
    binlog = tmp_path / "mariadb-bin.000001"
    binlog.write_bytes(b"\xfebin" + b"event" * 1000)
    assert push_binlog(worker, "db:3306", binlog) is True
    assert push_binlog(worker, "db:3306", binlog) is False  # same bytes: compared by the keyed id
    binlog.write_bytes(b"\xfebin" + b"other" * 1000)
    with pytest.raises(IntegrityError):
        push_binlog(worker, "db:3306", binlog)
    blob = admin.store.get("binlog/db-3306/mariadb-bin.000001")
    with pytest.raises(KeyRoleInsufficient):
        worker.sealer.open(blob, b"binlog:binlog/db-3306/mariadb-bin.000001")


def test_key_add_remove_passwd(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "r")
    admin = Repository.init(store, ADMIN)
    backup_key = add_key(admin, "backup", BACKUP)
    worker = reopen(store, BACKUP)
    before = sorted(o.key for o in store.list("keys/"))
    for refused in (lambda: add_key(worker, "admin", "mine"), lambda: remove_key(worker, admin.key_id),
                    lambda: change_passphrase(worker, "new")):
        with pytest.raises(KeyRoleInsufficient, match="needs an admin key; the key opened is a backup key"):
            refused()
    with pytest.raises(InputError, match="last admin key"):
        remove_key(admin, admin.key_id)
    assert sorted(o.key for o in store.list("keys/")) == before  # nothing changed

    new, old = change_passphrase(admin, "new admin passphrase")
    assert old == admin.key_id and new.role == "admin"
    with pytest.raises(WrongPassphrase, match="removed key"):
        reopen(store, ADMIN)
    again = reopen(store, "new admin passphrase")
    assert again.role == "admin" and again.key_id == new.id
    remove_key(again, backup_key.id[:8])
    with pytest.raises(WrongPassphrase):
        reopen(store, BACKUP)
    assert {r.detail.split()[0] for r in records(again) if r.action == "key"} >= {"added", "removed", "admin"}


def test_a_key_object_not_signed_by_the_admin_key_is_ignored(tmp_path: Path) -> None:
    """A backup holder who writes its own key object (its secrets under a passphrase of its own,
    labelled admin) gets nothing: open checks the admin signature first."""
    store = LocalStore(tmp_path / "r")
    admin = Repository.init(store, ADMIN)
    add_key(admin, "backup", BACKUP)
    stored = [k for k in key_objects(store) if k.role == "backup"][0]
    forged = KeyObject(stored.id[::-1], "admin", stored.created, stored.kdf, stored.wrapped, stored.signature)
    store.put(forged.key, forged.to_bytes())
    with pytest.raises(WrongPassphrase, match="not signed"):
        reopen(store, "whatever")
    assert reopen(store, BACKUP).role == "backup"


def test_altered_config_fails_every_key(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "r")
    Repository.init(store, ADMIN)
    config = json.loads(store.get("config"))
    config["data_public_key"] = config["admin_public_key"]  # a public key of the attacker's choosing
    store.put("config", json.dumps(config).encode())
    with pytest.raises(WrongPassphrase):
        reopen(store, ADMIN)


def test_version_1_repository_restores_and_upgrades(sqlite: SqliteCase, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "r")
    old = Repository.init(store, ADMIN, format_version=1)
    assert json.loads(store.get("config"))["version"] == 1 and "key" in json.loads(store.get("config"))
    url = sqlite.create_source(tmp_path)
    full = backup(old, url, "full")
    assert store.get(f"snapshots/{full.id}")[0] == SEAL_VERSION
    v1 = reopen(store, ADMIN)  # version 1 is read (and written) as before, as admin
    assert v1.version == 1 and v1.role == "admin"
    with pytest.raises(Exception, match="format version 1"):
        add_key(v1, "backup", BACKUP)
    target = sqlite.new_target(tmp_path)
    restore_snapshot(v1, full.id, sqlite.engine(target))

    upgraded, resealed = upgrade_repository(store, ADMIN)
    assert upgraded.version == 2 and upgraded.role == "admin" and resealed >= 2  # manifest and audit records
    assert json.loads(store.get("config"))["version"] == 2 and "key" not in json.loads(store.get("config"))
    assert upgrade_repository(store, ADMIN)[1] == 0  # again: nothing left to re-seal
    add_key(upgraded, "backup", BACKUP)
    worker = reopen(store, BACKUP)
    assert worker.load_manifest(full.id).id == full.id  # re-sealed: the backup key plans with it
    sqlite.change_a_little(url, 30)
    inc = backup(worker, url, "incremental")
    assert inc.parent == full.id and inc.chain == full.chain  # the id key and seed are kept: same chain
    with pytest.raises(KeyRoleInsufficient):  # an old chunk: sealed with the legacy key
        worker.load_chunk(full.id, full.chain, full.streams[0].chunks[0])
    for sid in (full.id, inc.id):
        restore_snapshot(reopen(store, ADMIN), sid, sqlite.engine(sqlite.new_target(tmp_path)))


def test_upgrade_refuses_an_object_locked_version_1_repository(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "r")
    Repository.init(store, ADMIN, format_version=1)
    config = json.loads(store.get("config"))
    config["object_lock"] = {"mode": "governance", "period_seconds": 86400}
    store.put("config", json.dumps(config).encode())
    before = sorted((o.key, o.size) for o in store.list(""))
    with pytest.raises(InputError, match="object-locked: its config cannot be rewritten"):
        upgrade_repository(store, ADMIN)
    assert sorted((o.key, o.size) for o in store.list("")) == before


def test_a_key_id_hint_opens_with_one_scrypt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without VAULTFLOW_KEY_ID, open derives one scrypt key per key object it tries; with it, one."""
    from vaultflow.repository.crypto import KdfParams

    store = LocalStore(tmp_path / "r")
    admin = Repository.init(store, ADMIN)
    passphrases = {admin.key_id: ADMIN} | {add_key(admin, "backup", f"worker {n}").id: f"worker {n}"
                                           for n in range(4)}
    last = key_objects(store)[-1]  # tried last without a hint
    passphrase = passphrases[last.id]
    derived: list[int] = []
    real_derive = KdfParams.derive

    def counting_derive(self: KdfParams, secret: str) -> bytes:
        derived.append(1)
        return real_derive(self, secret)

    monkeypatch.setattr(KdfParams, "derive", counting_derive)
    monkeypatch.delenv("VAULTFLOW_KEY_ID", raising=False)
    assert reopen(store, passphrase).key_id == last.id
    assert len(derived) == 5
    derived.clear()
    monkeypatch.setenv("VAULTFLOW_KEY_ID", last.id[:8].upper())
    opened = reopen(store, passphrase)
    assert opened.key_id == last.id and opened.role == last.role and len(derived) == 1
    derived.clear()
    with pytest.raises(WrongPassphrase, match=f"key {last.id[:8]} .* does not open with this passphrase") as wrong:
        reopen(store, "someone else's passphrase")
    assert len(derived) == 1 and "\n" not in wrong.value.line()
    absent = next(f"{n:04x}" for n in range(2**16) if not any(k.id.startswith(f"{n:04x}") for k in key_objects(store)))
    for bad, message in ((absent, "names no key"), ("not-hex", "is not a key id"), ("ab", "is not a key id")):
        monkeypatch.setenv("VAULTFLOW_KEY_ID", bad)
        with pytest.raises(InputError, match=message):
            reopen(store, passphrase)


def test_a_backup_key_archives_rows_reading_back_only_what_it_wrote(tmp_path: Path) -> None:
    """Archival reads each batch back before deleting its rows (R28): a backup key opens what its own
    writer session sealed, and nothing else; a later open of the same key cannot read the batch."""
    from tests.archive.cases import SqliteCase as ArchiveSqlite
    from tests.archive.cases import sample_rows
    from tests.archive.test_roundtrip import spec
    from vaultflow.archive import archive_table, read_batch
    from vaultflow.archive.batches import get_rows

    case = ArchiveSqlite(tmp_path)
    case.create_table()
    case.insert(sample_rows(100, 10))
    admin = Repository.init(LocalStore(tmp_path / "r"), ADMIN)
    add_key(admin, "backup", BACKUP)
    report = archive_table(reopen(admin.store, BACKUP), case.source, spec())
    assert report.rows == 100 and len(case.rows()) == 10
    later = reopen(admin.store, BACKUP)
    for written_here in (False, True):  # another session's batch: not even as a read-back
        with pytest.raises(KeyRoleInsufficient):
            get_rows(later, report.batches[0].policy, report.batches[0].id, written_here=written_here)
    assert sum(read_batch(admin, rec).num_rows for rec in report.batches) == 100
