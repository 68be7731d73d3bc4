"""Segment patches (vaultflow/engines/segment_patch.py): built from a base and changed
rows, applied while the base streams past, they give exactly the rows of a whole dump."""

from __future__ import annotations

import random

import blake3
import numpy as np
import pytest

from vaultflow.engines.postgres.patches import (
    KeyFirstScanner,
    LineIndex,
    PatchedSink,
    build_patch,
    copy_lines,
    parse_patch,
    patched_stats,
)
from vaultflow.errors import IntegrityError


def _rows(data: dict[int, str], key_index: int) -> bytes:
    def line(k: int, v: str) -> str:
        fields = [v, str(k), "x\\ty"] if key_index == 1 else [str(k), v, "x\\ty"]
        return "\t".join(fields) + "\n"
    return "".join(line(k, data[k]) for k in sorted(data)).encode()


def _apply(raw: bytes, patch_bytes: int, block: int) -> bytes:
    out = bytearray()

    class Sink:
        def write(self, data: bytes, /) -> int:
            out.extend(data)
            return len(data)

    sink = PatchedSink(Sink(), patch_bytes)
    for i in range(0, len(raw), block):
        sink.write(raw[i:i + block])
    sink.finish()
    return bytes(out)


@pytest.mark.parametrize("key_index", [0, 1])
@pytest.mark.parametrize("seed", range(6))
def test_patch_applied_equals_whole_dump(seed: int, key_index: int) -> None:
    rnd = random.Random(seed)
    base = {k: f"v{k}" for k in sorted(rnd.sample(range(-500, 5000), 800))}
    now = dict(base)
    changed: dict[int, str] = {}
    for k in rnd.sample(sorted(base), 40):  # updates
        now[k] = changed[k] = f"new{k}-{rnd.random()}"
    for k in rnd.sample(range(-1000, 6000), 60):  # inserts, before the first key and after the last too
        if k not in base:
            now[k] = changed[k] = f"ins{k}"
    gone = [k for k in rnd.sample(sorted(base), 30) if k not in changed]
    for k in gone:
        del now[k]
    base_buf, changed_buf = _rows(base, key_index), _rows(changed, key_index)
    base_lines, changed_lines = copy_lines(base_buf, key_index), copy_lines(changed_buf, key_index)
    assert base_lines is not None and changed_lines is not None
    assert base_lines.keys.tolist() == sorted(base)
    indexes = [LineIndex(base_buf, base_lines)] + ([KeyFirstScanner(base_buf)] if key_index == 0 else [])
    expected = _rows(now, key_index)
    patches = set()
    for index in indexes:
        built = build_patch(base_buf, index, changed_buf, changed_lines, np.array(sorted(gone), dtype=np.int64))
        assert built.rows == len(now)
        patches.add(built.patch)
        for block in (1, 7, 4096, len(built.patch) + len(base_buf)):
            assert _apply(built.patch + base_buf, len(built.patch), block) == expected
        assert patched_stats(base_buf, len(base), built.edits) == (expected.count(b"\n"),
                                                                  blake3.blake3(expected).hexdigest())
    assert len(patches) == 1  # both indexes find the same places


def _dense_case(seed: int) -> tuple[bytes, dict[int, str], dict[int, str]]:
    """Long rows and dense keys: windows of the scanner hold few rows, keys go into gaps."""
    rnd = random.Random(seed)
    base = {k: "f" * rnd.randrange(10, 3000) for k in range(0, 20000, 2)}
    changed = {k: "new" for k in sorted(rnd.sample(range(-5, 20010), 3000))}
    return _rows(base, 0), base, changed


@pytest.mark.parametrize("seed", range(3))
def test_key_first_scanner_places_keys_in_gaps_and_past_its_windows(seed: int) -> None:
    base_buf, base, changed = _dense_case(seed)
    changed_buf = _rows(changed, 0)
    changed_lines = copy_lines(changed_buf, 0)
    assert changed_lines is not None
    built = build_patch(base_buf, KeyFirstScanner(base_buf), changed_buf, changed_lines)
    assert _apply(built.patch + base_buf, len(built.patch), 65536) == _rows({**base, **changed}, 0)


def test_empty_patch_and_empty_base() -> None:
    built = build_patch(b"", KeyFirstScanner(b""), b"5\ta\n", copy_lines(b"5\ta\n", 0))  # type: ignore[arg-type]
    assert _apply(built.patch, len(built.patch), 3) == b"5\ta\n"
    base = b"1\ta\n2\tb\n"
    nothing = build_patch(base, KeyFirstScanner(base), b"", copy_lines(b"", 0))  # type: ignore[arg-type]
    assert parse_patch(nothing.patch) == [] and _apply(nothing.patch + base, len(nothing.patch), 2) == base


@pytest.mark.parametrize("buf", [b"2\ta\n1\tb\n", b"1\ta\n1\tb\n", b"x\ta\n", b"1\ta", b"1234567890123456789\ta\n",
                                 b"\ta\n"])
def test_rows_that_are_not_key_ordered_integers_are_refused(buf: bytes) -> None:
    assert copy_lines(buf, 0) is None


def test_damaged_patch_is_refused() -> None:
    base = b"1\ta\n2\tb\n3\tc\n"
    built = build_patch(base, KeyFirstScanner(base), b"2\tB\n", copy_lines(b"2\tB\n", 0))  # type: ignore[arg-type]
    assert _apply(built.patch + base, len(built.patch), 5) == b"1\ta\n2\tB\n3\tc\n"
    with pytest.raises(IntegrityError):
        _apply(built.patch.replace(b"END", b"EN!") + base, len(built.patch), 5)
    with pytest.raises(IntegrityError):  # a splice past the end of the base
        _apply(built.patch + base[:4], len(built.patch), 5)
