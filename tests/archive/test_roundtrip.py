"""Archive, read with pandas, unarchive: per engine, against the real servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from tests.archive.cases import ArchiveCase, make_case, sample_rows
from vaultflow.archive import (
    ArchiveCatalog,
    ArchiveSpec,
    BatchStatus,
    archive_table,
    list_batches,
    read_batch,
    source_from_url,
    unarchive_batch,
)
from vaultflow.repository import Repository

N_OLD, N_NEW = 300, 40


def spec(**kw: object) -> ArchiveSpec:
    base: dict[str, object] = {"table": "events", "age_column": "created_at",
                               "cutoff": datetime.now(UTC) - timedelta(days=30), "batch_size": 64}
    base.update(kw)
    return ArchiveSpec(**base)  # type: ignore[arg-type]


def test_archive_read_unarchive_roundtrip(acase: ArchiveCase, repo: Repository) -> None:
    acase.create_table()
    acase.insert(sample_rows(N_OLD, N_NEW))
    before = acase.rows()
    catalog = ArchiveCatalog()

    report = archive_table(repo, acase.source, spec(), catalog=catalog)

    assert report.rows == N_OLD
    assert len(report.batches) == (N_OLD + 63) // 64
    after = acase.rows()
    assert after == before[N_OLD:], "exactly the aged rows left the source"
    records, orphans = list_batches(repo)
    assert not orphans and all(r.status == BatchStatus.ARCHIVED for r in records)
    assert sum(r.rows for r in records) == N_OLD
    assert [r.id for r in catalog.batches(repository_id=repo.id)] == [r.id for r in records]

    # identical values and types when read back, with pandas as well
    tables = [read_batch(repo, r) for r in records]
    archived = [tuple(row.values()) for t in tables for row in t.to_pylist()]
    assert archived == before[:N_OLD]
    frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    assert frame["id"].tolist() == list(range(1, N_OLD + 1))
    assert str(frame["id"].dtype) == "int64"
    assert tables[0].schema.field("payload").type == pa.binary()
    assert frame["payload"].iloc[0] == before[0][4]
    if acase.engine != "sqlite":
        assert pa.types.is_decimal(tables[0].schema.field("amount").type)
        assert frame["amount"].iloc[0] == Decimal("3.17")
        assert tables[0].schema.field("day").type == pa.date32()
    if acase.engine == "postgresql":
        assert tables[0].schema.field("created_at").type == pa.timestamp("us", tz="UTC")
        assert tables[0].schema.field("flag").type == pa.bool_()
        assert str(frame["created_at"].dtype).startswith("datetime64[us, UTC]")
    assert frame["note"].isna().sum() == sum(1 for r in before[:N_OLD] if r[3] is None)

    # a second run finds nothing more to archive
    assert archive_table(repo, acase.source, spec()).rows == 0

    restored = [unarchive_batch(repo, r, acase.source, catalog=catalog) for r in records]
    assert sum(x.inserted for x in restored) == N_OLD
    assert acase.rows() == before
    again = unarchive_batch(repo, records[0], acase.source)
    assert (again.inserted, again.skipped) == (0, 64), "rows already present are skipped"
    assert acase.rows() == before


def test_unarchive_into_another_database_and_table(acase: ArchiveCase, repo: Repository) -> None:
    acase.create_table()
    acase.insert(sample_rows(50, 5))
    before = acase.rows()
    archive_table(repo, acase.source, spec(batch_size=1000))
    (rec,), _ = list_batches(repo)
    acase.create_table("events_copy", url=acase.other_url)

    result = unarchive_batch(repo, rec, source_from_url(acase.other_url), table="events_copy")

    assert result.inserted == 50
    assert acase.rows("events_copy", url=acase.other_url) == before[:50]
    assert acase.rows() == before[50:]
    assert len(list_batches(repo)[0][0].restores) == 1


def test_dry_run_reports_rows_and_bytes_and_moves_nothing(acase: ArchiveCase, repo: Repository) -> None:
    acase.create_table()
    acase.insert(sample_rows(30, 10))
    report = archive_table(repo, acase.source, spec(), dry_run=True)
    assert report.rows == 30 and report.source_bytes > 0
    assert len(acase.rows()) == 40
    assert list_batches(repo) == ([], [])


def test_extra_filter_and_declared_unique_key(acase: ArchiveCase, repo: Repository) -> None:
    acase.create_table(key=False)
    acase.execute("CREATE UNIQUE INDEX events_id ON events (id)")
    acase.insert(sample_rows(40, 0))
    report = archive_table(repo, acase.source, spec(where="small < 21", key_columns=["id"]))
    assert report.rows == 20
    assert [r[0] for r in acase.rows()] == list(range(21, 41))


def test_composite_key_batches(acase: ArchiveCase, repo: Repository) -> None:
    acase.execute("CREATE TABLE pairs (a int NOT NULL, b varchar(20) NOT NULL, at date NOT NULL, v int, "
                  "PRIMARY KEY (a, b))")
    ph = "?" if acase.engine == "sqlite" else "%s"
    for a in range(1, 8):
        for b in ("x", "y", "z"):
            old = a != 4
            acase.execute(f"INSERT INTO pairs VALUES ({ph}, {ph}, {ph}, {ph})",
                          (a, b, "2020-05-01" if old else datetime.now(UTC).date().isoformat(), a * 10))
    report = archive_table(repo, acase.source, spec(table="pairs", age_column="at", batch_size=4))
    assert report.rows == 18 and len(report.batches) == 5
    assert [(r[0], r[1]) for r in acase.rows("pairs")] == [(4, "x"), (4, "y"), (4, "z")]
    records, _ = list_batches(repo)
    for r in records:
        unarchive_batch(repo, r, acase.source)
    assert len(acase.rows("pairs")) == 21


CROSS = [("postgresql", "sqlite"), ("sqlite", "postgresql"), ("mysql", "postgresql"), ("postgresql", "mysql")]


@pytest.mark.parametrize(("src", "dst"), CROSS)
def test_unarchive_into_another_engine(src: str, dst: str, repo: Repository, tmp_path: Path,
                                       request: pytest.FixtureRequest) -> None:
    for engine in (src, dst):
        request.getfixturevalue("mysql_available" if engine == "mysql" else "pg_available")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    source, target = make_case(src, tmp_path / "a"), make_case(dst, tmp_path / "b")
    try:
        source.create_table()
        source.insert(sample_rows(20, 0))
        before = source.rows()
        archive_table(repo, source.source, spec())
        target.create_table()
        (rec,), _ = list_batches(repo)
        result = unarchive_batch(repo, rec, target.source)
        assert result.inserted == 20
        got = target.rows()
        assert [r[0] for r in got] == [r[0] for r in before]
        assert [r[3] for r in got] == [r[3] for r in before]  # text
        assert [r[4] for r in got] == [r[4] for r in before]  # bytes
        as_utc = [r[1] if isinstance(r[1], str) else r[1].replace(tzinfo=None) if r[1].tzinfo is None
                  else r[1].astimezone(UTC).replace(tzinfo=None) for r in got]
        want = [r[1] if isinstance(r[1], str) else r[1].replace(tzinfo=None) if r[1].tzinfo is None
                else r[1].astimezone(UTC).replace(tzinfo=None) for r in before]
        if src != "sqlite" and dst != "sqlite":
            assert as_utc == want  # the same instants
    finally:
        source.cleanup()
        target.cleanup()


def test_filter_with_percent_sign(acase: ArchiveCase, repo: Repository) -> None:
    acase.create_table()
    acase.insert(sample_rows(30, 0))
    # ids 1, 11-14, 16-19 (10 and 15 have a NULL note)
    assert archive_table(repo, acase.source, spec(where="note LIKE 'note 1%'"), dry_run=True).rows == 9
    report = archive_table(repo, acase.source, spec(where="note LIKE 'note 1%'"))
    assert report.rows == 9
    assert all(not str(r[3]).startswith("note 1") for r in acase.rows())
