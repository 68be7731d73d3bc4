"""Binlog retention and gaps through MySQL's LogArchive hook, on synthetic binlog files (no server)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import PASSPHRASE
from vaultflow.engines.mysql.binlog import push_binlog, push_partial_binlog
from vaultflow.engines.mysql.binlog_retention import BINLOG_ARCHIVE
from vaultflow.repository import Repository
from vaultflow.repository.manifest import BinlogPosition, SnapshotManifest
from vaultflow.storage import LocalStore

SERVER = "127.0.0.1:3999"


def _binlog(number: int, events: int = 3) -> bytes:
    """A binlog file of `events` whole events (19-byte v4 headers and a small body each)."""
    out = bytearray(b"\xfebin")
    for i in range(events):
        body = f"file {number} event {i}".encode()
        size = 19 + len(body)
        out += struct.pack("<IBIII H", 0, 2, 1, size, len(out) + size, 0) + body
    return bytes(out)


def _snapshot(letter: str, file_number: int) -> SnapshotManifest:
    now = datetime.now(UTC)
    return SnapshotManifest(id=letter * 32, chain=letter * 32, engine="mysql", server=SERVER, database="shop",
                            started_at=now, finished_at=now, hostname="h", vaultflow_version="0", streams=[],
                            binlog=BinlogPosition(file=f"binlog.{file_number:06d}", position=4))


def _names(keys: object) -> list[str]:
    return sorted(str(k).rpartition("/")[2] for k in keys)  # type: ignore[attr-defined]


def test_binlogs_before_the_oldest_kept_snapshot_go_partials_go_once_finished_and_a_missing_file_is_a_gap(
        tmp_path: Path) -> None:
    repo = Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    for number in range(1, 6):
        path = tmp_path / f"binlog.{number:06d}"
        path.write_bytes(_binlog(number))
        assert push_binlog(repo, SERVER, path)
    growing = _binlog(6, events=5)
    assert push_partial_binlog(repo, SERVER, "binlog.000006", growing[: len(growing) - 7]) > 0  # a cut last event
    first, second = _snapshot("a", 2), _snapshot("b", 4)

    none_kept = BINLOG_ARCHIVE.expendable(repo, [])
    assert none_kept.expendable == {} and "no kept snapshot" in none_kept.notes[0]
    assert _names(BINLOG_ARCHIVE.expendable(repo, [first, second]).expendable) == ["binlog.000001"]
    only_second = BINLOG_ARCHIVE.expendable(repo, [second]).expendable
    assert _names(only_second) == ["binlog.000001", "binlog.000002", "binlog.000003"]  # the partial of 6 stays
    for key in only_second:
        repo.store.delete(key)
    assert BINLOG_ARCHIVE.problems(repo, [second], deep=True) == []

    path = tmp_path / "binlog.000006"
    path.write_bytes(growing)
    push_binlog(repo, SERVER, path)  # the finished file supersedes its partial
    (partial,) = BINLOG_ARCHIVE.expendable(repo, [second]).expendable
    assert partial.rpartition("/")[2].startswith("binlog.000006.partial.")

    repo.store.delete(next(k for k in (i.key for i in repo.store.list("binlog/")) if k.endswith("binlog.000005")))
    (gap,) = BINLOG_ARCHIVE.problems(repo, [second], deep=False)
    assert gap.first == "binlog.000005" and "replay stops at the end of binlog.000004" in gap.message
