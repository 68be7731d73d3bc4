"""Storage permissions per key role, on a moto server of this module's own with IAM enforced: one
IAM user per role with exactly the policy of `vaultflow/storage/role_permissions.py` (which
docs/storage.md shows). The backup role's credentials back up and cannot delete; prune and
forget through them are refused by the store in one line naming the permission, nothing changed.

moto maps PutObjectRetention to s3:PutObject and GetObjectRetention to s3:GetObject, so the
retention permissions are not told apart here (docs/storage.md says so)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from tests.engines.cases import SqliteCase
from tests.object_servers import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer, S3Server, moto_server
from vaultflow.errors import AuthenticationFailed
from vaultflow.operations.backup import backup_database, plan_backup
from vaultflow.operations.forget import forget
from vaultflow.operations.keys import add_key
from vaultflow.operations.prune import prune
from vaultflow.operations.restore import restore_snapshot
from vaultflow.operations.retention import RetentionPolicy
from vaultflow.repository import Repository, SnapshotManifest, new_object_id
from vaultflow.repository.manifest import SnapshotKind
from vaultflow.repository.repository import ObjectLockSettings
from vaultflow.storage import ObjectStore, RetryPolicy
from vaultflow.storage.azure import AzureSettings
from vaultflow.storage.role_permissions import AZURE_SAS_PERMISSIONS, STORAGE_ROLES, StorageRole, s3_policy
from vaultflow.storage.s3 import S3Settings

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "repo"
ADMIN, BACKUP, RESTORE = "admin key passphrase", "backup key passphrase", "restore key passphrase"
FAST = RetryPolicy(attempts=2, base_delay=0.01)
LOCK_SECONDS = 4


@dataclass(frozen=True)
class IamS3:
    """A moto server enforcing IAM; `plain`, `locked` (with object lock) and `cli` buckets, and for
    each role (per bucket) an access key whose user has exactly that role's policy."""

    server: S3Server
    plain: str
    locked: str
    cli: str
    keys: dict[tuple[str, StorageRole], tuple[str, str]]

    def store(self, bucket: str, role: StorageRole) -> ObjectStore:
        key_id, secret = self.keys[(bucket, role)]
        return S3Settings(bucket, PREFIX, endpoint_url=self.server.endpoint, region="us-east-1",
                          access_key_id=key_id, secret_access_key=SecretStr(secret)).open(FAST)

    def env(self, bucket: str, role: StorageRole) -> dict[str, str]:
        key_id, secret = self.keys[(bucket, role)]
        return {"AWS_ENDPOINT_URL": self.server.endpoint, "AWS_ACCESS_KEY_ID": key_id,
                "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1"}

    def client(self, bucket: str, role: StorageRole) -> Any:
        key_id, secret = self.keys[(bucket, role)]
        return boto3.client("s3", endpoint_url=self.server.endpoint, aws_access_key_id=key_id,
                            aws_secret_access_key=secret, region_name="us-east-1")


