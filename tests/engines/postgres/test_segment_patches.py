"""PostgreSQL segment patches: a key-range segment in which few rows changed since its
base is stored as a patch on the base's chunks (vaultflow/engines/postgres/patches.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, pg_url
from tests.engines.postgres.test_segments import (
    exported_equals,
    restored_equals,
    run,
    segments,
    small_segments,
    source,
    sql,
)
from vaultflow.engines import engine_from_url
from vaultflow.engines.postgres import dump
from vaultflow.engines.postgres.stats import segment_width_of
from vaultflow.repository import Repository, SnapshotManifest
from vaultflow.repository.manifest import StreamManifest
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.usefixtures("pg_available")
__all__ = ["small_segments", "source"]  # fixtures shared with the segment tests


def _patched(m: SnapshotManifest, table: str = "big") -> dict[str, StreamManifest]:
    return {s.meta["segment"]: s for s in m.streams if s.meta.get("table") == table and "patch_bytes" in s.meta}


def test_scattered_changes_are_stored_as_patches_on_the_base(source: str, repo_path: Path, tmp_path: Path,
                                                             pg_database) -> None:  # type: ignore[no-untyped-def]
    """Rows changed here and there in a segment are stored as a patch on the segment's base;
    the base's chunks are referred to, not read from the database or stored again. Every
    snapshot still restores, exports and passes a drill on its own."""
    from vaultflow.drill.run import run_drill

    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    full = run(repo, source, "full")
    width = segment_width_of({t.name: t for t in full.tables}["big"])
    assert width is not None
    # Scattered updates (one row in 50), inserts into gaps, deletes, a key moved.
    sql(source, "DELETE FROM big WHERE id % 211 = 3",
        "UPDATE big SET body = 'scattered ' || id WHERE id % 50 = 7",
        "UPDATE big SET id = -5000 WHERE id = 4321",
        "INSERT INTO big SELECT g * 211 + 3, 'happy', now(), 'back' FROM generate_series(0, 20) g")
    inc = run(repo, source, "incremental")
    patched = _patched(inc)
    assert len(patched) >= len(segments(full)) - 1, sorted(patched)
    full_streams = {s.meta["segment"]: s for s in full.streams if s.meta.get("table") == "big"}
    for number, s in patched.items():  # the base is the full's segment, chunk for chunk
        assert s.chunks[int(s.meta["patch_chunks"]):] == full_streams[number].chunks
        assert int(s.meta["patch_bytes"]) < 0.2 * int(s.meta["base_bytes"])
    assert inc.added_size(full) < 0.1 * full.stored_size
    assert engine_from_url(source).table_stats(like=inc.tables) == inc.tables
    restored_equals(repo, inc, pg_url(pg_database(create=False)))

    # A second incremental patches the same base again (cumulatively); a differential too.
    sql(source, "UPDATE big SET mood = 'sad' WHERE id % 97 = 1", "DELETE FROM big WHERE id % 389 = 2")
    inc2 = run(repo, source, "incremental")
    diff = run(repo, source, "differential")
    for m in (inc2, diff):
        assert _patched(m) and all(s.meta["base_digest"] == full_streams[n].blake3 for n, s in _patched(m).items())
        assert engine_from_url(source).table_stats(like=m.tables) == m.tables
        restored_equals(repo, m, pg_url(pg_database(create=False)))
    report = run_drill(repo, inc2.id, engine_from_url(source))
    assert report.passed, [c.line() for c in report.failures()] or report.error

    exported_equals(repo, inc2, tmp_path / "dump.sql", pg_database())
    # the earlier snapshots still restore to their own times
    restored_equals(repo, inc, pg_url(pg_database(create=False)))


def test_a_heavily_changed_segment_is_read_whole_and_vacuum_full_reads_nothing(source: str, repo_path: Path,
                                                                               pg_database) -> None:  # type: ignore[no-untyped-def]
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    full = run(repo, source, "full")
    width = segment_width_of({t.name: t for t in full.tables}["big"])
    assert width is not None
    sql(source, f"UPDATE big SET body = 'most' WHERE id >= 0 AND id < {width} AND id % 3 <> 0")
    inc = run(repo, source, "incremental")
    whole = [s for s in inc.streams if s.meta.get("segment") == "0" and s.meta.get("table") == "big"]
    assert whole and "patch_bytes" not in whole[0].meta  # two thirds changed: read whole, a new base
    assert engine_from_url(source).table_stats(like=inc.tables) == inc.tables

    # VACUUM FULL moves every row but keeps its xmin: nothing is newer than the parent, the
    # counts are the same, so every segment carries over.
    sql(source, "VACUUM FULL big")
    inc2 = run(repo, source, "incremental")
    assert segments(inc2) == segments(inc)
    assert engine_from_url(source).table_stats(like=inc2.tables) == inc2.tables
    restored_equals(repo, inc2, pg_url(pg_database(create=False)))

    # Segment 0 now has a newer base than the others: each is patched against its own.
    sql(source, "UPDATE big SET body = 'sprinkled' WHERE id % 97 = 3")
    inc3 = run(repo, source, "incremental")
    patched = _patched(inc3)
    assert patched["0"].meta["base_digest"] == whole[0].blake3
    assert {s.meta["base_digest"] for n, s in patched.items() if n != "0"} <= {
        s.blake3 for s in full.streams if s.meta.get("table") == "big"}
    assert engine_from_url(source).table_stats(like=inc3.tables) == inc3.tables
    restored_equals(repo, inc3, pg_url(pg_database(create=False)))


def test_a_big_table_reads_its_changed_rows_with_a_second_scan(source: str, repo_path: Path, pg_database,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Above KEY_COLLECT_MAX_ROWS the changed rows come from a scan beside the segment
    scan instead of from collected keys; the patches are the same."""
    monkeypatch.setattr(dump, "KEY_COLLECT_MAX_ROWS", 0)
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    full = run(repo, source, "full")
    sql(source, "UPDATE big SET body = 'second scan' WHERE id % 61 = 5", "DELETE FROM big WHERE id % 401 = 9")
    inc = run(repo, source, "incremental")
    assert len(_patched(inc)) >= len(segments(full)) - 1
    assert engine_from_url(source).table_stats(like=inc.tables) == inc.tables
    restored_equals(repo, inc, pg_url(pg_database(create=False)))
