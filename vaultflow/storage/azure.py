"""Azure Blob Storage (and Azurite) through azure-storage-blob's ContainerClient.

One block blob per key under `prefix/` in one container. An upload commits whole (a single
Put Blob, or Put Block List for large blobs), so readers never see a part, and an
acknowledged upload is durable: `sync` has nothing to do. The SDK's own retries are off;
this store raises `TransientError` on 5xx, throttling and broken connections and
`RetryingStore` (see `AzureSettings.open`) retries. 403 (bad key, expired SAS) and a
missing container fail at once with one line.
"""

from __future__ import annotations

import re
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobSasPermissions, ContainerClient, generate_blob_sas
from pydantic import SecretStr

from vaultflow.errors import (
    AuthenticationFailed,
    InputError,
    StorageNotFound,
    TransientError,
    VaultflowError,
)
from vaultflow.log_redaction import hide_sas_in_logs
from vaultflow.storage.base import ObjectInfo, ObjectStore, SignedUrl, validate_key, validate_prefix
from vaultflow.storage.retry import RetryingStore, RetryPolicy
from vaultflow.storage.s3 import clean_prefix

_CONTAINER_RE = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_SDK_OPTIONS: dict[str, Any] = {"retry_total": 0, "connection_timeout": 5, "read_timeout": 60}


def check_container(container: str) -> str:
    if not _CONTAINER_RE.match(container):
        raise InputError(f"invalid Azure container name {container!r}",
                         "container names are 3-63 characters of a-z 0-9 - (az://container/prefix)")
    return container


def sas_expiry(sas_or_connection_string: str) -> datetime | None:
    """The `se` (signed expiry) of a SAS token, or of the SAS in a connection string."""
    text = sas_or_connection_string
    if "SharedAccessSignature=" in text:
        text = text.split("SharedAccessSignature=", 1)[1].split(";", 1)[0]
    values = parse_qs(text.lstrip("?")).get("se")
    if not values:
        return None
    try:
        expiry = datetime.fromisoformat(values[0].replace("Z", "+00:00"))
    except ValueError:
        return None
    return expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AzureSettings:
    """Where an Azure repository lives and how to authenticate: a connection string (with an
    account key or a SAS), or `account_url` with `sas_token`, `account_key`, or a token
    credential object built by the caller (service principal, managed identity)."""

    container: str
    prefix: str = ""
    connection_string: SecretStr | None = None
    account_url: str | None = None
    sas_token: SecretStr | None = None
    account_key: SecretStr | None = None
    token_credential: object | None = None
    concurrency: int = 8
    download_sas: SecretStr | None = None  # a read-only container SAS for download links (sp=r)

    def location(self) -> str:
        prefix = self.prefix.strip("/")
        return f"az://{self.container}/{prefix}" if prefix else f"az://{self.container}"

    def open(self, retry: RetryPolicy | None = None) -> ObjectStore:
        hide_sas_in_logs()  # urllib3 logs request URLs, SAS query string included, at DEBUG
        return RetryingStore(AzureBlobStore(self), retry)

    def container_sas(self) -> SecretStr | None:
        """The SAS the store authenticates with (a token, or a connection string's), if any."""
        if self.sas_token is not None:
            return SecretStr(self.sas_token.get_secret_value().lstrip("?"))
        if self.connection_string is not None:
            text = self.connection_string.get_secret_value()
            if "SharedAccessSignature=" in text:
                return SecretStr(text.split("SharedAccessSignature=", 1)[1].split(";", 1)[0].lstrip("?"))
        return None

    def sas_expires_at(self) -> datetime | None:
        for secret in (self.sas_token, self.connection_string):
            if secret is not None:
                expiry = sas_expiry(secret.get_secret_value())
                if expiry is not None:
                    return expiry
        return None


