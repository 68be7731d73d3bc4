"""A run killed at any step, rows changed meanwhile, concurrent writers, an unwritable repository:
source + archive always hold every original row exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.archive.cases import ArchiveCase, sample_rows
from tests.archive.test_roundtrip import spec
from tests.conftest import ROOT
from vaultflow.archive import BatchStatus, archive_table, list_batches, read_batch
from vaultflow.archive.sources import Row
from vaultflow.errors import StorageUnwritable
from vaultflow.repository import Repository

WORKER = """
import os, signal, sys
from datetime import UTC, datetime, timedelta
from vaultflow.archive import ArchiveSpec, archive_table, source_from_url
from vaultflow.repository import Repository
from vaultflow.storage import LocalStore

repo_path, url, point, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
repo = Repository.open(LocalStore(repo_path), os.environ["VAULTFLOW_PASSPHRASE"])
seen = []

def fault(p):
    if p == point:
        seen.append(p)
        if len(seen) == nth:
            os.kill(os.getpid(), signal.SIGKILL)

archive_table(repo, source_from_url(url), ArchiveSpec(table="events", age_column="created_at",
              cutoff=datetime.now(UTC) - timedelta(days=30), batch_size=32), fault=fault)
"""


def archived_rows(repo: Repository) -> list[Row]:
    records, _ = list_batches(repo)
    out: list[Row] = []
    for r in records:
        if r.status == BatchStatus.ARCHIVED:
            out += [tuple(x.values()) for x in read_batch(repo, r).to_pylist()]
    return out


def assert_exactly_once(before: list[Row], source: list[Row], archive: list[Row]) -> None:
    ids = Counter(r[0] for r in source + archive)
    assert [i for i, n in ids.items() if n > 1] == [], "no row may be in both places or archived twice"
    assert sorted(source + archive, key=lambda r: r[0]) == before


def kill_at(case: ArchiveCase, repo_path: Path, point: str, nth: int = 2) -> None:
    proc = subprocess.run([sys.executable, "-c", WORKER, str(repo_path), case.url, point, str(nth)],
                          cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=180)
    assert proc.returncode == -9, proc.stderr[-2000:]


@pytest.mark.parametrize("point", ["written", "verified", "deleting"])
def test_killed_run_then_rerun_holds_every_row_once(acase: ArchiveCase, repo: Repository, repo_path: Path,
                                                    point: str) -> None:
    acase.create_table()
    acase.insert(sample_rows(100, 10))
    before = acase.rows()

    kill_at(acase, repo_path, point)

    records, orphans = list_batches(repo)
    assert [r.status for r in records] == [BatchStatus.ARCHIVED] + (
        [BatchStatus.VERIFIED] if point != "written" else [])
    assert len(orphans) == (1 if point == "written" else 0)
    assert len(acase.rows()) == 110 - 32, "the killed batch's delete never committed"
    assert_exactly_once(before, acase.rows(), archived_rows(repo))  # a verified batch's rows are still in the source

    report = archive_table(repo, acase.source, spec(batch_size=32))

    assert report.reconciled == (1 if point != "written" else 0)
    assert all(r.status == BatchStatus.ARCHIVED for r in list_batches(repo)[0])
    assert acase.rows() == before[100:]
    assert_exactly_once(before, acase.rows(), archived_rows(repo))


def test_row_changed_after_verify_stays_in_source(acase: ArchiveCase, repo: Repository, repo_path: Path) -> None:
    acase.create_table()
    acase.insert(sample_rows(60, 0))
    kill_at(acase, repo_path, "verified", nth=1)
    acase.execute("UPDATE events SET note = 'changed' WHERE id = 5")
    before = acase.rows()

    report = archive_table(repo, acase.source, spec(batch_size=32, max_batches=0))  # reconcile only

    assert report.kept_changed == 1
    remaining = acase.rows()
    assert [r[0] for r in remaining[:1]] == [5] and remaining[0][3] == "changed"
    first = list_batches(repo)[0][0]
    assert first.excluded == [[5]] and first.rows == 31
    assert 5 not in [r["id"] for r in read_batch(repo, first).to_pylist()]
    assert_exactly_once(before, remaining, archived_rows(repo))

    archive_table(repo, acase.source, spec(batch_size=32))  # still aged: archived with its new value
    archived = archived_rows(repo)
    assert [r[3] for r in archived if r[0] == 5] == ["changed"]
    assert_exactly_once(before, acase.rows(), archived)


def test_concurrent_writes_during_archiving_lose_nothing(acase: ArchiveCase, repo: Repository) -> None:
    acase.create_table()
    acase.insert(sample_rows(200, 20))
    stop = threading.Event()
    inserted: list[int] = []
    updated: dict[int, str] = {}  # id -> the note of its last update that changed a row

    def writer() -> None:
        next_id = 10_000
        ph = "?" if acase.engine == "sqlite" else "%s"
        while not stop.is_set():
            # alternately an aged row (may be archived by this run) and a fresh one
            acase.insert(sample_rows(1, 0, start=next_id) if next_id % 2 else sample_rows(0, 1, start=next_id))
            inserted.append(next_id)
            # and an update of an aged row: it lands before the row is archived, or finds it gone
            target = 1 + (next_id * 37) % 200
            note = f"updated {next_id}"
            if acase.execute(f"UPDATE events SET note = {ph} WHERE id = {ph}", (note, target)):
                updated[target] = note
            next_id += 1
            time.sleep(0.005)

    t = threading.Thread(target=writer)
    t.start()
    try:
        while len(inserted) < 3:
            time.sleep(0.01)
        during = len(inserted)
        report = archive_table(repo, acase.source, spec(batch_size=8))
        during = len(inserted) - during
    finally:
        stop.set()
        t.join()
    source_ids = [r[0] for r in acase.rows()]
    archive_ids = [r[0] for r in archived_rows(repo)]
    assert report.rows == len(archive_ids)
    # SQLite has one writer at a time: its writer may wait out the whole (short) run.
    assert during > 0 or acase.engine == "sqlite", "the writer ran while the archive ran"
    assert sorted(source_ids + archive_ids) == list(range(1, 221)) + inserted
    assert all(i > 200 for i in source_ids), "every pre-existing aged row was archived"
    final = {r[0]: r[3] for r in acase.rows() + archived_rows(repo)}
    assert updated and all(final[i] == note for i, note in updated.items()), "no committed update was lost"


def test_unwritable_repository_mid_run_deletes_nothing_unverified(acase: ArchiveCase, repo: Repository) -> None:
    acase.create_table()
    acase.insert(sample_rows(100, 0))
    before = acase.rows()
    real_put = repo.store.put
    puts: list[str] = []

    def failing_put(key: str, data: bytes, *, sync: bool = True) -> None:
        if key.endswith("rows.parquet"):
            puts.append(key)
            if len(puts) >= 2:
                raise StorageUnwritable(f"storage refused {key}", "fix permissions")
        real_put(key, data, sync=sync)

    repo.store.put = failing_put  # type: ignore[method-assign]
    with pytest.raises(StorageUnwritable):
        archive_table(repo, acase.source, spec(batch_size=32))
    assert acase.rows() == before[32:], "only the verified first batch was deleted"
    repo.store.put = real_put  # type: ignore[method-assign]
    archive_table(repo, acase.source, spec(batch_size=32))
    assert_exactly_once(before, acase.rows(), archived_rows(repo))
    assert acase.rows() == []

