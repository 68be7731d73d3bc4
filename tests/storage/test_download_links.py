"""Download links on Azure Blob (Azurite) with an account key and with SAS-only credentials,
and on S3 (moto): each link reads the object with no credentials until its expiry."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.object_servers import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer, S3Server
from vaultflow.errors import InputError
from vaultflow.storage.azure import AzureSettings, sas_expiry


def container_sas(container: str, hours: float, **perms: bool) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    now = datetime.now(UTC)
    return generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
                                  permission=ContainerSasPermissions(**perms), start=now - timedelta(hours=1),
                                  expiry=now + timedelta(hours=hours))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return bytes(resp.read())


def test_account_key_link(azurite: AzuriteServer) -> None:
    container = azurite.new_container()
    store = AzureSettings(container, "repo", connection_string=SecretStr(azurite.connection_string)).open()
    store.put("exports/a.sql", b"select 1;\n")
    link = store.download_url("exports/a.sql", timedelta(hours=2))
    assert fetch(link.url) == b"select 1;\n"
    assert abs(link.expires_at - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(seconds=5)


def test_sas_only_credentials_make_a_link_that_ends_with_the_sas(azurite: AzuriteServer) -> None:
    """The seed's setup: the repository reaches Azure with a container SAS only. A read-only
    download SAS makes the link; its expiry is the earlier of the asked one and the SAS's own."""
    container = azurite.new_container()
    writer_sas = container_sas(container, 48, read=True, write=True, create=True, list=True, delete=True)
    reader_sas = container_sas(container, 3, read=True)
    conn = f"BlobEndpoint={azurite.account_url};SharedAccessSignature={writer_sas}"
    store = AzureSettings(container, "repo", connection_string=SecretStr(conn),
                          download_sas=SecretStr(reader_sas)).open()
    store.put("exports/b.db", b"SQLite format 3\x00")
    link = store.download_url("exports/b.db", timedelta(days=7))
    assert fetch(link.url) == b"SQLite format 3\x00"
    assert link.expires_at == sas_expiry(reader_sas)  # the SAS ends first
    assert writer_sas not in link.url
    short = store.download_url("exports/b.db", timedelta(minutes=30))
    assert short.expires_at < link.expires_at  # the asked expiry ends first
    with pytest.raises(urllib.error.HTTPError):  # the link reads, it cannot write
        urllib.request.urlopen(urllib.request.Request(link.url, data=b"x", method="PUT",
                                                      headers={"x-ms-blob-type": "BlockBlob"}), timeout=30)


def test_a_read_only_container_sas_is_used_as_it_is(azurite: AzuriteServer) -> None:
    container = azurite.new_container()
    admin = AzureSettings(container, "repo", connection_string=SecretStr(azurite.connection_string)).open()
    admin.put("exports/c.sql", b"-- c\n")
    sas = container_sas(container, 5, read=True, list=True)
    store = AzureSettings(container, "repo", account_url=azurite.account_url, sas_token=SecretStr(sas)).open()
    link = store.download_url("exports/c.sql", timedelta(days=1))
    assert fetch(link.url) == b"-- c\n" and link.expires_at == sas_expiry(sas)


def test_a_sas_that_can_write_is_never_handed_out(azurite: AzuriteServer) -> None:
    container = azurite.new_container()
    conn = azurite.sas_connection_string(container, 24)  # read, write, list, delete
    store = AzureSettings(container, "repo", connection_string=SecretStr(conn)).open()
    with pytest.raises(InputError, match="also grants .*download link would hand those out") as err:
        store.download_url("exports/x.sql", timedelta(hours=1))
    assert "read-only container SAS" in (err.value.fix or "")
    assert conn.split("SharedAccessSignature=")[1] not in str(err.value)


def test_s3_presigned_link(s3_server: S3Server) -> None:
    from vaultflow.storage.s3 import S3Settings

    bucket = s3_server.new_bucket()
    env = s3_server.env()
    store = S3Settings(bucket, "repo", endpoint_url=env["AWS_ENDPOINT_URL"], region=env["AWS_REGION"],
                       access_key_id=env["AWS_ACCESS_KEY_ID"],
                       secret_access_key=SecretStr(env["AWS_SECRET_ACCESS_KEY"])).open()
    store.put("exports/d.sql", b"-- d\n")
    link = store.download_url("exports/d.sql", timedelta(hours=1))
    assert fetch(link.url) == b"-- d\n"
    with pytest.raises(InputError, match="cannot be valid"):
        store.download_url("exports/d.sql", timedelta(days=8))


def test_links_are_listed_with_status_and_prune_removes_expired_exports(azurite: AzuriteServer, tmp_path: Path
                                                                       ) -> None:
    import time

    from vaultflow.engines.sqlite.engine import SqliteEngine
    from vaultflow.operations.backup import backup_database
    from vaultflow.operations.prune import prune
    from vaultflow.operations.retention import RetentionPolicy
    from vaultflow.operations.share import export_download_link, list_links
    from vaultflow.repository import Repository, new_object_id
    from vaultflow.sample_data import create

    store = AzureSettings(azurite.new_container(), "repo", connection_string=SecretStr(azurite.connection_string))
    repo = Repository.init(store.open(), "pw")
    sid = new_object_id()
    backup_database(SqliteEngine(create(tmp_path / "a.db", rows=200)), repo, snapshot_id=sid)
    short = export_download_link(repo, sid, timedelta(seconds=2))
    long = export_download_link(repo, sid, timedelta(hours=1))
    assert short.key != long.key and all(k.startswith(f"exports/{sid}-") and k.endswith(".db")
                                         for k in (short.key, long.key))  # an export never replaces another
    now = datetime.now(UTC)
    assert [(r.snapshot, r.status(now)) for r in list_links(repo)] == [(sid, "active"), (sid, "active")]
    assert all(short.url.split("?")[1] not in repo.store.get(f"links/{r.id}").decode("latin-1")
               for r in list_links(repo))
    time.sleep(3)
    assert [r.status(datetime.now(UTC)) for r in list_links(repo)] == ["expired", "active"]
    assert prune(repo, RetentionPolicy(keep_last=5), datetime.now(UTC), dry_run=True).expired_exports == [short.key]
    assert repo.store.stat(short.key) is not None  # a dry run deletes nothing
    plan = prune(repo, RetentionPolicy(keep_last=5), datetime.now(UTC))
    assert plan.expired_exports == [short.key] and repo.store.stat(short.key) is None
    assert repo.store.stat(long.key) is not None and [r.status(datetime.now(UTC)) for r in list_links(repo)] == [
        "active"]  # the link still working keeps its object
    later = datetime.now(UTC) + timedelta(hours=2)
    assert prune(repo, RetentionPolicy(keep_last=5), later).expired_exports == [long.key]
    assert repo.store.stat(long.key) is None and list_links(repo) == []
    assert repo.snapshot_ids() == [sid]
