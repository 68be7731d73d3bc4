"""The check-credentials flow reports SAS tokens that expire soon and emits an event for each."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from prefect_azure import AzureBlobStorageCredentials
from prefect_azure.blob_storage import AzureBlobStorageContainer
from pydantic import SecretStr

from blocks import BackupRepository
from tests.object_servers import AzuriteServer
from vaultflow.credentials import classify


def test_classify() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    week = timedelta(days=7)
    assert classify("r", "az://c", "SAS token", now - timedelta(seconds=1), now=now, within=week).status == "expired"
    soon = classify("r", "az://c", "SAS token", now + timedelta(days=2), now=now, within=week)
    assert soon.status == "expiring"
    assert soon.line() == ("SAS token of r (az://c) expires at 2026-01-03 00:00 UTC; generate a new one and "
                           "update the block")
    assert classify("r", "az://c", "SAS token", now + timedelta(days=30), now=now, within=week).status == "ok"
    assert classify("r", "/srv/r", "storage credentials", None, now=now, within=week).status == "no-expiry"


def _events(resource_id: str, timeout: float = 30) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            resp = client._client.post("/events/filter", json={"filter": {
                "event": {"prefix": ["vaultflow.credentials."]}, "resource": {"id": [resource_id]},
                "occurred": {"since": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}}})
            resp.raise_for_status()
            names = [e["event"] for e in resp.json()["events"]]
            if names or time.monotonic() > deadline:
                return names
            time.sleep(0.5)


def test_check_credentials_flow(prefect_api: str, azurite: AzuriteServer) -> None:
    from flows.credentials import check_credentials

    suffix = uuid.uuid4().hex[:6]
    names = {}
    for label, hours in (("soon", 48.0), ("later", 24 * 100.0), ("gone", -1.0)):
        container = azurite.new_container()
        storage = AzureBlobStorageContainer(container_name=container, credentials=AzureBlobStorageCredentials(
            connection_string=SecretStr(azurite.sas_connection_string(container, expiry_hours=hours))))
        names[label] = f"sas-{label}-{suffix}"
        BackupRepository(storage=storage, passphrase=SecretStr("p")).save(names[label])
    names["local"] = f"local-{suffix}"
    BackupRepository(location="/srv/r", passphrase=SecretStr("p")).save(names["local"])

    rows = check_credentials(repositories=list(names.values()), within_days=14)
    status = {r["repository"]: r["status"] for r in rows}
    assert status == {names["soon"]: "expiring", names["later"]: "ok", names["gone"]: "expired",
                      names["local"]: "no-expiry"}
    assert "sig=" not in repr(rows)

    assert _events(f"vaultflow.repository.{names['soon']}") == ["vaultflow.credentials.expiring"]
    assert _events(f"vaultflow.repository.{names['gone']}") == ["vaultflow.credentials.expired"]
    assert _events(f"vaultflow.repository.{names['later']}", timeout=2) == []


def test_check_credentials_cli(cli, azurite: AzuriteServer) -> None:  # type: ignore[no-untyped-def]
    container = azurite.new_container()
    name = f"sas-cli-{uuid.uuid4().hex[:6]}"
    storage = AzureBlobStorageContainer(container_name=container, credentials=AzureBlobStorageCredentials(
        connection_string=SecretStr(azurite.sas_connection_string(container, expiry_hours=24))))
    BackupRepository(storage=storage, passphrase=SecretStr("p")).save(name)
    proc = cli("check-credentials", "--repo", name, "--within-days", "3")
    assert proc.returncode == 1 and "expiring" in proc.stdout
    assert proc.stderr.strip().endswith(f"within 3 days: {name}; generate new ones and update the blocks")
    assert cli("check-credentials", "--repo", name, "--within-days", "0").returncode == 0
