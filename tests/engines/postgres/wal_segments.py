"""Synthetic WAL files for tests that need no server: a segment is its long page header plus
filler, which is all `vaultflow-wal` reads of it."""

from __future__ import annotations

import struct
from pathlib import Path

SEGMENT_SIZE = 1 << 20  # the smallest wal_segment_size: keeps these tests fast
PG15_MAGIC = 0xD110


def segment_name(timeline: int, segno: int, segment_size: int = SEGMENT_SIZE) -> str:
    per_log = 0x1_0000_0000 // segment_size
    return f"{timeline:08X}{segno // per_log:08X}{segno % per_log:08X}"


def segment_bytes(system_identifier: int, timeline: int, segno: int, *, fill: bytes = b"x",
                  segment_size: int = SEGMENT_SIZE) -> bytes:
    header = struct.pack("=HHIQI4xQII", PG15_MAGIC, 0x0002, timeline, segno * segment_size, 0,
                         system_identifier, segment_size, 8192)
    body = (fill * (segment_size // len(fill) + 1))[: segment_size - len(header)]
    return header + body


def fake_data_directory(root: Path, system_identifier: int) -> Path:
    """A directory with `global/pg_control` (its first 8 bytes: the system identifier) and `pg_wal/`."""
    (root / "global").mkdir(parents=True, exist_ok=True)
    (root / "pg_wal").mkdir(exist_ok=True)
    (root / "global" / "pg_control").write_bytes(struct.pack("=Q", system_identifier) + bytes(8184))
    return root
