"""The binlog event reader on synthetic MariaDB binlog bytes (no server): transactions, their GTIDs and
ends, where positions are outside every transaction; GTID and position syntax; and a growing file's
partial with a size of six digits or more is read as a partial, not as a file of that number."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from vaultflow.engines.mysql.binlog import binlog_sources, push_binlog, push_partial_binlog
from vaultflow.engines.mysql.binlog_events import Gtid, gtid_positions, parse_gtid, read_events
from vaultflow.engines.mysql.binlog_replay import parse_binlog_position
from vaultflow.errors import InputError
from vaultflow.repository import Repository
from vaultflow.storage import LocalStore


def _event(out: bytearray, kind: int, body: bytes, when: int = 1_700_000_000, server_id: int = 7) -> None:
    size = 19 + len(body)
    out += struct.pack("<IBIIIH", when, kind, server_id, size, len(out) + size, 0) + body


def _gtid(sequence: int, domain: int = 0, standalone: bool = False) -> bytes:
    return struct.pack("<QIB", sequence, domain, 1 if standalone else 0) + b"\0" * 6


def _query(text: bytes) -> bytes:
    return struct.pack("<IIBHH", 1, 0, 4, 0, 0) + b"shop\0" + text + b"\xaa\xbb\xcc\xdd"  # a CRC32 after it


def _file() -> bytes:
    out = bytearray(b"\xfebin")
    _event(out, 15, b"\0" * 60)  # format description
    _event(out, 162, _gtid(5))  # a transaction: GTID, query BEGIN, rows, XID
    _event(out, 2, _query(b"BEGIN"))
    _event(out, 30, b"\0" * 20)
    _event(out, 16, b"\0" * 8, when=1_700_000_009)
    _event(out, 162, _gtid(1, domain=1, standalone=True))  # DDL: one query after its GTID
    _event(out, 2, _query(b"CREATE TABLE t (id int)"))
    _event(out, 162, _gtid(6))  # a MyISAM transaction: ends with a COMMIT query
    _event(out, 2, _query(b"BEGIN"))
    _event(out, 2, _query(b"COMMIT"))
    _event(out, 162, _gtid(7))  # begun, not ended (a growing file)
    _event(out, 2, _query(b"BEGIN"))
    return bytes(out)


def test_transactions_their_ends_and_the_positions_outside_them() -> None:
    data = _file()
    events = read_events(data)
    assert [str(t.gtid) for t in events.transactions] == ["0-7-5", "1-7-1", "0-7-6", "0-7-7"]
    first, ddl, myisam, open_one = events.transactions
    assert first.end == ddl.start and ddl.end == myisam.start and myisam.end == open_one.start
    assert open_one.end is None and events.size == len(data)
    assert first.committed_at.timestamp() == 1_700_000_009
    inside = first.start + 30
    assert inside not in events.boundaries and events.around(inside) == (first.start, first.end)
    assert {4, first.start, first.end, ddl.end, myisam.end} <= events.boundaries
    assert len(data) not in events.boundaries  # the open transaction's events are not a place to stop
    assert read_events(data[:-5]).size == open_one.start + 19 + len(_gtid(7))  # a cut event is not read


def test_gtid_and_position_syntax() -> None:
    assert parse_gtid("0-11-1234") == Gtid(0, 11, 1234) and str(Gtid(1, 2, 3)) == "1-2-3"
    assert gtid_positions("0-1-5,1-1-2") == {0: Gtid(0, 1, 5), 1: Gtid(1, 1, 2)}
    assert parse_binlog_position("Binlog.000012:4711") == ("binlog.000012", 4711)
    for bad in ("0-1", "a-b-c", "0-1-2-3", ""):
        with pytest.raises(InputError, match="is not a MariaDB GTID"):
            parse_gtid(bad)
    for bad in ("binlog:12", "binlog.000001", "binlog.000001:3", "binlog.000001:x"):
        with pytest.raises(InputError, match="is not a binlog position"):
            parse_binlog_position(bad)


def test_a_partial_of_a_million_bytes_is_a_partial_of_its_file(tmp_path: Path) -> None:
    Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    repo = Repository.open(LocalStore(tmp_path / "repo"), PASSPHRASE)
    first = tmp_path / "binlog.000001"
    first.write_bytes(_file())
    push_binlog(repo, "127.0.0.1:3999", first)
    big = bytearray(b"\xfebin")
    while len(big) < 1_200_000:
        _event(big, 30, b"\0" * 60_000)
    assert push_partial_binlog(repo, "127.0.0.1:3999", "binlog.000002", bytes(big)) == len(big)
    sources = binlog_sources(repo, "127.0.0.1:3999")
    assert [name for name, _ in sources] == ["binlog.000001", "binlog.000002"]
    assert sources[1][1].endswith(f"binlog.000002.partial.{len(big)}")
