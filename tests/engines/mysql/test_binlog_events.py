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
from vaultflow.engines.mysql.binlog_replay import ReplayFilter, parse_binlog_position
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


_DECODED = b"""DELIMITER /*!*/;
# at 379
#261204 18:47:49 server id 11  end_log_pos 421 CRC32 0x372094f0 \tGTID 0-11-5 trans
/*M!100101 SET @@session.skip_parallel_replication=0*//*!*/;
/*M!100001 SET @@session.gtid_domain_id=0*//*!*/;
/*M!100001 SET @@session.gtid_seq_no=5*//*!*/;
START TRANSACTION
/*!*/;
# at 421
#261204 18:47:49 server id 11  end_log_pos 481 CRC32 0x30e48566 \tQuery\tthread_id=5
SET TIMESTAMP=1764874069/*!*/;
insert into t values ('
/*M!100001 SET @@session.gtid_seq_no=9*//*!*/;
')
/*!*/;
# at 603
#261204 18:47:50 server id 11  end_log_pos 645 CRC32 0x7c46f5ad \tGTID 0-11-6 trans
/*M!100001 SET @@session.gtid_seq_no=6*//*!*/;
START TRANSACTION
/*!*/;
# at 645
#261204 18:47:51 server id 11  end_log_pos 676 CRC32 0xb2b3ca6c \tXid = 22
COMMIT/*!*/;
DELIMITER ;
"""


@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_the_replay_filter_drops_only_the_gtid_sequence_lines_of_gtid_events(block: int) -> None:
    tap = ReplayFilter()
    out = b"".join(tap(_DECODED[i:i + block]) for i in range(0, len(_DECODED), block)) + tap.finish()
    assert b"gtid_seq_no=5" not in out and b"gtid_seq_no=6" not in out
    assert b"gtid_seq_no=9" in out, "a statement's text is left alone"
    assert out == _DECODED.replace(b"/*M!100001 SET @@session.gtid_seq_no=5*//*!*/;\n", b"").replace(
        b"/*M!100001 SET @@session.gtid_seq_no=6*//*!*/;\n", b"")
    assert tap.last_gtid == "0-11-6" and tap.last_event is not None and tap.last_event[1] == "676"