@pytest.fixture(scope="module")
def s3_with_auth() -> Iterator[IamS3]:
    """Users, policies, keys and buckets are made while moto lets requests through unsigned; then
    INITIAL_NO_AUTH_ACTION_COUNT is set to 0 on the server (moto's reset-auth), so every later
    request is checked against its user's policy."""
    with moto_server() as server:
        iam = boto3.client("iam", endpoint_url=server.endpoint, aws_access_key_id="testing",
                           aws_secret_access_key="testing", region_name="us-east-1")
        plain, cli = server.new_bucket(), server.new_bucket()
        locked = f"vf-lock-{new_object_id()[:10]}"
        server.client().create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
        keys: dict[tuple[str, StorageRole], tuple[str, str]] = {}
        for bucket in (plain, locked, cli):
            for role in STORAGE_ROLES:
                user = f"vaultflow-{role}-{bucket}"
                iam.create_user(UserName=user)
                iam.put_user_policy(UserName=user, PolicyName=f"vaultflow-{role}",
                                    PolicyDocument=json.dumps(s3_policy(role, bucket, PREFIX)))
                access = iam.create_access_key(UserName=user)["AccessKey"]
                keys[(bucket, role)] = (access["AccessKeyId"], access["SecretAccessKey"])
        request = urllib.request.Request(f"{server.endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        yield IamS3(server, plain, locked, cli, keys)


def backup(repo: Repository, url: str, kind: SnapshotKind) -> SnapshotManifest:
    engine = SqliteCase().engine(url)
    sid = new_object_id()
    return backup_database(engine, repo, snapshot_id=sid, plan=plan_backup(repo, engine, kind, sid))


def objects(s3: IamS3, bucket: str) -> dict[str, int]:
    """Every object of the repository but audit records (a refused prune records its failure)."""
    return {o.key: o.size for o in s3.store(bucket, "admin").list("") if not o.key.startswith("audit/")}


def denied(call: Any) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    return str(refused.value.response["Error"]["Code"])


@pytest.mark.parametrize("bucket_kind", ["plain", "locked"])
def test_the_backup_role_backs_up_through_credentials_that_cannot_delete(
        s3_with_auth: IamS3, bucket_kind: str, tmp_path: Path) -> None:
    s3 = s3_with_auth
    bucket = s3.plain if bucket_kind == "plain" else s3.locked
    lock = ObjectLockSettings("governance", timedelta(seconds=LOCK_SECONDS)) if bucket_kind == "locked" else None
    admin = Repository.init(s3.store(bucket, "admin"), ADMIN, object_lock=lock)
    add_key(admin, "backup", BACKUP)
    add_key(admin, "restore", RESTORE)

    worker = Repository.open(s3.store(bucket, "backup"), BACKUP)
    sqlite = SqliteCase()
    url = sqlite.create_source(tmp_path)
    full = backup(worker, url, "full")
    sqlite.change_a_little(url, 40)
    inc = backup(worker, url, "incremental")
    assert inc.parent == full.id and inc.chain == full.chain
    newest = backup(worker, url, "full")  # so that retention may forget the first chain
    assert not [o for o in s3.store(bucket, "admin").list("locks/")], "the worker's lock objects were removed"

    # What a stolen worker's credentials cannot do, whatever vaultflow would do with them.
    raw = s3.client(bucket, "backup")
    chunk = f"{PREFIX}/chains/{full.chain}/chunks/{full.streams[0].chunks[0].id[:2]}/{full.streams[0].chunks[0].id}"
    assert denied(lambda: raw.delete_object(Bucket=bucket, Key=chunk)) == "AccessDenied"
    assert denied(lambda: raw.delete_object(Bucket=bucket, Key=f"{PREFIX}/snapshots/{full.id}")) == "AccessDenied"
    for key in ("config", "keys/" + "0" * 32, "exports/x.db", "links/x"):
        assert denied(lambda k=key: raw.put_object(Bucket=bucket, Key=f"{PREFIX}/{k}", Body=b"x")) == "AccessDenied"
    if lock is not None:
        version = raw.head_object(Bucket=bucket, Key=chunk)["VersionId"]
        assert denied(lambda: raw.delete_object(Bucket=bucket, Key=chunk, VersionId=version)) == "AccessDenied"
        time.sleep(LOCK_SECONDS + 1)  # the locks ran out: only the identity's policy stands in the way now

    before = objects(s3, bucket)
    # Even the admin passphrase does not help through the backup role's storage credentials.
    stolen = Repository.open(s3.store(bucket, "backup"), ADMIN)
    now = datetime.now(UTC) + timedelta(days=400)
    for refused in (lambda: prune(stolen, RetentionPolicy(max_age=timedelta(days=1)), now),
                    lambda: forget(stolen, [full.id], with_dependents=True)):
        with pytest.raises(AuthenticationFailed) as info:
            refused()
        line = info.value.line()
        permission = "s3:DeleteObjectVersion" if lock is not None else "s3:DeleteObject"
        assert "\n" not in line and f"the credentials lack {permission}" in line, line
        assert "AccessDenied" in line and "admin role's storage credentials" in line, line
        assert "snapshots/" in line and ADMIN not in line, line
        assert objects(s3, bucket) == before, "a refused prune or forget changed the repository"

    # The restore role's credentials restore; the admin's forget.
    target = sqlite.new_target(tmp_path)
    restore_snapshot(Repository.open(s3.store(bucket, "restore"), RESTORE), inc.id, sqlite.engine(target))
    assert sqlite.engine(target).table_stats() == sqlite.engine(url).table_stats()
    done = forget(Repository.open(s3.store(bucket, "admin"), ADMIN), [full.id], with_dependents=True)
    assert {m.id for m in done.forget} == {full.id, inc.id}
    assert sorted(k for k in objects(s3, bucket) if k.startswith("snapshots/")) == [f"snapshots/{newest.id}"]
    assert not [k for k in objects(s3, bucket) if k.startswith(f"chains/{full.chain}/")]


def test_forget_and_prune_through_the_cli_with_the_backup_role_s_credentials_end_in_one_line(
        s3_with_auth: IamS3, prefect_api: str, tmp_path: Path) -> None:
    from tests.conftest import _run_cli_in_process

    s3, bucket = s3_with_auth, s3_with_auth.cli
    admin = Repository.init(s3.store(bucket, "admin"), ADMIN)
    add_key(admin, "backup", BACKUP)
    worker = Repository.open(s3.store(bucket, "backup"), BACKUP)
    url = SqliteCase().create_source(tmp_path)
    old, newest = backup(worker, url, "full"), backup(worker, url, "full")
    before = objects(s3, bucket)
    env = {**s3.env(bucket, "backup"), "VAULTFLOW_PASSPHRASE": ADMIN, "PREFECT_API_URL": prefect_api}
    location = f"s3://{bucket}/{PREFIX}"
    for args in (["forget", old.id, "--repo", location], ["prune", "--keep-last", "1", "--repo", location]):
        refused = _run_cli_in_process(args, env, None)
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 1 and len(lines) == 1, (args, refused.stdout, refused.stderr)
        assert "the credentials lack s3:DeleteObject" in lines[0] and "admin role's storage credentials" in lines[0]
        assert ADMIN not in refused.stdout + refused.stderr and env["AWS_SECRET_ACCESS_KEY"] not in lines[0]
        assert objects(s3, bucket) == before, args
    as_admin = {**s3.env(bucket, "admin"), "VAULTFLOW_PASSPHRASE": ADMIN, "PREFECT_API_URL": prefect_api}
    done = _run_cli_in_process(["forget", old.id, "--repo", location], as_admin, None)
    assert done.returncode == 0, done.stderr
    assert sorted(k for k in objects(s3, bucket) if k.startswith("snapshots/")) == [f"snapshots/{newest.id}"]


def test_the_restore_role_writes_exports_and_links_and_neither_deletes_nor_writes_keys(s3_with_auth: IamS3) -> None:
    s3, bucket = s3_with_auth, s3_with_auth.plain
    reader = s3.client(bucket, "restore")
    for key in ("exports/probe.db", "links/probe", "audit/probe", "locks/probe"):
        reader.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=b"x")
    assert denied(lambda: reader.delete_object(Bucket=bucket, Key=f"{PREFIX}/exports/probe.db")) == "AccessDenied"
    for key in ("config", "keys/probe"):
        assert denied(lambda k=key: reader.put_object(Bucket=bucket, Key=f"{PREFIX}/{k}", Body=b"x")) == "AccessDenied"
    reader.delete_object(Bucket=bucket, Key=f"{PREFIX}/locks/probe")
    admin = s3.client(bucket, "admin")
    for key in ("exports/probe.db", "links/probe", "audit/probe"):
        admin.delete_object(Bucket=bucket, Key=f"{PREFIX}/{key}")
    assert denied(lambda: admin.list_objects_v2(Bucket=s3.locked)) == "AccessDenied"  # only its own bucket