class AzureBlobStore(ObjectStore):
    """Objects as block blobs `<prefix>/<key>` in `settings.container`."""

    def __init__(self, settings: AzureSettings) -> None:
        self.container = check_container(settings.container)
        self.prefix = clean_prefix(settings.prefix)
        self.concurrency = max(1, settings.concurrency)
        self.sas_expires_at = settings.sas_expires_at()
        self._download_sas = settings.download_sas
        self._container_sas = settings.container_sas()
        options = dict(_SDK_OPTIONS)
        try:
            if settings.connection_string is not None:
                self.client = ContainerClient.from_connection_string(
                    settings.connection_string.get_secret_value(), self.container, **options)
            elif settings.account_url:
                credential: Any = settings.token_credential
                if settings.sas_token is not None:
                    credential = settings.sas_token.get_secret_value().lstrip("?")
                elif settings.account_key is not None:
                    credential = settings.account_key.get_secret_value()
                self.client = ContainerClient(settings.account_url, self.container, credential=credential, **options)
            else:
                raise InputError(f"no Azure credentials for az://{self.container}",
                                 "set AZURE_STORAGE_CONNECTION_STRING, or use a BackupRepository block with "
                                 "AzureBlobStorageCredentials")
        except ValueError as exc:  # malformed connection string or URL; the SDK's text holds no secret
            raise InputError(f"invalid Azure connection settings for az://{self.container}: "
                             f"{str(exc).splitlines()[0][:200]}",
                             "check AZURE_STORAGE_CONNECTION_STRING or the block's credentials") from None
        self.endpoint = f"{self.client.scheme}://{self.client.primary_hostname}"
        self.account = str(self.client.account_name or "")

    def describe(self) -> str:
        return f"az://{self.container}/{self.prefix}" if self.prefix else f"az://{self.container}"

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
        name = self._name(key)
        try:
            self.client.upload_blob(name, data, overwrite=True, length=len(data))
        except AzureError as exc:
            raise self._map(exc, "put", key) from None

    def get(self, key: str) -> bytes:
        name = self._name(key)
        try:
            return bytes(self.client.download_blob(name).readall())
        except ResourceNotFoundError as exc:
            if _code(exc) == "ContainerNotFound":
                raise self._map(exc, "get", key) from None
            raise KeyError(key) from None
        except AzureError as exc:
            raise self._map(exc, "get", key) from None

    def stat(self, key: str) -> ObjectInfo | None:
        name = self._name(key)
        try:
            props = self.client.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError as exc:
            if _code(exc) == "ContainerNotFound":
                raise self._map(exc, "stat", key) from None
            return None
        except AzureError as exc:
            raise self._map(exc, "stat", key) from None
        return ObjectInfo(key, int(props.size))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        try:
            for blob in self.client.list_blobs(name_starts_with=root + prefix):
                yield ObjectInfo(str(blob.name)[len(root):], int(blob.size), blob.last_modified)
        except AzureError as exc:
            raise self._map(exc, "list", prefix or "(all)") from None

    def delete(self, key: str) -> None:
        name = self._name(key)
        try:
            self.client.delete_blob(name)
        except ResourceNotFoundError as exc:
            if _code(exc) == "ContainerNotFound":
                raise self._map(exc, "delete", key) from None
        except AzureError as exc:
            raise self._map(exc, "delete", key) from None

    def put_file(self, key: str, path: Path) -> None:
        name = self._name(key)
        try:
            with path.open("rb") as f:
                self.client.upload_blob(name, f, overwrite=True, length=path.stat().st_size,
                                        max_concurrency=min(self.concurrency, 4))
        except AzureError as exc:
            raise self._map(exc, "upload", key) from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        name = self._name(key)
        if length <= 0:
            return b""
        try:
            return bytes(self.client.download_blob(name, offset=start, length=length).readall())
        except ResourceNotFoundError as exc:
            if _code(exc) == "ContainerNotFound":
                raise self._map(exc, "get", key) from None
            raise KeyError(key) from None
        except HttpResponseError as exc:
            if int(getattr(exc, "status_code", 0) or 0) == 416:  # InvalidRange: past the end
                return b""
            raise self._map(exc, "get", key) from None
        except AzureError as exc:
            raise self._map(exc, "get", key) from None

    @staticmethod
    def _block_id(index: int) -> str:
        return b64encode(f"{index:08d}".encode()).decode()

    def put_block(self, key: str, index: int, data: bytes) -> None:
        """Put Block: an uncommitted block of the blob (Azure keeps those up to a week)."""
        name = self._name(key)
        try:
            self.client.get_blob_client(name).stage_block(self._block_id(index), data, length=len(data))
        except AzureError as exc:
            raise self._map(exc, "upload", key) from None

    def commit_blocks(self, key: str, count: int) -> None:
        """Put Block List: the blob becomes blocks 0..count-1; other uncommitted blocks go."""
        name = self._name(key)
        try:
            self.client.get_blob_client(name).commit_block_list(
                [BlobBlock(block_id=self._block_id(i)) for i in range(count)])
        except AzureError as exc:
            raise self._map(exc, "upload", key) from None

    def discard_blocks(self, key: str) -> None:
        """Uncommitted blocks (ours, or another writer's such as SQL Server's BACKUP TO URL)
        live until a block list is committed or a week passes. Without a committed blob,
        commit an empty list (which drops them) and delete the empty blob. A committed blob
        is never touched: its stray blocks are left to expire (recommitting its list would
        risk its content). Azurite drops uncommitted blocks with a delete alone, so the
        tests do not show the commit is needed on Azure; Azure's documentation says it is."""
        name = self._name(key)
        blob = self.client.get_blob_client(name)
        try:
            _committed, uncommitted = blob.get_block_list("all")
            if not uncommitted:
                return
            try:
                blob.get_blob_properties()
                return  # a committed blob: left as it is
            except ResourceNotFoundError:
                pass
            blob.commit_block_list([])
            blob.delete_blob()
        except ResourceNotFoundError as exc:
            if _code(exc) == "ContainerNotFound":
                raise self._map(exc, "discard blocks of", key) from None
        except AzureError as exc:
            raise self._map(exc, "discard blocks of", key) from None

    def download_url(self, key: str, expires: timedelta) -> SignedUrl:
        """The blob's URL with a read-only SAS: one signed for this blob by the account key,
        or else a read-only container SAS (the `download_sas`, or the store's own SAS when
        it grants nothing but read and list), valid until the earlier of `expires` from now
        and that SAS's own expiry. A SAS that also grants write or delete is never handed
        out: whoever holds the link could then change or delete the backups."""
        name = self._name(key)
        blob_url = self.client.get_blob_client(name).url.split("?", 1)[0]  # a SAS client's URL carries its SAS
        wanted = datetime.now(UTC) + expires
        account_key = getattr(self.client.credential, "account_key", None)
        if account_key:
            sas = generate_blob_sas(self.account, self.container, name, account_key=account_key,
                                    permission=BlobSasPermissions(read=True), expiry=wanted,
                                    start=datetime.now(UTC) - timedelta(minutes=5))
            return SignedUrl(f"{blob_url}?{sas}", wanted)
        for source, secret in (("download SAS", self._download_sas), ("container SAS", self._container_sas)):
            if secret is None:
                continue
            token = secret.get_secret_value().lstrip("?")
            granted = set(parse_qs(token).get("sp", [""])[0])
            expiry = sas_expiry(token)
            if expiry is not None and expiry <= datetime.now(UTC):
                raise AuthenticationFailed(f"the {source} of {self.describe()} expired at {expiry:%Y-%m-%d %H:%M} "
                                           "UTC, so it cannot make a download link", "generate a new SAS")
            if "r" not in granted:
                raise InputError(f"the {source} of {self.describe()} does not grant read (sp="
                                 f"{''.join(sorted(granted))}), so it cannot make a download link",
                                 "give a SAS with read permission")
            extra = granted - {"r", "l"}
            if extra:
                if source == "container SAS" and self._download_sas is None:
                    raise InputError(f"the container SAS of {self.describe()} also grants "
                                     f"{''.join(sorted(extra))} (write, delete, ...), and a download link would hand "
                                     "those out to whoever gets it",
                                     "add a read-only container SAS (sp=r) as the repository's download SAS "
                                     "(VAULTFLOW_AZURE_DOWNLOAD_SAS or the block's download_sas), or use an "
                                     "account key")
                raise InputError(f"the download SAS of {self.describe()} grants more than read "
                                 f"({''.join(sorted(granted))})", "generate it with read permission only (sp=r)")
            until = min(wanted, expiry) if expiry is not None else wanted
            return SignedUrl(f"{blob_url}?{token}", until)
        raise InputError(f"a download link for {self.describe()} needs the storage account key or a read-only SAS "
                         "to sign it", "use a connection string with AccountKey, set VAULTFLOW_AZURE_DOWNLOAD_SAS "
                         "(or the block's download_sas), or export with --to FILE")

    def _map(self, exc: AzureError, op: str, key: str) -> VaultflowError:
        """One line per failure; the SDK's message can quote the request's URL (and so a
        SAS signature), so only the error code and status are used."""
        where = f"{self.describe()} at {self.endpoint}"
        if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            return TransientError(f"Azure Blob endpoint {self.endpoint} did not answer ({type(exc).__name__})",
                                  "check the endpoint in the connection string (or the block) and the network")
        code = _code(exc)
        status = int(getattr(exc, "status_code", 0) or 0)
        if code == "ContainerNotFound":
            return StorageNotFound(f"Azure container {self.container!r} does not exist in account "
                                   f"{self.account!r} at {self.endpoint}",
                                   f"create it (az storage container create -n {self.container}) or fix the "
                                   "container in --repo or the block")
        if isinstance(exc, ClientAuthenticationError) or status == 403:
            expiry = self.sas_expires_at
            if expiry is not None and expiry <= datetime.now(UTC):
                return AuthenticationFailed(f"the SAS token for {where} expired at {expiry:%Y-%m-%d %H:%M} UTC",
                                            "generate a new SAS and update the connection string or the block")
            if code == "AuthorizationPermissionMismatch" and op in _SAS_LETTER_OF:
                letter = _SAS_LETTER_OF[op]
                fix = ("prune, forget and purge need the admin role's SAS" if op == "delete" else
                       f"give the SAS {letter!r}") + " (docs/storage.md, storage permissions per role)"
                return AuthenticationFailed(f"Azure Blob refused {op} of {key} on {where} ({code}): the SAS lacks "
                                            f"permission {letter!r}", fix)
            return AuthenticationFailed(f"Azure Blob refused {op} on {where} ({code or status})",
                                        "check the account key or SAS (its permissions and expiry) in the "
                                        "connection string or the block")
        if isinstance(exc, HttpResponseError) and (status >= 500 or status == 429 or code in ("ServerBusy",
                                                                                             "OperationTimedOut")):
            return TransientError(f"Azure Blob {op} of {key} in {where} failed with {code or status} (HTTP {status})")
        return VaultflowError(f"Azure Blob {op} of {key} in {where} failed with {code or type(exc).__name__} "
                              f"(HTTP {status})")


