"""Physical base backups of a whole PostgreSQL cluster: `pg_basebackup -D - -Ft -X fetch` as one
tar stream, and what is read from it and from the server to place it in the WAL.

The tar on stdout holds the main data directory only (pg_basebackup refuses extra tablespaces
there, and so does `cluster_facts` before it starts), the WAL from the backup's start to its stop
under `pg_wal/` (`-X fetch`), `backup_label`, and pg_basebackup's `backup_manifest` (SHA-256 file
checksums and the WAL range), which it injects into the tar when writing to stdout.

Where the backup sits in the WAL comes from the backup itself: the start LSN and timeline from
`backup_label`, the stop LSN and timeline from `backup_manifest`'s last `WAL-Ranges` entry. The
stop *time* comes from the backup history file (`<segment>.<offset>.backup`) the server writes at
the stop and archives; its times are in the server's log_timezone with an abbreviation, so the
server itself turns them into timestamps (`server_timestamps`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import psycopg

from vaultflow.engines.postgres.dump import tool_failure
from vaultflow.engines.process import Deadline, ToolProcess
from vaultflow.errors import InputError, ToolFailed, ToolVersionMismatch

if TYPE_CHECKING:
    from vaultflow.engines.postgres.engine import PostgresEngine

BASE_STREAM = "base"
TAR_BLOCK = 512
KEPT_MEMBERS = frozenset({"backup_label", "backup_manifest", "tablespace_map"})
MAX_KEPT_MEMBER = 64 << 20  # backup_manifest: about 100 bytes per file of the cluster


def parse_lsn(text: str) -> int:
    """`16/B374D848` -> its 64-bit position; InputError for anything else."""
    high, sep, low = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise InputError(f"{text!r} is not a PostgreSQL LSN", "write it as PostgreSQL does, e.g. 0/3000060") from None


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_file_name(timeline: int, segno: int, segment_size: int) -> str:
    """The WAL file name of segment number `segno` (LSN // segment size) on `timeline`."""
    per_log = 0x1_0000_0000 // segment_size
    return f"{timeline:08X}{segno // per_log:08X}{segno % per_log:08X}"


def backup_history_file_name(start_lsn: int, timeline: int, segment_size: int) -> str:
    """`<start segment>.<offset in it, 8 hex>.backup`, as the server names the backup history file."""
    segment = segment_file_name(timeline, start_lsn // segment_size, segment_size)
    return f"{segment}.{start_lsn % segment_size:08X}.backup"


def parse_labelled_lines(text: str) -> dict[str, str]:
    """`KEY: value` lines of backup_label or a backup history file."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


class TarMemberTap:
    """Watches a tar stream go by, in blocks of any size (a ChunkWriter tap), and keeps the
    content of the top-level members named in `kept`; counts the members."""

    def __init__(self, kept: frozenset[str] = KEPT_MEMBERS) -> None:
        self.kept = kept
        self.members: dict[str, bytes] = {}
        self.count = 0
        self.ended = False
        self._header = bytearray()
        self._remaining = 0  # content bytes of the current member still to come
        self._padding = 0
        self._capture: bytearray | None = None
        self._name = ""

    def __call__(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(view) and not self.ended:
            if self._remaining:
                take = min(self._remaining, len(view) - pos)
                if self._capture is not None:
                    self._capture += view[pos:pos + take]
                self._remaining -= take
                pos += take
                if not self._remaining and self._capture is not None:
                    self.members[self._name] = bytes(self._capture)
                    self._capture = None
                continue
            if self._padding:
                take = min(self._padding, len(view) - pos)
                self._padding -= take
                pos += take
                continue
            take = min(TAR_BLOCK - len(self._header), len(view) - pos)
            self._header += view[pos:pos + take]
            pos += take
            if len(self._header) == TAR_BLOCK:
                self._start_member(bytes(self._header))
                self._header.clear()

    def _start_member(self, header: bytes) -> None:
        if header == bytes(TAR_BLOCK):
            self.ended = True
            return
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if header[257:262] == b"ustar" and header[345]:
            name = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") + "/" + name
        raw = header[124:136]
        size = int.from_bytes(raw[1:], "big") if raw[0] & 0x80 else int(raw.split(b"\0", 1)[0].strip() or b"0", 8)
        self.count += 1
        self._name = name.removeprefix("./")
        self._remaining = size
        self._padding = -size % TAR_BLOCK
        self._capture = bytearray() if self._name in self.kept and size <= MAX_KEPT_MEMBER else None
        if self._capture is not None and size == 0:
            self.members[self._name] = b""
            self._capture = None


@dataclass(frozen=True)
class ClusterFacts:
    """What is read from the server before a base backup: its identity, and its archiver's last file."""

    system_identifier: int
    timeline: int
    server_version: str
    wal_segment_size: int
    last_archived_wal: str | None


def settings_session(engine: PostgresEngine) -> psycopg.Connection[Any]:
    """A session on the maintenance database that reads text as text: in a SQL_ASCII database psycopg
    would hand back bytes, so the client encoding is set to UTF8."""
    c = engine._connect(engine.conn.maintenance_database)
    c.execute("SET client_encoding TO 'UTF8'")
    return c


def cluster_facts(engine: PostgresEngine) -> ClusterFacts:
    """The cluster's system identifier, timeline, version and WAL segment size. Refuses (one line) a
    standby and a cluster with tablespaces outside the data directory, which one tar on stdout
    cannot hold."""
    with settings_session(engine) as c:
        row = c.execute(
            "SELECT (SELECT system_identifier FROM pg_control_system()), "
            "(SELECT timeline_id FROM pg_control_checkpoint()), current_setting('server_version'), "
            "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), pg_is_in_recovery(), "
            "(SELECT last_archived_wal FROM pg_stat_archiver)").fetchone()
        spaces = [str(r[0]) for r in c.execute(
            "SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1")]
    assert row is not None
    if row[4]:
        raise InputError(f"PostgreSQL at {engine.server_label()} is a standby; base backups are taken from the "
                         "primary for now", "give the primary's address")
    if spaces:
        raise InputError(f"PostgreSQL at {engine.server_label()} has tablespaces outside the data directory "
                         f"({', '.join(spaces)}), which a base backup to one stream cannot hold yet",
                         "move them into pg_default (ALTER TABLE/INDEX ... SET TABLESPACE pg_default), or use "
                         "pg_basebackup -Fp for this cluster")
    return ClusterFacts(int(row[0]), int(row[1]), str(row[2]), int(row[3]),
                        str(row[5]) if row[5] is not None else None)


def basebackup_argv(engine: PostgresEngine, label: str) -> list[str]:
    """pg_basebackup writing one tar to stdout, with the WAL it needs fetched into it, after a
    fast checkpoint, with SHA-256 checksums in its backup_manifest. No password in argv."""
    return [engine._tool("pg_basebackup"), "--host", engine.conn.host, "--port", str(engine.conn.port),
            "--username", engine.conn.user, "--no-password", "--pgdata", "-", "--format", "tar",
            "--wal-method", "fetch", "--checkpoint", "fast", "--manifest-checksums", "SHA256", "--label", label]


@contextmanager
def base_backup_stream(engine: PostgresEngine, label: str, deadline: Deadline) -> Iterator[IO[bytes]]:
    """The tar stream of one base backup; leaving the context after its last byte raises if
    pg_basebackup failed (its error line, mapped like every tool's)."""
    argv = basebackup_argv(engine, label)
    with ToolProcess(argv, env=engine._tool_env(), stdout=subprocess.PIPE, timeout=deadline.remaining()) as proc:
        yield proc.stdout
        if proc.wait() != 0:
            raise tool_failure(engine, "pg_basebackup", proc, deadline)


@dataclass(frozen=True)
class WalPosition:
    """Where a base backup sits in the WAL, as the backup itself says."""

    start_lsn: int
    start_timeline: int
    stop_lsn: int
    stop_timeline: int
    start_time_text: str
    label: str


def position_of(members: dict[str, bytes], what: str) -> WalPosition:
    """Start from backup_label, stop from backup_manifest's last WAL range; ToolFailed naming
    `what` when either is missing or unreadable."""
    if members.get("tablespace_map", b"").strip():  # pg_basebackup asks for one; it is empty without tablespaces
        raise InputError(f"the base backup of {what} holds a tablespace_map", "move the tablespaces into pg_default")
    try:
        label = members["backup_label"].decode()
        fields = parse_labelled_lines(label)
        start = parse_lsn(fields["START WAL LOCATION"].split()[0])
        start_tli = int(fields["START TIMELINE"])
        ranges = json.loads(members["backup_manifest"])["WAL-Ranges"]
        last = ranges[-1]
        return WalPosition(start, start_tli, parse_lsn(str(last["End-LSN"])), int(last["Timeline"]),
                           fields["START TIME"], label)
    except (KeyError, IndexError, ValueError, TypeError, InputError) as exc:
        raise ToolFailed(f"the base backup of {what} has no readable backup_label or backup_manifest ({exc})",
                         "check pg_basebackup's version (15 or later writes both)") from None


def server_timestamps(engine: PostgresEngine, texts: list[str]) -> list[datetime]:
    """Times as the server wrote them (`2026-12-03 13:40:01 UTC`, in its log_timezone) turned into
    aware datetimes by the server, which knows its own zone abbreviations."""
    with settings_session(engine) as c:
        row = c.execute("SELECT " + ", ".join(["%s::timestamptz"] * len(texts)), texts).fetchone()
    assert row is not None
    return [datetime.fromisoformat(str(v)) if not isinstance(v, datetime) else v for v in row]


def server_now(engine: PostgresEngine) -> datetime:
    with settings_session(engine) as c:
        row = c.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


def check_tool_version(engine: PostgresEngine, facts: ClusterFacts) -> str:
    """pg_basebackup's version; ToolVersionMismatch when it is older than the server."""
    major, version = engine.tool_version("pg_basebackup")
    server_major = int(facts.server_version.split(".")[0])
    if major < server_major:
        raise ToolVersionMismatch(f"pg_basebackup {version} is older than the PostgreSQL {facts.server_version} "
                                  f"server at {engine.server_label()}",
                                  f"install postgresql-client-{server_major} or point bin_dir at it")
    return version
