"""Segment patches: a key-range segment stored as its base bytes plus a small patch.

A segment (docs/design.md, "Table segments") whose rows changed only here and there is
not dumped again: the new snapshot stores the rows that changed since the segment's
*base* (the last snapshot that dumped the segment whole) as a patch, and refers to the
base's chunks as they are. The stream's bytes are `patch || base`; the patch comes first
so that a reader can apply it while the base streams past. Reading the stream through
`PatchedSink` yields exactly the rows a whole dump of the segment would have yielded, in
the same order, so restore, export and drills see no difference.

A patch is a list of splices on the base bytes, sorted by offset: at `offset`, drop
`delete` bytes of the base and emit `insert` bytes. Encoded as

    VFPATCH1\\n
    <offset> <delete> <len(insert)>\\n<insert>      (once per splice)
    END\\n

Everything here works on COPY text (one row per line, fields separated by tabs, tabs and
newlines inside values escaped), keyed by one integer column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import blake3
import numpy as np

from vaultflow.engines.base import COPY_CHECKSUM, BuiltPatch, StreamReader
from vaultflow.errors import IntegrityError
from vaultflow.repository.manifest import StreamManifest
from vaultflow.repository.repository import ByteSink

MAGIC = b"VFPATCH1\n"
_HASH_BLOCK = 4 << 20
END = b"END\n"


class Splice(NamedTuple):
    """At `offset` of the base, drop `delete` bytes and emit `insert`."""

    offset: int
    delete: int
    insert: bytes


@dataclass(frozen=True)
class CopyLines:
    """The rows of a COPY text buffer: where each line starts and ends (at its newline)
    and the integer key each holds in column `key_index`; keys strictly increase."""

    starts: np.ndarray
    ends: np.ndarray
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def copy_lines(buf: bytes | bytearray, key_index: int) -> CopyLines | None:
    """Index the lines of `buf` by their integer key, vectorised (no Python loop per row).

    None when the buffer is not what a key-ordered COPY of an integer key gives (a key
    that is not a plain decimal of at most 18 digits, keys out of order, a missing final
    newline): the caller then falls back to a whole dump.
    """
    if not buf:
        empty = np.zeros(0, dtype=np.int64)
        return CopyLines(empty, empty, empty)
    if not buf.endswith(b"\n"):
        return None
    raw = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    tabs = np.flatnonzero(raw == 9)
    if key_index == 0:
        field_starts = starts
    else:
        first_tab = np.searchsorted(tabs, starts)
        at = first_tab + key_index - 1
        if len(tabs) == 0 or at.max() >= len(tabs):
            return None
        field_starts = tabs[at] + 1
        if np.any(field_starts > ends):
            return None
    if len(tabs):
        nxt = np.searchsorted(tabs, field_starts)
        field_ends = np.minimum(np.where(nxt < len(tabs), tabs[np.minimum(nxt, len(tabs) - 1)], ends), ends)
    else:
        field_ends = ends
    negative = raw[field_starts] == ord("-")
    digits_from = field_starts + negative
    lengths = field_ends - digits_from
    if len(lengths) and (lengths.min() < 1 or lengths.max() > 18):
        return None
    keys = np.zeros(len(starts), dtype=np.int64)
    for d in range(int(lengths.max()) if len(lengths) else 0):
        live = lengths > d
        digit = raw[np.minimum(digits_from + d, len(raw) - 1)].astype(np.int64) - 48
        if np.any(live & ((digit < 0) | (digit > 9))):
            return None
        keys = np.where(live, keys * 10 + digit, keys)
    keys = np.where(negative, -keys, keys)
    if len(keys) > 1 and not np.all(keys[1:] > keys[:-1]):
        return None
    return CopyLines(starts, ends, keys)


@dataclass(frozen=True)
class SegmentPatch:
    """A built patch and what the patched segment holds."""

    patch: bytes
    rows: int
    edits: tuple[Splice, ...]
    base_rows: int

    @property
    def splices(self) -> int:
        return len(self.edits)


class BaseIndex(Protocol):
    """Finds rows of a base by key: `rows` is its row count; `locate` takes keys in
    increasing order and gives, for each, the offset of its row (or where it would go)
    and the row's length with its newline (0 when no row has that key)."""

    rows: int

    def locate(self, keys: np.ndarray) -> list[tuple[int, int]]: ...