def container_store(container_url: str, sas: SecretStr, prefix: str = "", retry: RetryPolicy | None = None
                    ) -> ObjectStore:
    """The store of objects under `prefix/` in the container at
    https://ACCOUNT.blob.core.windows.net/CONTAINER (or an emulator's URL), reached with a
    container SAS, retried (`RetryingStore`). Connects only when first used; the SAS is
    kept out of logs (`hide_sas_in_logs`) and out of every message."""
    url = container_url.rstrip("/")
    if "?" in url or "://" not in url:
        raise InputError("the container URL must be https://ACCOUNT.blob.core.windows.net/CONTAINER without a query",
                         "give the SAS separately")
    account_url, _, container = url.rpartition("/")
    if account_url.endswith(":/"):
        raise InputError(f"the container URL {url} names no container", "append /CONTAINER")
    return AzureSettings(container=container, prefix=prefix, account_url=account_url, sas_token=sas).open(retry)


_SAS_LETTER_OF = {"delete": "d", "get": "r", "stat": "r", "list": "l", "put": "w", "upload": "w",
                  "discard blocks of": "d"}
"""The container SAS permission behind each store operation, named when Azure answers
AuthorizationPermissionMismatch."""


def _code(exc: AzureError) -> str:
    return str(getattr(exc, "error_code", None) or "")
