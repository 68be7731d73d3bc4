"""Credential checks: read each repository's storage credentials and when they expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.events import emit_event

from blocks.resolve import resolve_repository
from vaultflow.credentials import CredentialExpiry, classify
from vaultflow.storage.azure import AzureSettings

REPOSITORY_SLUG = "vaultflow-backup-repository"


def _repository_block_names() -> list[str]:
    with get_client(sync_client=True) as client:
        docs = client.read_block_documents_by_type(block_type_slug=REPOSITORY_SLUG)
    return sorted(d.name for d in docs if d.name and not d.is_anonymous)


@task(name="check-repository-credentials", persist_result=False, cache_policy=NO_CACHE)
def check_repository_credentials(repositories: list[str], within_days: int) -> list[CredentialExpiry]:
    """Expiry of each named repository's credentials (every BackupRepository block if none named)."""
    names = repositories or _repository_block_names()
    now, within = datetime.now(UTC), timedelta(days=within_days)
    found = []
    for name in names:
        ref = resolve_repository(name)
        if isinstance(ref.storage, AzureSettings):
            expiry = ref.storage.sas_expires_at()
            kind = "SAS token" if expiry is not None else "Azure credentials"
        else:
            expiry, kind = None, "storage credentials"
        found.append(classify(name, ref.location, kind, expiry, now=now, within=within))
    return found


def publish_expiring(found: list[CredentialExpiry], within_days: int) -> None:
    """One `vaultflow.credentials.expiring` (or `.expired`) event per repository that needs action."""
    for item in found:
        if item.status not in ("expired", "expiring"):
            continue
        emit_event(
            event=f"vaultflow.credentials.{item.status}",
            resource={"prefect.resource.id": f"vaultflow.repository.{item.repository}",
                      "prefect.resource.name": item.repository, "vaultflow.location": item.location},
            payload={"kind": item.kind, "expires_at": item.expires_at.isoformat() if item.expires_at else None,
                     "within_days": within_days, "message": item.line()},
        )
