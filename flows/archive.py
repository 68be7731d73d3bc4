"""Archival flows: `archive_rows`, `unarchive_rows`, `purge_archives`."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from blocks.archive import ArchiveRule
from tasks.archive import (
    archive_policy_rows,
    load_policy,
    publish_archive_summary,
    purge_policy_batches,
    saved_policy_names,
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


NO_POLICIES = "no saved ArchivePolicy blocks: nothing to {what}"


def _policies(policies: list[ArchiveRule], policy_blocks: list[str]) -> list[ArchiveRule]:
    """The policies named (inline and blocks), or every saved ArchivePolicy block if none is."""
    if not policies and not policy_blocks:
        policy_blocks = saved_policy_names()
    return [*policies, *(load_policy(name) for name in policy_blocks)]


@flow(name="archive-rows", validate_parameters=True)
def archive_rows(
    policies: Annotated[list[ArchiveRule], Field(description="Policies given inline")] = [],  # noqa: B006
    policy_blocks: Annotated[list[str], Field(description="Names of saved ArchivePolicy blocks")] = [],  # noqa: B006
    repository: RepositoryParam = None,
    dry_run: Annotated[bool, Field(description="Only report the rows and bytes each policy would move")] = False,
) -> list[dict[str, object]]:
    """Archive every enabled policy's aged rows to Parquet in the repository; verified before deleted.
    With no policy named, every saved ArchivePolicy block; with none saved, the run completes
    with a warning and an artifact saying so."""
    rules = [r for r in _policies(policies, policy_blocks) if r.enabled]
    if not rules and not policies and not policy_blocks:
        get_run_logger().warning(NO_POLICIES.format(what="archive"))
        publish_archive_summary("archive", [], [], [{"policy": "-", "note": NO_POLICIES.format(what="archive")}])
        return []
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
    """Delete archive batches older than delete_after_days; their records stay, marked purged.
    Without delete_after_days: each policy block named (every saved ArchivePolicy block if none
    is, only `policy`'s if given) purges with its own delete_after_days; one without it keeps its
    archives and is skipped with a note. No saved policy at all: completes, saying so."""
    logger = get_run_logger()
    jobs: list[tuple[int, str | None]] = []
    notes: list[dict[str, str]] = []
    names = list(policy_blocks)
    if delete_after_days is not None:
        jobs.append((delete_after_days, policy))
    elif not names:
        names = saved_policy_names()
        if policy is not None:
            names = [n for n in names if policy_slug(n) == policy_slug(policy)]
            if not names:
                raise ArchiveFailed(f"no saved ArchivePolicy block named {policy!r} to purge",
                                    "give delete_after_days, or save the policy as an ArchivePolicy block")
        if not names:
            logger.warning(NO_POLICIES.format(what="purge"))
            notes.append({"policy": "-", "note": NO_POLICIES.format(what="purge")})
    for name in names:
        rule = load_policy(name)
        if rule.delete_after_days is None:
            note = f"policy {name!r} has no delete_after_days: its archives are kept"
            logger.info(note)
            notes.append({"policy": name, "note": note})
            continue
        jobs.append((rule.delete_after_days, policy_slug(name)))
    rows = [purge_policy_batches(repository, days, pol, dry_run) for days, pol in jobs]
    publish_archive_summary("purge", rows, [], notes)
    return rows