class LineIndex:
    """A BaseIndex over every line of the base (copy_lines): any key column."""

    def __init__(self, base: bytes | bytearray, lines: CopyLines) -> None:
        self.size = len(base)
        self.lines = lines
        self.rows = len(lines)

    def locate(self, keys: np.ndarray) -> list[tuple[int, int]]:
        n = self.rows
        at = np.searchsorted(self.lines.keys, keys)
        out = []
        for key, j in zip(keys.tolist(), at.tolist(), strict=True):
            if j >= n:
                out.append((self.size, 0))
                continue
            start = int(self.lines.starts[j])
            found = int(self.lines.keys[j]) == key
            out.append((start, int(self.lines.ends[j]) + 1 - start if found else 0))
        return out


class KeyFirstScanner:
    """A BaseIndex for rows whose key is the first field, without indexing every line: a
    key's row is found with a forward byte search for `\\n<key>\\t` from the previous
    one (keys come in increasing order), widening the window while the row at its end
    still has a smaller key; a key with no row is placed by bisecting the window."""

    def __init__(self, base: bytes | bytearray, rows: int | None = None) -> None:
        """`rows`: the base's row count when it is known (else it is counted)."""
        self.base = base
        self.rows = base.count(b"\n") if rows is None else rows

    def _line_at_or_after(self, offset: int) -> int:
        if offset <= 0:
            return 0
        j = self.base.find(b"\n", offset - 1)
        return len(self.base) if j < 0 else j + 1

    def _key(self, start: int) -> int:
        return int(self.base[start:self.base.index(b"\t", start)])

    def _line_length(self, start: int) -> int:
        return self.base.index(b"\n", start) + 1 - start

    def _first_at_least(self, key: int, lo: int, hi: int) -> int:
        """The first line start in [lo, hi] whose key is >= `key` (hi if none); lo and hi
        are line starts (or the end)."""
        while lo < hi:
            if self._key(lo) >= key:
                return lo
            mid = self._line_at_or_after((lo + hi) // 2)
            if mid >= hi or mid == lo:
                lo = self._line_at_or_after(lo + 1)
            elif self._key(mid) < key:
                lo = self._line_at_or_after(mid + 1)
            else:
                hi = mid
        return hi

    def locate(self, keys: np.ndarray) -> list[tuple[int, int]]:
        base, size = self.base, len(self.base)
        last = self._key(base.rfind(b"\n", 0, size - 1) + 1) if size else None
        out = []
        pos = 0  # a line start; every key before it is smaller than the keys still to come
        for key in keys.tolist():
            if last is None or key > last:
                out.append((size, 0))
                continue
            if pos == 0 and base.startswith(b"%d\t" % key):
                out.append((0, self._line_length(0)))
                continue
            needle = b"\n%d\t" % key
            window = 1 << 16
            while True:
                j = base.find(needle, max(pos - 1, 0), pos + window)
                if j >= 0:
                    pos = j + 1
                    out.append((pos, base.index(b"\n", pos) + 1 - pos))
                    break
                hi = self._line_at_or_after(min(pos + window, size))
                if hi >= size or self._key(hi) > key:
                    pos = self._first_at_least(key, pos, hi)
                    found = pos < size and self._key(pos) == key
                    out.append((pos, self._line_length(pos) if found else 0))
                    break
                pos = hi
                window *= 4
        return out


def build_patch(base: bytes | bytearray, index: BaseIndex, changed: bytes, changed_lines: CopyLines,
                gone: np.ndarray | None = None) -> SegmentPatch:
    """Splices that turn `base` into base with every `changed` row put in its key's place
    (replacing the base row with that key, or inserted before the next greater key) and
    the base rows whose keys are in `gone` dropped."""
    # Keys come in increasing order, so the splices do too; at one offset an insert (of a
    # smaller key) comes before the replacement of the row that starts there.
    edits = []
    starts, ends = changed_lines.starts.tolist(), changed_lines.ends.tolist()
    for (offset, length), start, end in zip(index.locate(changed_lines.keys), starts, ends, strict=True):
        edits.append(Splice(offset, length, changed[start:end + 1]))
    inserted = sum(1 for e in edits if not e.delete)
    dropped = 0
    if gone is not None and len(gone):
        replaced = {e.offset for e in edits if e.delete}
        for offset, length in index.locate(np.sort(gone)):
            if length and offset not in replaced:  # else a changed row is taking its place
                edits.append(Splice(offset, length, b""))
                dropped += 1
        edits.sort(key=lambda e: (e.offset, e.delete > 0))
    parts = [MAGIC]
    for offset, delete, insert in edits:
        parts += (b"%d %d %d\n" % (offset, delete, len(insert)), insert)
    parts.append(END)
    return SegmentPatch(b"".join(parts), rows=index.rows + inserted - dropped, edits=tuple(edits),
                        base_rows=index.rows)


def patched_stats(base: bytes | bytearray, base_rows: int, edits: tuple[Splice, ...]) -> tuple[int, str]:
    """Row count and BLAKE3 (hex) of the patched rows, without building them: the count
    is the base's `base_rows` less the rows the splices drop plus those they insert."""
    hasher = blake3.blake3()
    # The pieces are small (a few KiB between splices): they are hashed in blocks of a few
    # MiB, as thousands of small update() calls cost more than copying them once.
    block = bytearray(_HASH_BLOCK)
    fill = 0

    def feed(piece: bytes | memoryview) -> None:
        nonlocal fill
        if fill + len(piece) > _HASH_BLOCK:
            hasher.update(memoryview(block)[:fill])
            fill = 0
            if len(piece) > _HASH_BLOCK:
                hasher.update(piece)
                return
        block[fill:fill + len(piece)] = piece
        fill += len(piece)

    view = memoryview(base)
    rows, pos = base_rows, 0
    for edit in edits:
        feed(view[pos:edit.offset])
        feed(edit.insert)
        rows += edit.insert.count(b"\n") - base.count(b"\n", edit.offset, edit.offset + edit.delete)
        pos = edit.offset + edit.delete
    feed(view[pos:])
    hasher.update(memoryview(block)[:fill])
    return rows, hasher.hexdigest()


def _damaged(what: str) -> IntegrityError:
    return IntegrityError(what, "the snapshot is damaged; restore another one")


def parse_patch(patch: bytes) -> list[Splice]:
    """The splices of an encoded patch; IntegrityError if it is malformed."""
    if not patch.startswith(MAGIC) or not patch.endswith(END):
        raise _damaged("a segment patch is malformed")
    splices = []
    pos = len(MAGIC)
    last = 0
    limit = len(patch) - len(END)
    while pos < limit:
        eol = patch.index(b"\n", pos)
        try:
            offset, delete, size = (int(x) for x in patch[pos:eol].split(b" "))
        except ValueError:
            raise _damaged("a segment patch is malformed") from None
        if offset < last or delete < 0 or size < 0 or eol + 1 + size > limit:
            raise _damaged("a segment patch is malformed")
        splices.append(Splice(offset, delete, patch[eol + 1:eol + 1 + size]))
        last = offset + delete
        pos = eol + 1 + size
    return splices


class PatchedSink:
    """A ByteSink that takes a patched segment's raw bytes (`patch || base`, the patch
    being `patch_bytes` long) and writes the patched rows to `sink`. Call `finish()`
    after the last byte."""

    def __init__(self, sink: ByteSink, patch_bytes: int) -> None:
        self._sink = sink
        self._patch_left = patch_bytes
        self._patch = bytearray()
        self._splices: list[Splice] = []
        self._next = 0
        self._pos = 0  # offset in the base of the next byte written
        self._skip = 0

    def write(self, data: bytes | bytearray, /) -> int:
        view = memoryview(data)
        if self._patch_left:
            take = min(self._patch_left, len(view))
            self._patch += view[:take]
            self._patch_left -= take
            view = view[take:]
            if not self._patch_left:
                self._splices = parse_patch(bytes(self._patch))
                self._patch = bytearray()
        i = 0
        size = len(view)
        while i < size:
            if self._skip:
                n = min(self._skip, size - i)
                i += n
                self._skip -= n
                continue
            here = self._pos + i
            if self._next < len(self._splices) and self._splices[self._next].offset < self._pos + size:
                splice = self._splices[self._next]
                if splice.offset < here:
                    raise _damaged("a segment patch does not fit its base")
                cut = splice.offset - self._pos
                if cut > i:
                    self._sink.write(bytes(view[i:cut]))
                if splice.insert:
                    self._sink.write(splice.insert)
                self._skip = splice.delete
                self._next += 1
                i = cut
                continue
            self._sink.write(bytes(view[i:]))
            i = size
        self._pos += size
        return len(data)

    def finish(self) -> None:
        """Emit what goes after the last base byte; IntegrityError if the patch and the
        base did not fit together."""
        if self._patch_left:
            raise _damaged("a segment patch is cut short")
        while self._next < len(self._splices):
            splice = self._splices[self._next]
            if splice.offset != self._pos or splice.delete:
                raise _damaged("a segment patch does not fit its base")
            self._sink.write(splice.insert)
            self._next += 1
        if self._skip:
            raise _damaged("a segment patch does not fit its base")


@dataclass(frozen=True)
class SegmentPatchPlan:
    """How the engine offers to store a changed segment as a patch on `base` (the parent's
    stream of that segment), a PatchOffer (engines/base.py): `build` gets the base's rows
    and returns the patch, or None when the segment must be read whole after all; `meta`
    overrides the source's meta of the patched stream."""

    base: StreamManifest
    build: Callable[[bytes | bytearray], SegmentPatch | None]
    meta: dict[str, str] = field(default_factory=dict)

    def base_stream(self) -> StreamManifest | None:
        return base_part(self.base)

    def patched(self, base: bytes | bytearray) -> BuiltPatch | None:
        """The patch and the statistics of the patched rows (those a whole read would
        record), counted apart from the builder's count: None where the two differ."""
        built = self.build(base)
        if built is None:
            return None
        count, hexdigest = patched_stats(base, built.base_rows, built.edits)
        if count != built.rows:
            return None
        return BuiltPatch(patch=built.patch, rows=count, checksum=f"{COPY_CHECKSUM}:{hexdigest}",
                          base_rows=built.base_rows, splices=built.splices)


def is_patched(meta: dict[str, str]) -> bool:
    return "patch_bytes" in meta


def base_part(stream: StreamManifest) -> StreamManifest | None:
    """The base of a segment stream, as a stream of its own: the whole stream when it is
    not patched, the chunks after its patch when it is. None when it records no BLAKE3
    digest (streams written before BLAKE3), which a patched stream needs."""
    if not is_patched(stream.meta):
        return stream if stream.blake3 is not None else None
    skip = int(stream.meta["patch_chunks"])
    return StreamManifest(name=stream.name, format=stream.format, size=int(stream.meta["base_bytes"]),
                          blake3=stream.meta["base_digest"], chunks=stream.chunks[skip:], meta={})


def read_rows(read: StreamReader, stream: StreamManifest, sink: ByteSink) -> None:
    """Write a table stream's rows to `sink`, applying its patch when it has one."""
    if not is_patched(stream.meta):
        read(stream, sink)
        return
    patched = PatchedSink(sink, int(stream.meta["patch_bytes"]))
    read(stream, patched)
    patched.finish()
