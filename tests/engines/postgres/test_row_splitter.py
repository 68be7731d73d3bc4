"""RowSplitter: consecutive runs of COPY rows, whatever the block boundaries."""

from __future__ import annotations

import pytest

from vaultflow.engines.base import RowTap
from vaultflow.engines.postgres.stats import RowSplitter

ROWS = [f"{i}\tvalue {i}\n".encode() for i in range(50)]


def _tap(rows: list[bytes]) -> RowTap:
    tap = RowTap()
    tap(b"".join(rows))
    return tap


@pytest.mark.parametrize("block_size", [1, 7, 13, 64, 10_000])
@pytest.mark.parametrize(("counts", "runs"), [
    ([], [50]),
    ([10, 30, 10], [10, 30, 10]),
    ([10, 0, 40], [10, 0, 40]),
    ([10, 20], [10, 20, 20]),  # rows beyond the counts go to one more run
    ([30, 30], [30, 20]),  # fewer rows than counted: the last run is short
])
def test_runs_hash_like_whole_reads(block_size: int, counts: list[int], runs: list[int]) -> None:
    data = b"".join(ROWS)
    split = RowSplitter(counts)
    for at in range(0, len(data), block_size):
        split(data[at:at + block_size])
    taps = [t for t in split.taps if t.rows] if not counts else split.taps[:len(runs)]
    start = 0
    for tap, n in zip(taps, runs, strict=True):
        want = _tap(ROWS[start:start + n])
        assert (tap.rows, tap.stats("s", "t")) == (want.rows, want.stats("s", "t"))
        start += n
    assert sum(t.rows for t in split.taps) == len(ROWS)
