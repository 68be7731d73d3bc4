"""Parquet conversion and the content checksum, without a database."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from vaultflow.archive.parquet import RowHasher, normalised_key, parquet_rows, parquet_table, rows_to_parquet
from vaultflow.archive.sources import Column
from vaultflow.errors import InputError

COLS = [Column("id", "bigint", "int64"), Column("d", "date", "date"), Column("t", "timestamptz", "timestamptz"),
        Column("n", "numeric(5,2)", "decimal:5:2"), Column("b", "bytea", "binary"), Column("f", "real", "float32"),
        Column("j", "jsonb", "string", as_text=True)]
ROWS = [(1, date(2020, 1, 2), datetime(2020, 1, 1, 5, tzinfo=timezone(timedelta(hours=2))), Decimal("1.5"),
         b"\x00\x01", 0.1, '{"a": 1}'),
        (2, None, None, None, None, None, None)]


def test_checksum_of_source_rows_equals_checksum_of_parquet_rows() -> None:
    back = parquet_rows(parquet_table(rows_to_parquet(COLS, ROWS, {})))
    assert back[0][2] == ROWS[0][2] and back[0][2].utcoffset() == timedelta(0)
    assert RowHasher(COLS).checksum(back) == RowHasher(COLS).checksum(ROWS)
    changed = [(*ROWS[0][:3], Decimal("1.51"), *ROWS[0][4:]), ROWS[1]]
    assert RowHasher(COLS).checksum(changed) != RowHasher(COLS).checksum(ROWS)


def test_normalised_keys_survive_json() -> None:
    key = normalised_key(COLS, range(len(COLS)), ROWS[0])
    assert json.loads(json.dumps(key)) == key
    back = parquet_rows(parquet_table(rows_to_parquet(COLS, ROWS, {})))
    assert normalised_key(COLS, range(len(COLS)), back[0]) == key


def test_value_that_does_not_fit_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="column 'n' .* does not fit"):
        rows_to_parquet(COLS, [(3, None, datetime.now(UTC), Decimal("1.234"), None, None, None)], {})
