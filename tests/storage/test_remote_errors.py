"""Bad inputs against S3 (moto) and Azure Blob (Azurite): one clear line each, no secret shown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from tests.conftest import PASSPHRASE
from tests.object_servers import AZURITE_KEY, AzuriteServer, S3Server, free_port, moto_server
from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    InputError,
    RepositoryNotInitialised,
    StorageNotFound,
    VaultflowError,
    WrongPassphrase,
)
from vaultflow.repository import Repository, open_repository
from vaultflow.storage import RetryPolicy, open_store
from vaultflow.storage.azure import AzureSettings, sas_expiry
from vaultflow.storage.s3 import S3Settings

FAST = RetryPolicy(attempts=3, base_delay=0.01)
SECRETS = ("testing", "wrong-secret", AZURITE_KEY, "AccountKey", "sig=")


def assert_clean_line(exc: VaultflowError, *fragments: str) -> None:
    line = exc.line()
    assert "\n" not in line
    for secret in SECRETS:
        assert secret not in line, line
    for fragment in fragments:
        assert fragment in line, line


def s3(server: S3Server, bucket: str, **kw: object) -> S3Settings:
    base: dict[str, object] = {"endpoint_url": server.endpoint, "region": "us-east-1", "access_key_id": "testing",
                               "secret_access_key": SecretStr("testing")}
    return S3Settings(bucket, "repo", **{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def s3_with_auth() -> Iterator[S3Server]:
    with moto_server(auth=True) as server:
        yield server


def test_s3_wrong_keys(s3_with_auth: S3Server) -> None:
    store = s3(s3_with_auth, "some-bucket", access_key_id="AKIAWRONGWRONGWRONG0",
               secret_access_key=SecretStr("wrong-secret")).open(FAST)
    with pytest.raises(AuthenticationFailed) as info:
        store.put("config", b"{}")
    assert_clean_line(info.value, "S3 refused put on s3://some-bucket/repo", "InvalidAccessKeyId",
                      "AWS_ACCESS_KEY_ID")
    assert not info.value.transient


def test_s3_missing_bucket(s3_server: S3Server) -> None:
    store = s3(s3_server, "no-such-bucket").open(FAST)
    for call in (lambda: store.put("config", b"{}"), lambda: store.get("config"), lambda: list(store.list())):
        with pytest.raises(StorageNotFound) as info:
            call()
        assert_clean_line(info.value, "S3 bucket 'no-such-bucket' does not exist", "aws s3 mb s3://no-such-bucket")
    with pytest.raises(StorageNotFound):
        Repository.read_config(store)


def test_s3_endpoint_unreachable_fails_after_bounded_retries() -> None:
    port = free_port()
    settings = S3Settings("some-bucket", endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1",
                          access_key_id="testing", secret_access_key=SecretStr("testing"))
    with pytest.raises(ConnectionFailed) as info:
        settings.open(FAST).get("config")
    assert info.value.transient
    assert_clean_line(info.value, "get config on s3://some-bucket failed 3 times",
                      f"S3 endpoint http://127.0.0.1:{port} did not answer", "AWS_ENDPOINT_URL")


def test_s3_invalid_bucket_name_and_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="invalid S3 bucket name 'Bad_Bucket'"):
        open_store("s3://Bad_Bucket/x")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InputError) as info:
        open_store("s3://some-bucket/x").get("config")
    assert_clean_line(info.value, "no usable AWS credentials for s3://some-bucket/x")


def test_s3_empty_bucket_is_not_initialised_and_foreign_repo_wrong_passphrase(
        s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    location = f"s3://{s3_server.new_bucket()}/backups"
    with pytest.raises(RepositoryNotInitialised) as info:
        open_repository(location, PASSPHRASE)
    assert_clean_line(info.value, f"no vaultflow repository at {location}", f"vaultflow init --repo {location}")
    Repository.init(open_store(location), "someone else's passphrase")
    with pytest.raises(WrongPassphrase) as wrong:
        open_repository(location, PASSPHRASE)
    assert_clean_line(wrong.value, f"no key of the repository at {location} opens with this passphrase")


def az(server: AzuriteServer, container: str, **kw: object) -> AzureSettings:
    kw.setdefault("connection_string", SecretStr(server.connection_string))
    return AzureSettings(container, "repo", **kw)  # type: ignore[arg-type]


def test_azure_wrong_key(azurite: AzuriteServer) -> None:
    container = azurite.new_container()
    wrong = azurite.connection_string.replace(AZURITE_KEY, "d3Jvbmcta2V5LXdyb25nLWtleQ==")
    store = az(azurite, container, connection_string=SecretStr(wrong)).open(FAST)
    with pytest.raises(AuthenticationFailed) as info:
        store.put("config", b"{}")
    assert_clean_line(info.value, f"Azure Blob refused put on az://{container}/repo", "account key or SAS")


def test_azure_account_key_and_sas_token_work(azurite: AzuriteServer) -> None:
    container = azurite.new_container()
    keyed = AzureSettings(container, "k", account_url=azurite.account_url, account_key=SecretStr(AZURITE_KEY))
    keyed.open(FAST).put("a", b"1")
    sas = azurite.sas_connection_string(container, expiry_hours=1).split("SharedAccessSignature=", 1)[1]
    signed = AzureSettings(container, "k", account_url=azurite.account_url, sas_token=SecretStr(sas))
    assert signed.open(FAST).get("a") == b"1"
    expiry = signed.sas_expires_at()
    assert expiry is not None and expiry == sas_expiry(sas)


def test_azure_missing_container(azurite: AzuriteServer) -> None:
    store = az(azurite, "no-such-container").open(FAST)
    for call in (lambda: store.put("config", b"{}"), lambda: store.get("config"), lambda: list(store.list()),
                 lambda: store.stat("config")):
        with pytest.raises(StorageNotFound) as info:
            call()
        assert_clean_line(info.value, "Azure container 'no-such-container' does not exist in account "
                                      "'devstoreaccount1'", "az storage container create -n no-such-container")


def test_azure_expired_sas(azurite: AzuriteServer) -> None:
    container = azurite.new_container()
    expired = azurite.sas_connection_string(container, expiry_hours=-1)
    store = az(azurite, container, connection_string=SecretStr(expired)).open(FAST)
    with pytest.raises(AuthenticationFailed) as info:
        store.get("config")
    assert_clean_line(info.value, "the SAS token for az://", "expired at", "generate a new SAS")
    assert not info.value.transient


def test_azure_endpoint_unreachable_fails_after_bounded_retries() -> None:
    port = free_port()
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    with pytest.raises(ConnectionFailed) as info:
        AzureSettings("backups", connection_string=SecretStr(conn)).open(FAST).put("config", b"{}")
    assert info.value.transient
    assert_clean_line(info.value, "put config on az://backups failed 3 times",
                      f"Azure Blob endpoint http://127.0.0.1:{port}/devstoreaccount1 did not answer")


def test_azure_without_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(InputError, match="set AZURE_STORAGE_CONNECTION_STRING"):
        open_store("az://backups/x")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "not a connection string")
    with pytest.raises(InputError) as info:
        open_store("az://backups/x")
    assert_clean_line(info.value, "invalid Azure connection settings for az://backups")


def test_azure_empty_container_is_not_initialised_and_foreign_repo_wrong_passphrase(
        azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    location = f"az://{azurite.new_container()}/backups"
    with pytest.raises(RepositoryNotInitialised) as info:
        open_repository(location, PASSPHRASE)
    assert_clean_line(info.value, f"vaultflow init --repo {location}")
    Repository.init(open_store(location), "someone else's passphrase")
    with pytest.raises(WrongPassphrase):
        open_repository(location, PASSPHRASE)


def test_unknown_scheme() -> None:
    with pytest.raises(InputError, match="s3://bucket/prefix or az://container/prefix"):
        open_store("gs://bucket/x")


@pytest.mark.parametrize(("status", "code", "transient"), [
    (503, "SlowDown", True), (500, "InternalError", True), (429, "TooManyRequests", True),
    (400, "RequestTimeout", True), (403, "AccessDenied", False), (404, "NoSuchBucket", False),
    (400, "InvalidArgument", False)])
def test_s3_reply_classification(s3_server: S3Server, status: int, code: str, transient: bool) -> None:
    """How the S3 store reads a reply the emulator cannot be made to send (throttling, 5xx)."""
    from botocore.exceptions import ClientError

    from vaultflow.storage.s3 import S3Store

    store = S3Store(s3(s3_server, "some-bucket"))
    reply = {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    mapped = store._map(ClientError(reply, "PutObject"), "put", "config")  # type: ignore[arg-type]
    assert mapped.transient is transient
    assert ("does not exist" if code == "NoSuchBucket" else code) in mapped.line()


@pytest.mark.parametrize(("status", "code", "transient"), [
    (503, "ServerBusy", True), (500, "InternalError", True), (500, "OperationTimedOut", True),
    (403, "AuthenticationFailed", False), (409, "LeaseIdMissing", False)])
def test_azure_reply_classification(azurite: AzuriteServer, status: int, code: str, transient: bool) -> None:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    from vaultflow.storage.azure import AzureBlobStore

    store = AzureBlobStore(az(azurite, "backups"))
    cls = ClientAuthenticationError if status == 403 else HttpResponseError
    exc = cls(message="x")
    exc.status_code, exc.error_code = status, code  # type: ignore[assignment]
    mapped = store._map(exc, "put", "config")
    assert mapped.transient is transient


def test_concurrency_knob(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VAULTFLOW_STORAGE_CONCURRENCY", "3")
    assert open_store("s3://some-bucket/x").concurrency == 3
    monkeypatch.setenv("VAULTFLOW_STORAGE_CONCURRENCY", "0")
    with pytest.raises(InputError, match="VAULTFLOW_STORAGE_CONCURRENCY='0' is not a number from 1 to 64"):
        open_store("s3://some-bucket/x")


def test_a_sas_signature_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """urllib3 logs each request's URL, query string and all, at DEBUG; opening an Azure
    store installs the filter that cuts the signature out."""
    import logging

    from pydantic import SecretStr

    from vaultflow.storage.azure import AzureSettings

    AzureSettings("backups", "p", account_url="https://acct.blob.core.windows.net",
                  sas_token=SecretStr("sv=1&sig=SECRETSIG")).open()
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        logging.getLogger("urllib3.connectionpool").debug(
            '%s "PUT /c/p/config?sv=2024&sig=%s HTTP/1.1" 201', "https://acct", "SECRETSIG")
    assert "SECRETSIG" not in caplog.text and "sig=REDACTED" in caplog.text
