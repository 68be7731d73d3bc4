"""MySQL/MariaDB restores: the dump loaded through the mysql/mariadb client, through a
staging database when the target already holds tables."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from typing import TYPE_CHECKING

from vaultflow.engines.base import RestoreObserver, StreamReader
from vaultflow.engines.mysql.config import quote_identifier
from vaultflow.engines.mysql.dump import DUMP_FORMAT
from vaultflow.engines.process import ToolProcess
from vaultflow.errors import InputError, TargetNotEmpty, VaultflowError
from vaultflow.repository.manifest import StreamManifest
from vaultflow.repository.repository import ByteSink

if TYPE_CHECKING:
    from vaultflow.engines.mysql.engine import MySQLEngine

_log = logging.getLogger("vaultflow.mysql")


def restore_database(
    engine: MySQLEngine, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
    timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
    tables: list[str] | None = None, observer: RestoreObserver | None = None, server_locale: bool = False,
) -> None:
    """Load the dump through the mysql/mariadb client.

    MySQL cannot rename a database, and tables with triggers cannot move between
    databases, so there is no atomic swap. A missing or empty target is loaded directly
    and dropped (or emptied) again if the load fails. A non-empty target (with
    `replace`) is first restored into a staging database, which proves the snapshot
    loads on this server before the target is touched; then the target is dropped and
    loaded. If that second load fails the staging copy is kept and named in the error.
    Objects whose definer is missing on this server are created anyway (with a warning);
    `tables` keeps the rows of those tables only (every table, view, trigger and routine
    is still created); a new database gets the source's character set and collation
    unless `server_locale`; `no_owner` and `jobs` have no effect.
    """
    if [s.format for s in streams] != [DUMP_FORMAT]:
        raise InputError(f"a snapshot with {', '.join(sorted({s.format for s in streams}))} streams cannot be "
                         "restored into MySQL", "restore it into an engine of its own kind")
    stream = streams[0]
    engine.versions()
    target = engine.conn.database
    existing = engine._schema_info(target)
    charset = existing or (None if server_locale else (stream.meta.get("charset", "utf8mb4"),
                                                       stream.meta.get("collation", "utf8mb4_general_ci")))
    non_empty = existing is not None and engine.has_user_objects()
    if non_empty and not replace:
        raise TargetNotEmpty(f"database {target!r} on {engine.server_label()} already has tables",
                             "restore into a new database name, or pass --replace to replace it")
    if not non_empty:
        if existing is None:
            _create(engine, target, charset)
        try:
            _load(engine, target, stream, read, timeout, tables)
        except BaseException:
            _drop_quietly(engine, target)
            if existing is not None:
                _create(engine, target, charset)  # it existed, empty: leave it so
            raise
        return
    staging = f"vf_restore_{os.urandom(6).hex()}_{target}"[:64]  # names its target for whoever finds it
    _create(engine, staging, charset)
    try:
        _load(engine, staging, stream, read, timeout, tables)
    except BaseException:
        _drop_quietly(engine, staging)
        raise
    try:
        engine.execute(f"DROP DATABASE {quote_identifier(target)}")
    except BaseException:
        _drop_quietly(engine, staging)  # the target is as it was
        raise
    try:
        _create(engine, target, charset)
        _load(engine, target, stream, read, timeout, tables)
    except VaultflowError as exc:
        raise type(exc)(f"{exc.what}; the previous content of {target!r} is gone, a complete restored copy is "
                        f"in database {staging!r}", "run the restore again, or use that copy") from None
    _drop_quietly(engine, staging)


def _load(engine: MySQLEngine, database: str, stream: StreamManifest, read: StreamReader, timeout: float | None,
          tables: list[str] | None = None) -> None:
    tool = engine._tool("mariadb", "mysql")
    with engine.option_file() as options:
        argv = [*engine.tool_argv(tool, options), f"--connect-timeout={engine.conn.connect_timeout}",
                "--binary-mode", "--max-allowed-packet=1G",
                "--default-character-set=utf8mb4", database]
        with ToolProcess(argv, stdin=subprocess.PIPE, timeout=timeout) as proc:
            try:
                if tables is None:
                    read(stream, proc.stdin)
                else:
                    rows_of = RowSectionFilter(proc.stdin, tables)
                    read(stream, rows_of)
                    rows_of.flush()
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped early; its own error is reported below
            if proc.wait() != 0:
                failure = engine.tool_failure(os.path.basename(tool), proc, timeout)
                raise type(failure)(f"restoring into database {database!r}: {failure.what}", failure.fix)


def _create(engine: MySQLEngine, name: str, charset: tuple[str, str] | None) -> None:
    """CREATE DATABASE with this (character set, collation), or the server's default."""
    create = f"CREATE DATABASE {quote_identifier(name)}"
    engine.execute(create if charset is None else
                   f"{create} CHARACTER SET {quote_identifier(charset[0])} COLLATE {quote_identifier(charset[1])}")


