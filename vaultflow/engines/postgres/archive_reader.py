"""pg_dump custom archives as vaultflow stores and reads them: a fixed creation time in
their header (so an unchanged schema dumps to the same bytes), and a per-table snapshot
turned into one plain SQL script (`vaultflow export`)."""

from __future__ import annotations

import io
import json
import subprocess
import threading
from typing import IO, Any

from psycopg import sql

from vaultflow.engines.base import StreamReader
from vaultflow.engines.postgres import DATA_EXTRA_FORMAT, SCHEMA_FORMAT, TABLE_FORMAT
from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.patches import read_rows
from vaultflow.engines.process import ToolProcess
from vaultflow.errors import ToolFailed
from vaultflow.repository.manifest import StreamManifest


class ArchiveClock(io.RawIOBase):
    """A pg_dump custom archive with its creation time set to 2000-01-01 00:00:00.

    The time is the only part of the header that changes from run to run; without it, an
    unchanged schema dumps to the same bytes and its chunks are reused. pg_restore only
    prints it. Headers of an unknown layout pass through unchanged.
    """

    _FIXED_TIME = (0, 0, 0, 1, 0, 100, 0)  # sec, min, hour, mday, mon (0-based), year - 1900, isdst

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._head = b""
        self._started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._started:
            self._started = True
            head = b""
            while len(head) < 128:
                more = self._raw.read(128 - len(head))
                if not more:
                    break
                head += more
            self._head = _with_fixed_time(head, self._FIXED_TIME)
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(view))
        view[: len(data)] = data
        return len(data)


def _with_fixed_time(head: bytes, fixed: tuple[int, ...]) -> bytes:
    """Replace the creation time of a custom-format archive header (archive versions
    1.12 to 1.16: magic, version, int size, offset size, format, compression, then seven
    sign-and-magnitude ints of the creation time)."""
    if len(head) < 16 or not head.startswith(b"PGDMP") or head[5] != 1 or not 12 <= head[6] <= 16:
        return head
    int_size = head[8]
    pos = 11 + (1 if head[6] >= 15 else 1 + int_size)  # compression: one byte from 1.15, an int before
    end = pos + 7 * (1 + int_size)
    if int_size not in (4, 8) or len(head) < end:
        return head
    fields = b"".join(b"\x00" + value.to_bytes(int_size, "little") for value in fixed)
    return head[:pos] + fields + head[end:]


def export_plain_sql(streams: list[StreamManifest], read: StreamReader, out: IO[bytes],
                     bin_dir: str | None = None) -> None:
    """Write a per-table snapshot as one plain SQL script that `psql -f` restores.

    The schema's pre-data section, then each table's rows as a COPY block, then sequence
    values and large objects, then the post-data section (indexes, constraints, triggers,
    materialized view refreshes); pg_restore turns the archive streams into SQL.
    """
    from vaultflow.engines.postgres.engine import PostgresEngine  # the engine imports this module

    tool = PostgresEngine(PostgresConnection(bin_dir=bin_dir))._tool("pg_restore")
    schema = [s for s in streams if s.format == SCHEMA_FORMAT]
    extra = [s for s in streams if s.format == DATA_EXTRA_FORMAT]

    def to_sql(stream: StreamManifest, *flags: str) -> None:
        with ToolProcess([tool, "-f", "-", *flags], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
            failures: list[BaseException] = []
            feeder = threading.Thread(target=_feed_and_close, args=(read, stream, proc.stdin, failures), daemon=True)
            feeder.start()
            for block in iter(lambda: proc.stdout.read(1 << 20), b""):
                out.write(block)
            feeder.join()
            if failures:
                raise failures[0]
            if proc.wait() != 0:
                raise ToolFailed(f"pg_restore could not convert stream {stream.name!r} to SQL: "
                                 f"{proc.last_error_line()}")

    for s in schema:
        to_sql(s, "--section=pre-data")
    for s in streams:
        if s.format != TABLE_FORMAT:
            continue
        columns = json.loads(s.meta.get("columns", "[]"))
        header = sql.SQL("COPY {} ({}) FROM stdin;\n").format(
            sql.Identifier(s.meta["schema"], s.meta["table"]),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns)).as_string(None)
        out.write(header.encode())
        read_rows(read, s, out)
        out.write(b"\\.\n\n")
    for s in extra:
        to_sql(s)
    for s in schema:
        to_sql(s, "--section=post-data")
        for schema_name, name in json.loads(s.meta.get("refresh_matviews", "[]")):
            statement = sql.SQL("REFRESH MATERIALIZED VIEW {};\n").format(sql.Identifier(schema_name, name))
            out.write(statement.as_string(None).encode())


def _feed_and_close(read: StreamReader, stream: StreamManifest, sink: IO[bytes],
                    failures: list[BaseException]) -> None:
    try:
        read(stream, sink)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except BaseException as exc:  # handed to the reading thread, which raises it
        failures.append(exc)
    finally:
        try:
            sink.close()
        except OSError:
            pass
