"""Archival flows: `archive_rows`, `unarchive_rows`, `purge_archives`."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from blocks.archive import ArchiveRule
from tasks.archive import (
    archive_policy_rows,
    load_policy,
    publish_archive_summary,
    purge_policy_batches,
    unarchive_one,
)
from vaultflow.archive import policy_slug
from vaultflow.errors import VaultflowError

RepositoryParam = Annotated[str | None, Field(description="BackupRepository block name or a local path; "
                                                          "VAULTFLOW_REPO if empty")]


class ArchiveFailed(VaultflowError):
    """One or more policies failed; the others ran."""


def _line(exc: BaseException) -> str:
    return exc.line() if isinstance(exc, VaultflowError) else f"{type(exc).__name__}: {exc}"


def _policies(policies: list[ArchiveRule], policy_blocks: list[str]) -> list[ArchiveRule]:
    return [*policies, *(load_policy(name) for name in policy_blocks)]


@flow(name="archive-rows", validate_parameters=True)
def archive_rows(
    policies: Annotated[list[ArchiveRule], Field(description="Policies given inline")] = [],  # noqa: B006
    policy_blocks: Annotated[list[str], Field(description="Names of saved ArchivePolicy blocks")] = [],  # noqa: B006
    repository: RepositoryParam = None,
    dry_run: Annotated[bool, Field(description="Only report the rows and bytes each policy would move")] = False,
) -> list[dict[str, object]]:
    """Archive every enabled policy's aged rows to Parquet in the repository; verified before deleted."""
    rules = [r for r in _policies(policies, policy_blocks) if r.enabled]
    done: list[dict[str, object]] = []
    failures: list[dict[str, str]] = []
    errors: list[Exception] = []
    for rule in rules:
        try:
            done.append(archive_policy_rows(rule, repository, dry_run))
        except Exception as exc:  # noqa: BLE001 - one policy's failure must not stop the others
            errors.append(exc)
            failures.append({"policy": rule.name or f"{rule.source}.{rule.table}", "source": rule.source,
                             "table": rule.table, "error": _line(exc)})
    publish_archive_summary("archive", done, failures)
    if len(rules) == 1 and errors:
        raise errors[0]
    if failures:
        raise ArchiveFailed(f"{len(failures)} of {len(rules)} archive policies failed: {failures[0]['error']}")
    return done


@flow(name="unarchive-rows", validate_parameters=True)
def unarchive_rows(
    batches: Annotated[list[str], Field(description="Archive batch ids (or unique prefixes)", min_length=1)],
    repository: RepositoryParam = None,
    into: Annotated[str | None, Field(description="Engine block or URL to insert into; default the source")] = None,
    into_table: Annotated[str | None, Field(description="Table to insert into; default the archived table")] = None,
) -> list[dict[str, object]]:
    """Put archived rows back, skipping rows whose key is already present."""
    rows = [unarchive_one(b, repository, into, into_table) for b in batches]
    publish_archive_summary("unarchive", rows, [])
    return rows


@flow(name="purge-archives", validate_parameters=True)
def purge_archives(
    repository: RepositoryParam = None,
    delete_after_days: Annotated[int | None, Field(ge=0, description="Purge batches older than this (all "
                                                                     "policies); or use policy_blocks")] = None,
    policy: Annotated[str | None, Field(description="Only this policy's batches")] = None,
    policy_blocks: Annotated[list[str], Field(description="Saved ArchivePolicy blocks: each purges with its own "
                                                          "delete_after_days")] = [],  # noqa: B006
    dry_run: Annotated[bool, Field(description="Only report what would be purged")] = False,
) -> list[dict[str, object]]:
    """Delete archive batches older than delete_after_days; their records stay, marked purged."""
    jobs: list[tuple[int, str | None]] = []
    if delete_after_days is not None:
        jobs.append((delete_after_days, policy))
    for name in policy_blocks:
        rule = load_policy(name)
        if rule.delete_after_days is not None:
            jobs.append((rule.delete_after_days, policy_slug(name)))
    if not jobs:
        raise ArchiveFailed("purge_archives has nothing to do",
                            "give delete_after_days, or ArchivePolicy blocks that set it")
    rows = [purge_policy_batches(repository, days, pol, dry_run) for days, pol in jobs]
    publish_archive_summary("purge", rows, [])
    return rows
