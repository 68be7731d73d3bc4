"""Rows <-> Parquet, and the content checksum both sides of a batch are compared by.

The checksum is computed from values, not bytes: values are normalised by their column's
archive kind (decimals by numeric value, timestamps with a zone in UTC, float32 rounded to
single precision), and the batch checksum is BLAKE3 over the repr of every row in key
order. The same function runs on the rows read from the source and on the rows read back
from the stored Parquet file, so equal checksums mean equal content.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import blake3
import pyarrow as pa
import pyarrow.parquet as pq

from vaultflow.archive.sources import Column, Row
from vaultflow.errors import InputError

SCHEMA_META_KEY = b"vaultflow.columns"


def arrow_type(kind: str) -> pa.DataType:
    if kind.startswith("decimal:"):
        _, p, s = kind.split(":")
        precision, scale = int(p), int(s)
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    simple: dict[str, pa.DataType] = {
        "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(), "uint64": pa.uint64(),
        "float32": pa.float32(), "float64": pa.float64(), "string": pa.string(), "binary": pa.binary(),
        "bool": pa.bool_(), "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(), "time": pa.time64("us"),
    }
    return simple[kind]


def _float32(v: Any) -> float:
    return float(struct.unpack("f", struct.pack("f", float(v)))[0])


def _normaliser(kind: str) -> Callable[[Any], Any] | None:
    """How a value of this kind is made comparable across driver and Parquet; None: it already is."""
    if kind == "float32":
        return _float32
    if kind == "float64":
        return float  # SQLite hands back an int where a REAL column holds a whole number
    if kind.startswith("decimal:"):
        return lambda v: str(Decimal(v).normalize())
    if kind == "binary":
        return bytes
    if kind == "timestamptz":
        return lambda v: v.astimezone(UTC).isoformat()
    return None


class RowHasher:
    """Per-row hashes and the batch checksum for rows of the given columns."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self._fix = [(i, f) for i, c in enumerate(columns) if (f := _normaliser(c.kind)) is not None]

    def normalise(self, row: Row) -> tuple[Any, ...]:
        if not self._fix:
            return tuple(row)
        out = list(row)
        for i, f in self._fix:
            v = out[i]
            if v is not None:
                out[i] = f(v)
        return tuple(out)

    def row_hash(self, row: Row) -> bytes:
        return blake3.blake3(repr(self.normalise(row)).encode()).digest(length=16)

    def checksum(self, rows: Sequence[Row]) -> str:
        """BLAKE3 over the repr of every normalised row, newline-separated (repr escapes newlines)."""
        digest = blake3.blake3()
        for row in rows:
            digest.update(repr(self.normalise(row)).encode() + b"\n")
        return f"rows-b3:{len(rows)}:{digest.hexdigest()}"


def normalised_key(columns: Sequence[Column], positions: Sequence[int], row: Row) -> list[Any]:
    """A row's key as JSON-safe normalised values (how excluded rows are recorded)."""
    out: list[Any] = []
    for i in positions:
        v = row[i]
        f = _normaliser(columns[i].kind)
        n = v if v is None or f is None else f(v)
        if isinstance(n, bytes):
            n = n.hex()
        elif isinstance(n, datetime | date | time):
            n = n.isoformat()
        out.append(n)
    return out


def rows_to_parquet(columns: Sequence[Column], rows: Sequence[Row], meta: dict[str, str]) -> bytes:
    """A Parquet file (zstd) of `rows`, typed by the columns' kinds; InputError if a value does not fit."""
    arrays = []
    for i, col in enumerate(columns):
        try:
            arrays.append(pa.array([r[i] for r in rows], type=arrow_type(col.kind)))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise InputError(f"column {col.name!r} ({col.source_type}) holds a value that does not fit its type: "
                             f"{str(exc).splitlines()[0][:200]}",
                             "fix the value or exclude the rows with the policy's filter") from None
    described = [{"name": c.name, "source_type": c.source_type, "kind": c.kind, "as_text": c.as_text,
                  "generated": c.generated} for c in columns]
    schema = pa.schema([pa.field(c.name, arrow_type(c.kind)) for c in columns],
                       metadata={SCHEMA_META_KEY: json.dumps(described).encode(),
                                 **{k.encode(): v.encode() for k, v in meta.items()}})
    table = pa.Table.from_arrays(arrays, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def parquet_table(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def columns_of(table: pa.Table) -> list[Column]:
    meta = table.schema.metadata or {}
    return [Column(**c) for c in json.loads(meta[SCHEMA_META_KEY])]


def parquet_rows(table: pa.Table) -> list[Row]:
    cols = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return list(zip(*cols, strict=True)) if cols else []


def age_bounds(values: Sequence[Any]) -> tuple[str | None, str | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    lo, hi = min(present), max(present)
    return _iso(lo), _iso(hi)


def _iso(v: Any) -> str:
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    return str(v)
