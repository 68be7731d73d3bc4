"""MariaDB binlog files read event by event, without the server or mariadb-binlog: where each
transaction starts and ends, its GTID and commit time. `--to-position` checks its position here
and `--to-gtid` finds the end of its transaction here.

A binlog v4 file is the 4-byte magic, then events, each with a 19-byte header (timestamp 4,
type 1, server id 4, event length 4, next position 4, flags 2). MariaDB begins every
transaction and every DDL statement with a GTID event (type 162: sequence number 8, domain 4,
flags 1); a transaction ends with its XID event (16), an XA PREPARE (38) or a COMMIT/ROLLBACK
query event (2, for engines without XA); a standalone GTID (flag 1: DDL and other
non-transactional statements) ends with the one event after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from vaultflow.errors import InputError

MAGIC = b"\xfebin"
_HEADER = 19
_QUERY, _XID, _XA_PREPARE, _GTID = 2, 16, 38, 162
_STANDALONE = 0x01
_GTID_TEXT = re.compile(r"^(\d{1,10})-(\d{1,10})-(\d{1,20})$")


@dataclass(frozen=True, order=True)
class Gtid:
    """A MariaDB GTID domain-server-sequence."""

    domain: int
    server_id: int
    sequence: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.sequence}"


def parse_gtid(text: str) -> Gtid:
    """`D-S-N` as MariaDB writes it; InputError in one line otherwise."""
    found = _GTID_TEXT.match(text.strip())
    if not found:
        raise InputError(f"{text!r} is not a MariaDB GTID", "write it as domain-server-sequence, e.g. 0-1-1234 "
                                                             "(SELECT @@gtid_binlog_pos shows the newest)")
    domain, server_id, sequence = (int(g) for g in found.groups())
    if domain >= 1 << 32 or server_id >= 1 << 32 or sequence >= 1 << 64:
        raise InputError(f"GTID {text!r} is out of range", "write it as domain-server-sequence, e.g. 0-1-1234")
    return Gtid(domain, server_id, sequence)


def gtid_positions(text: str | None) -> dict[int, Gtid]:
    """A GTID position list ("0-1-5,1-1-2", as a dump records it) by domain."""
    found: dict[int, Gtid] = {}
    for part in (text or "").split(","):
        if part.strip():
            gtid = parse_gtid(part)
            found[gtid.domain] = gtid
    return found


@dataclass(frozen=True)
class Transaction:
    """One transaction (or DDL statement) of a binlog file: [start, end) and its commit time."""

    gtid: Gtid
    start: int
    end: int | None  # None: it does not end within the data (a partial file)
    committed_at: datetime


@dataclass(frozen=True)
class FileEvents:
    """The transactions of one binlog file, and where in it no transaction is open."""

    size: int  # bytes of whole events
    transactions: tuple[Transaction, ...]
    boundaries: frozenset[int]  # event positions (and the end) outside every transaction
    last_event_at: datetime | None  # the latest event time (a second's resolution), None without events

    def around(self, position: int) -> tuple[int | None, int | None]:
        """The nearest boundaries before and after `position`."""
        before = [b for b in self.boundaries if b < position]
        after = [b for b in self.boundaries if b > position]
        return (max(before) if before else None), (min(after) if after else None)


def read_events(data: bytes) -> FileEvents:
    """The transactions of a binlog file's bytes (a finished file or the start of a growing one)."""
    if not data.startswith(MAGIC):
        raise InputError("the archived object is not a binlog file (no binlog magic)", "check it with vaultflow verify")
    position, transactions, latest = 4, [], -1
    boundaries = {4}
    open_gtid: tuple[Gtid, int, bool] | None = None  # gtid, start, standalone
    while position + _HEADER <= len(data):
        length = int.from_bytes(data[position + 9:position + 13], "little")
        if length < _HEADER or position + length > len(data):
            break
        kind, when = data[position + 4], int.from_bytes(data[position:position + 4], "little")
        end = position + length
        latest = max(latest, when)
        if kind == _GTID and length >= _HEADER + 13:
            body = data[position + _HEADER:end]
            gtid = Gtid(int.from_bytes(body[8:12], "little"), int.from_bytes(data[position + 5:position + 9], "little"),
                        int.from_bytes(body[0:8], "little"))
            if open_gtid is not None:  # a transaction that never ended (a crash): it is not committed
                boundaries.add(position)
            open_gtid = (gtid, position, bool(body[12] & _STANDALONE))
        elif open_gtid is not None and (open_gtid[2] or kind in (_XID, _XA_PREPARE) or _ends_with_query(data, position,
                                                                                                          kind, end)):
            gtid, start, _ = open_gtid
            transactions.append(Transaction(gtid, start, end, datetime.fromtimestamp(when, UTC)))
            open_gtid = None
            boundaries.add(end)
        elif open_gtid is None:
            boundaries.add(end)
        position = end
    if open_gtid is not None:
        transactions.append(Transaction(open_gtid[0], open_gtid[1], None, datetime.fromtimestamp(0, UTC)))
    return FileEvents(position, tuple(transactions), frozenset(boundaries),
                      datetime.fromtimestamp(latest, UTC) if latest >= 0 else None)


def _ends_with_query(data: bytes, position: int, kind: int, end: int) -> bool:
    """A query event whose statement is COMMIT or ROLLBACK (the end of a non-XA transaction)."""
    if kind != _QUERY:
        return False
    body = position + _HEADER
    if end - body < 13:
        return False
    db_length = data[body + 8]
    status_length = int.from_bytes(data[body + 11:body + 13], "little")
    query = data[body + 13 + status_length + db_length + 1:end]
    return any(query.startswith(word) and len(query) <= len(word) + 4 for word in (b"COMMIT", b"ROLLBACK"))
