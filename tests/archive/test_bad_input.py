"""Every bad input is refused before anything is stored or deleted, with one clear line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.archive.cases import ArchiveCase, sample_rows
from tests.archive.test_roundtrip import spec
from vaultflow.archive import (
    archive_table,
    cutoff_from,
    list_batches,
    parse_age,
    purge_batches,
    source_from_url,
)
from vaultflow.errors import InputError
from vaultflow.repository import Repository


@pytest.mark.parametrize(("kw", "expected"), [
    ({"table": "nope"}, "table 'nope' in .* does not exist"),
    ({"age_column": "missing"}, "has no column 'missing'"),
    ({"age_column": "note"}, "column 'note' of .* not a date or timestamp"),
    ({"cutoff": datetime.now(UTC) + timedelta(days=1)}, "is in the future"),
    ({"key_columns": ["note"]}, "are not a unique key"),
    ({"batch_size": 0}, "batch size 0 is not positive"),
])
def test_bad_policy_is_refused_and_nothing_moves(acase: ArchiveCase, repo: Repository, kw: dict[str, object],
                                                 expected: str) -> None:
    acase.create_table()
    acase.insert(sample_rows(5, 0))
    with pytest.raises(InputError, match=expected) as info:
        archive_table(repo, acase.source, spec(**kw))
    assert "\n" not in info.value.line()
    assert len(acase.rows()) == 5
    assert list_batches(repo) == ([], [])


def test_table_without_primary_key_is_refused(acase: ArchiveCase, repo: Repository) -> None:
    acase.create_table(key=False)
    acase.insert(sample_rows(5, 0))
    with pytest.raises(InputError, match="has no primary key.*declare a unique key"):
        archive_table(repo, acase.source, spec())
    assert len(acase.rows()) == 5


def test_cutoff_and_age_parsing() -> None:
    assert parse_age("90d") == timedelta(days=90)
    assert parse_age("36h") == timedelta(hours=36)
    with pytest.raises(InputError, match="not a duration"):
        parse_age("ninety")
    with pytest.raises(InputError, match="in the future"):
        cutoff_from(parse_age("-1d"))
    with pytest.raises(InputError, match="in the future"):
        cutoff_from(before=datetime.now(UTC) + timedelta(hours=1))


@pytest.mark.parametrize("url", ["postgresql://u:secret@h/db", "mysql://root:secret@h/db"])
def test_password_in_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(InputError) as info:
        source_from_url(url)
    assert "secret" not in info.value.line()


def test_unsupported_scheme() -> None:
    with pytest.raises(InputError, match="unsupported database URL scheme"):
        source_from_url("mssql://sa@h/db")


def test_purge_deletes_old_batches_and_keeps_their_records(tmp_path: object, repo: Repository) -> None:
    from tests.archive.cases import SqliteCase

    case = SqliteCase(tmp_path)  # type: ignore[arg-type]
    case.create_table()
    case.insert(sample_rows(10, 0))
    archive_table(repo, case.source, spec(batch_size=4))
    assert purge_batches(repo, delete_after_days=30).purged == []
    report = purge_batches(repo, delete_after_days=0, dry_run=True)
    assert len(report.purged) == 3 and report.bytes_freed > 0
    report = purge_batches(repo, delete_after_days=0, now=datetime.now(UTC) + timedelta(seconds=1))
    assert len(report.purged) == 3
    records, orphans = list_batches(repo)
    assert [r.status.value for r in records] == ["purged"] * 3 and orphans == []
    assert all(r.purged_at is not None for r in records)
    with pytest.raises(InputError, match="was purged"):
        from vaultflow.archive import read_batch

        read_batch(repo, records[0])
