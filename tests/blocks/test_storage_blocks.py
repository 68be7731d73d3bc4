"""BackupRepository blocks on prefect-aws and prefect-azure storage blocks, against moto and Azurite."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect_aws import AwsCredentials, MinIOCredentials, S3Bucket
from prefect_azure import AzureBlobStorageCredentials
from prefect_azure.blob_storage import AzureBlobStorageContainer
from pydantic import SecretStr, ValidationError

from blocks import BackupRepository
from blocks.resolve import resolve_repository
from tests.conftest import PASSPHRASE
from tests.engines.cases import PostgresCase
from tests.object_servers import AzuriteServer, S3Server
from vaultflow.errors import RepositoryNotInitialised
from vaultflow.storage.azure import AzureSettings
from vaultflow.storage.s3 import S3Settings

Cli = Callable[..., subprocess.CompletedProcess[str]]


def aws_bucket(server: S3Server, bucket: str) -> S3Bucket:
    creds = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key=SecretStr("testing"),
                           region_name="us-east-1", aws_client_parameters={"endpoint_url": server.endpoint})
    return S3Bucket(bucket_name=bucket, credentials=creds, bucket_folder="backups")


def azure_container(server: AzuriteServer, container: str) -> AzureBlobStorageContainer:
    creds = AzureBlobStorageCredentials(connection_string=SecretStr(server.connection_string))
    return AzureBlobStorageContainer(container_name=container, credentials=creds, base_folder="backups")


def test_storage_blocks_become_core_settings_without_connecting() -> None:
    minio = S3Bucket(bucket_name="b1", bucket_folder="x/y", credentials=MinIOCredentials(
        minio_root_user="admin", minio_root_password=SecretStr("pw"),
        aws_client_parameters={"endpoint_url": "http://203.0.113.1:9000"}))
    settings = BackupRepository(storage=minio, passphrase=SecretStr("p"), concurrency=3).storage_settings()
    assert isinstance(settings, S3Settings)
    assert (settings.bucket, settings.prefix, settings.endpoint_url, settings.access_key_id, settings.concurrency) \
        == ("b1", "x/y", "http://203.0.113.1:9000", "admin", 3)
    assert settings.location() == "s3://b1/x/y" and "pw" not in repr(settings)

    az = AzureBlobStorageContainer(container_name="backups", credentials=AzureBlobStorageCredentials(
        connection_string=SecretStr("BlobEndpoint=http://203.0.113.1/a;SharedAccessSignature=se=2030-01-01&sig=x")))
    azs = BackupRepository(storage=az, passphrase=SecretStr("p")).storage_settings()
    assert isinstance(azs, AzureSettings) and azs.location() == "az://backups"
    assert azs.sas_expires_at() is not None and azs.sas_expires_at().year == 2030  # type: ignore[union-attr]

    assert BackupRepository(location="/srv/r", passphrase=SecretStr("p")).storage_settings() is None
    with pytest.raises(ValidationError, match="exactly one of"):
        BackupRepository(location="/srv/r", storage=minio, passphrase=SecretStr("p"))
    with pytest.raises(ValidationError, match="exactly one of"):
        BackupRepository(passphrase=SecretStr("p"))


def test_storage_secrets_stay_masked(prefect_api: str, s3_server: S3Server) -> None:
    from prefect.client.orchestration import get_client

    name = f"s3-masked-{uuid.uuid4().hex[:6]}"
    BackupRepository(storage=aws_bucket(s3_server, "masked"), passphrase=SecretStr("s3cr3t-repo")).save(name)

    async def read() -> dict[str, object]:
        async with get_client() as client:
            doc = await client.read_block_document_by_name(name=name, block_type_slug="vaultflow-backup-repository",
                                                           include_secrets=False)
            return dict(doc.data)

    data = repr(asyncio.run(read()))
    assert "s3cr3t" not in data and "'aws_secret_access_key': '********'" in data
    ref = resolve_repository(name)
    assert isinstance(ref.storage, S3Settings) and ref.location == "s3://masked/backups"
    assert ref.storage.secret_access_key is not None and ref.storage.secret_access_key.get_secret_value() == "testing"


@pytest.fixture(params=["s3", "azure"])
def storage_block(request: pytest.FixtureRequest, prefect_api: str) -> str:
    """A saved BackupRepository block on an empty bucket or container; its name."""
    name = f"repo-{request.param}-{uuid.uuid4().hex[:6]}"
    if request.param == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        storage: S3Bucket | AzureBlobStorageContainer = aws_bucket(s3, s3.new_bucket())
    else:
        az: AzuriteServer = request.getfixturevalue("azurite")
        storage = azure_container(az, az.new_container())
    BackupRepository(storage=storage, passphrase=SecretStr(PASSPHRASE), concurrency=4).save(name)
    return name


def test_backup_and_restore_through_a_storage_block(cli: Cli, storage_block: str, pg_available: None,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Everything comes from the block: no passphrase or storage credentials in the environment.
    env = {"VAULTFLOW_PASSPHRASE": ""}
    with pytest.raises(RepositoryNotInitialised, match=f"vaultflow init --repo {storage_block}"):
        resolve_repository(storage_block).open()
    not_init = cli("backup", "postgresql://postgres@127.0.0.1:5432/postgres", "--repo", storage_block, env=env)
    assert not_init.returncode != 0 and f"vaultflow init --repo {storage_block}" in not_init.stderr

    case = PostgresCase()
    try:
        source = case.create_source(tmp_path)
        case.bulk(source, mib=4)
        init = cli("init", "--repo", storage_block, env=env)
        assert init.returncode == 0, init.stderr
        done = cli("backup", source, "--repo", storage_block, "--json", env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        snapshot = str(json.loads(done.stdout)["snapshot"])
        target = case.new_target(tmp_path)
        restored = cli("restore", snapshot, target, "--repo", storage_block, env=env, timeout=300)
        assert restored.returncode == 0, restored.stderr
        assert case.engine(target).table_stats() == case.engine(source).table_stats()
        assert case.schema(target) == case.schema(source)
        for proc in (init, done, restored):
            assert "testing" not in proc.stdout + proc.stderr and PASSPHRASE not in proc.stdout + proc.stderr
    finally:
        case.cleanup()


def test_s3_through_the_blocks_own_session_with_an_assumed_role(s3_server: S3Server,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The store is built from the prefect-aws block's boto3 session, so an assumed role
    works: moto's STS hands out temporary credentials (ASIA...) and S3 is reached with them."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)  # STS of the block's session goes to moto too
    bucket = s3_server.new_bucket()
    creds = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key=SecretStr("vf-secret-key"),
                           region_name="us-east-1", assume_role_arn="arn:aws:iam::123456789012:role/vf-backup",
                           aws_client_parameters={"endpoint_url": s3_server.endpoint})
    settings = BackupRepository(storage=S3Bucket(bucket_name=bucket, credentials=creds, bucket_folder="r"),
                                passphrase=SecretStr(PASSPHRASE)).storage_settings()
    assert isinstance(settings, S3Settings) and "vf-secret-key" not in repr(settings)
    store = settings.open()
    store.put("config-probe", b"x")
    assert store.get("config-probe") == b"x"
    signer_key = store.inner.client._request_signer._credentials.access_key  # type: ignore[attr-defined]
    assert signer_key.startswith("ASIA") and signer_key != "testing"