def test_each_role_s_azure_sas_does_its_role_s_commands_on_azurite(azurite: AzuriteServer, tmp_path: Path) -> None:
    """Azurite checks SAS permissions (not versioning): the backup SAS backs up, removing its own
    lock objects, and cannot do what its letters leave out; the admin SAS forgets."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    container = azurite.new_container()

    def store(role: StorageRole, permissions: str | None = None) -> ObjectStore:
        allowed = ContainerSasPermissions.from_string(permissions or AZURE_SAS_PERMISSIONS[role])
        sas = generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY, permission=allowed,
                                     expiry=datetime.now(UTC) + timedelta(hours=1))
        return AzureSettings(container, PREFIX, account_url=azurite.account_url, sas_token=SecretStr(sas)).open(FAST)

    admin = Repository.init(store("admin"), ADMIN)
    add_key(admin, "backup", BACKUP)
    add_key(admin, "restore", RESTORE)
    sqlite = SqliteCase()
    url = sqlite.create_source(tmp_path)
    worker = Repository.open(store("backup"), BACKUP)
    full = backup(worker, url, "full")
    sqlite.change_a_little(url, 40)
    inc = backup(worker, url, "incremental")
    assert not list(store("admin").list("locks/"))
    without_delete = store("backup", AZURE_SAS_PERMISSIONS["backup"].replace("d", ""))
    without_delete.put("locks/probe", b"x")
    with pytest.raises(AuthenticationFailed) as info:  # why the backup SAS keeps d: its own lock objects
        without_delete.delete("locks/probe")
    line = info.value.line()
    assert "\n" not in line and "the SAS lacks permission 'd'" in line and "sig=" not in line, line
    target = sqlite.new_target(tmp_path)
    restore_snapshot(Repository.open(store("restore"), RESTORE), inc.id, sqlite.engine(target))
    assert sqlite.engine(target).table_stats() == sqlite.engine(url).table_stats()
    done = forget(Repository.open(store("admin"), ADMIN), [full.id], with_dependents=True)
    assert {m.id for m in done.forget} == {full.id, inc.id}


def _documented_policies() -> dict[str, dict[str, object]]:
    """The JSON blocks of docs/storage.md's per-role section, by the role named in bold before each."""
    text = (ROOT / "docs" / "storage.md").read_text()
    section = text.split("## Storage permissions per role", 1)[1].split("\n## ", 1)[0]
    found = {}
    for role, body in re.findall(r"\*\*(backup|restore|admin)\*\* \(.*?```json\n(.*?)\n```", section, re.S):
        found[role] = json.loads(body)
    return found