def _drop_quietly(engine: MySQLEngine, name: str) -> None:
    try:
        engine.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")
    except VaultflowError as exc:
        _log.warning("could not drop database %s on %s: %s", name, engine.server_label(), exc.line())


class RowSectionFilter:
    """Passes a mariadb-dump/mysqldump stream on without the row sections of tables not in
    `keep`: from a line `LOCK TABLES `t` WRITE;` to the next line `UNLOCK TABLES;` (the
    tools put every table's INSERTs there, and escape newlines inside values, so such a
    line is never part of a value). Trigger, routine and event bodies, written verbatim
    between `DELIMITER ;;` and `DELIMITER ;`, are passed whole whatever lines they hold.
    Everything else, the schema above all, passes.
    """

    _LOCK = re.compile(rb"LOCK TABLES `((?:[^`]|``)+)` WRITE;\n")
    _UNLOCK = b"UNLOCK TABLES;\n"
    _BODY_START = b"DELIMITER ;;\n"
    _BODY_END = b"DELIMITER ;\n"
    _MAX_HELD = 1024  # a partial last line shorter than this is held back: it may be a marker

    def __init__(self, out: ByteSink, keep: list[str]) -> None:
        self._out = out
        self._keep = {name.encode() for name in keep}
        self._held = b""
        self._at_line_start = True
        self._skipping = False
        self._in_body = False

    def _next_line(self, data: bytes, pos: int, end: int, marker: bytes) -> int:
        """Where the next line starting with `marker` starts in data[pos:end] (pos is a line
        start), or -1."""
        if data.startswith(marker, pos):
            return pos
        found = data.find(b"\n" + marker, pos, end)
        return -1 if found < 0 else found + 1

    def write(self, block: bytes) -> int:
        data = self._held + block if self._held else block
        self._held = b""
        end = data.rfind(b"\n") + 1  # the complete lines are data[:end]
        if len(data) - end < self._MAX_HELD:
            self._held = data[end:]
        else:  # a long line: no marker, it goes with the current section
            end = len(data)
        pos = 0
        if not self._at_line_start:  # the rest of a line begun in an earlier block
            first = data.find(b"\n", 0, end)
            stop = end if first < 0 else first + 1
            self._emit(data, 0, stop)
            pos = stop
        while pos < end:
            if self._skipping or self._in_body:
                marker = self._UNLOCK if self._skipping else self._BODY_END
                at = self._next_line(data, pos, end, marker)
                if at < 0:
                    self._emit(data, pos, end)
                    break
                self._emit(data, pos, at + len(marker))
                pos = at + len(marker)
                self._skipping = self._in_body = False
                continue
            at = self._next_line(data, pos, end, b"LOCK TABLES `")
            body = self._next_line(data, pos, at if at >= 0 else end, self._BODY_START)
            if body >= 0:
                self._emit(data, pos, body + len(self._BODY_START))
                pos = body + len(self._BODY_START)
                self._in_body = True
                continue
            if at < 0:
                self._emit(data, pos, end)
                break
            m = self._LOCK.match(data, at, end)
            if m is None:  # a line that merely starts like one: it passes whole
                line_end = data.find(b"\n", at, end)
                stop = end if line_end < 0 else line_end + 1
                self._emit(data, pos, stop)
                pos = stop
                continue
            self._emit(data, pos, at)
            if m.group(1).replace(b"``", b"`") in self._keep:
                self._emit(data, at, m.end())
            else:
                self._skipping = True
            pos = m.end()
        if end:
            self._at_line_start = data[end - 1:end] == b"\n"
        return len(block)

    def flush(self) -> None:
        """Pass on a last line that has no newline (once every block is written)."""
        held, self._held = self._held, b""
        self._emit(held, 0, len(held))

    def _emit(self, data: bytes, start: int, stop: int) -> None:
        if stop > start and not self._skipping:
            self._out.write(data if start == 0 and stop == len(data) else data[start:stop])
