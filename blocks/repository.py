"""The repository block: where backups go and the passphrase that opens them."""

from __future__ import annotations

from dataclasses import replace
from typing import Self

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials, MinIOCredentials, S3Bucket
from prefect_azure import AzureBlobStorageCredentials
from prefect_azure.blob_storage import AzureBlobStorageContainer
from pydantic import Field, SecretStr, model_validator

from vaultflow.errors import InputError
from vaultflow.storage.azure import AzureSettings
from vaultflow.storage.s3 import S3Settings

StorageSettings = S3Settings | AzureSettings


class BackupRepository(Block):
    """A vaultflow repository: a local path or an S3/Azure storage block, and its passphrase."""

    _block_type_name = "vaultflow Backup Repository"
    _block_type_slug = "vaultflow-backup-repository"
    _description = ("Where a vaultflow repository lives (a local path, an S3 bucket or an Azure Blob "
                    "container) and the passphrase that opens it.")

    location: str | None = Field(
        default=None,
        description="Local path (or s3://bucket/prefix, az://container/prefix with credentials from the "
                    "environment). Leave empty when `storage` is set.")
    passphrase: SecretStr = Field(description="Opens the repository's keys; losing it loses the backups.")
    storage: S3Bucket | AzureBlobStorageContainer | None = Field(
        default=None,
        description="Object storage holding the repository: an S3Bucket (AwsCredentials or MinIOCredentials, any "
                    "S3-compatible endpoint) or an AzureBlobStorageContainer; its folder is the repository's "
                    "prefix.")
    download_sas: SecretStr | None = Field(
        default=None, description="Azure only: a read-only container SAS (sp=r) for download links, when the "
                                  "storage credentials are a SAS that also grants write or delete.")
    concurrency: int = Field(default=8, ge=1, le=64,
                             description="Requests at once to object storage (chunk uploads, read-ahead).")
    catalog_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL of the catalog (may hold its password); default "
                                  "~/.vaultflow/catalog.db."
    )

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if bool(self.location) == (self.storage is not None):
            raise ValueError("set exactly one of `location` and `storage`")
        return self

    def storage_settings(self) -> StorageSettings | None:
        """The core settings for `storage` (None for a `location`); connects to nothing."""
        if isinstance(self.storage, S3Bucket):
            return s3_settings(self.storage, self.concurrency)
        if isinstance(self.storage, AzureBlobStorageContainer):
            return replace(azure_settings(self.storage, self.concurrency), download_sas=self.download_sas)
        return None


def s3_settings(bucket: S3Bucket, concurrency: int = 8) -> S3Settings:
    """The block's own boto3 session (profiles, assumed roles, session tokens: whatever
    prefect-aws supports) and client parameters, built when the store is opened."""
    creds = bucket.credentials
    params = creds.aws_client_parameters.get_params_override() if creds.aws_client_parameters else {}
    if isinstance(creds, MinIOCredentials):
        return S3Settings(bucket.bucket_name, bucket.bucket_folder, endpoint_url=params.get("endpoint_url"),
                          region=creds.region_name, access_key_id=creds.minio_root_user,
                          secret_access_key=creds.minio_root_password, concurrency=concurrency,
                          session_factory=creds.get_boto3_session, client_kwargs=params)
    assert isinstance(creds, AwsCredentials)
    return S3Settings(bucket.bucket_name, bucket.bucket_folder, endpoint_url=params.get("endpoint_url"),
                      region=creds.region_name, access_key_id=creds.aws_access_key_id,
                      secret_access_key=creds.aws_secret_access_key,
                      session_token=SecretStr(creds.aws_session_token) if creds.aws_session_token else None,
                      profile=creds.profile_name, concurrency=concurrency,
                      session_factory=creds.get_boto3_session, client_kwargs=params)


def azure_settings(container: AzureBlobStorageContainer, concurrency: int = 8) -> AzureSettings:
    creds: AzureBlobStorageCredentials = container.credentials
    prefix = container.base_folder or ""
    if creds.connection_string is not None:
        return AzureSettings(container.container_name, prefix, connection_string=creds.connection_string,
                             concurrency=concurrency)
    if not creds.account_url:
        raise InputError(f"the AzureBlobStorageContainer block for {container.container_name} has no credentials",
                         "set a connection string, or an account URL")
    token: object
    if creds.client_id and creds.tenant_id and creds.client_secret:
        from azure.identity import ClientSecretCredential

        token = ClientSecretCredential(creds.tenant_id, creds.client_id, creds.client_secret.get_secret_value())
    else:
        from azure.identity import DefaultAzureCredential

        token = DefaultAzureCredential()
    return AzureSettings(container.container_name, prefix, account_url=creds.account_url, token_credential=token,
                         concurrency=concurrency)
