"""Byte-oriented object stores: the one small interface every backend implements."""

from __future__ import annotations

import os

from vaultflow.storage.base import ObjectInfo, ObjectStore, validate_key
from vaultflow.storage.local import LocalStore
from vaultflow.storage.memory import MemoryStore
from vaultflow.storage.retry import RetryingStore, RetryPolicy

__all__ = ["LocalStore", "MemoryStore", "ObjectInfo", "ObjectStore", "RetryPolicy", "RetryingStore",
           "validate_key", "open_store", "storage_concurrency"]

DEFAULT_REMOTE_CONCURRENCY = 8


def storage_concurrency() -> int:
    """Requests at once to a remote store: VAULTFLOW_STORAGE_CONCURRENCY, default 8."""
    from vaultflow.errors import InputError

    raw = os.environ.get("VAULTFLOW_STORAGE_CONCURRENCY", "")
    if not raw:
        return DEFAULT_REMOTE_CONCURRENCY
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise InputError(f"VAULTFLOW_STORAGE_CONCURRENCY={raw!r} is not a number from 1 to 64",
                         "unset it or give e.g. 8")
    return int(raw)


def _split(location: str, scheme: str) -> tuple[str, str]:
    rest = location[len(scheme) + 3:]
    name, _, prefix = rest.partition("/")
    return name, prefix


def open_store(location: str) -> ObjectStore:
    """Open the store a repository location names: a local path or file:// URL,
    s3://bucket/prefix (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_REGION and boto3's other usual sources), or az://container/prefix
    (AZURE_STORAGE_CONNECTION_STRING). Connects only when first used."""
    from vaultflow.errors import InputError

    if location.startswith("file://"):
        return LocalStore(location[len("file://") :])
    if location.startswith("s3://"):
        from vaultflow.storage.s3 import S3Settings

        bucket, prefix = _split(location, "s3")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        return S3Settings(bucket, prefix, endpoint_url=endpoint, region=region,
                          concurrency=storage_concurrency()).open()
    if location.startswith("az://"):
        from pydantic import SecretStr

        from vaultflow.storage.azure import AzureSettings

        container, prefix = _split(location, "az")
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if not conn:
            raise InputError(f"no Azure credentials for {location}",
                             "set AZURE_STORAGE_CONNECTION_STRING, or use a BackupRepository block with "
                             "AzureBlobStorageCredentials")
        download_sas = os.environ.get("VAULTFLOW_AZURE_DOWNLOAD_SAS")
        return AzureSettings(container, prefix, connection_string=SecretStr(conn),
                             concurrency=storage_concurrency(),
                             download_sas=SecretStr(download_sas) if download_sas else None).open()
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise InputError(
            f"repository location {location!r} uses unsupported scheme {scheme!r}",
            "give a local path, file://, s3://bucket/prefix or az://container/prefix",
        )
    return LocalStore(location)
