"""The `check-credentials` flow: report storage credentials that expire soon, as events."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import Field

from tasks.credentials import check_repository_credentials, publish_expiring


@flow(name="check-credentials", validate_parameters=True)
def check_credentials(
    repositories: Annotated[list[str], Field(description="BackupRepository block names; all if empty")] = [],  # noqa: B006
    within_days: Annotated[int, Field(ge=0, le=3650, description="Report what expires within this many days")] = 14,
) -> list[dict[str, object]]:
    """Report each repository's credential expiry (Azure SAS tokens); emit `vaultflow.credentials.expiring`
    or `vaultflow.credentials.expired` for each that needs renewing, for an automation to alert on."""
    found = check_repository_credentials(repositories, within_days)
    publish_expiring(found, within_days)
    logger = get_run_logger()
    for item in found:
        (logger.warning if item.status in ("expired", "expiring") else logger.info)(item.line())
    create_table_artifact(key="vaultflow-credentials", table=[i.as_dict() for i in found] or [
        {"repository": "-", "status": "no repositories"}], description=f"Credential expiry (within {within_days} d)")
    return [i.as_dict() for i in found]