def test_storage_md_shows_exactly_the_policies_the_iam_test_uses() -> None:
    assert _documented_policies() == {role: s3_policy(role, "backups", "pg-prod") for role in STORAGE_ROLES}
    text = (ROOT / "docs" / "storage.md").read_text()
    section = text.split("## Storage permissions per role", 1)[1].split("\n## ", 1)[0]
    for role, permissions in AZURE_SAS_PERMISSIONS.items():
        assert re.search(rf"\|\s*{role}\s*\|\s*`{permissions}`\s*\|", section), (role, permissions)


def test_key_storage_policy_prints_the_tested_policy_without_a_passphrase(tmp_path: Path) -> None:
    from tests.conftest import _run_cli_in_process

    def run(*args: str) -> Any:
        return _run_cli_in_process(["key", "storage-policy", *args], {"VAULTFLOW_PASSPHRASE": ""}, None)

    for role in STORAGE_ROLES:
        printed = run("--role", role, "--repo", "s3://backups/pg-prod")
        assert printed.returncode == 0, printed.stderr
        assert json.loads(printed.stdout) == s3_policy(role, "backups", "pg-prod")
    azure = run("--role", "backup", "--repo", "az://backups/pg-prod")
    assert azure.returncode == 0 and f"permissions {AZURE_SAS_PERMISSIONS['backup']} " in azure.stdout
    for args, words in ((("--role", "backup", "--repo", str(tmp_path)), "is not an S3 or Azure repository"),
                        (("--role", "owner", "--repo", "s3://backups/pg-prod"), "unknown key role")):
        refused = run(*args)
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 2 and len(lines) == 1 and words in lines[0], refused.stderr
