"""MySQL/MariaDB dumps: one `mariadb-dump`/`mysqldump --single-transaction` SQL stream per
snapshot, with table statistics read from the stream itself as it passes (DumpStatsTap), so
they describe exactly the snapshot stored."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import blake3
import pymysql

from vaultflow.engines.base import DumpSession, StreamSource, table_glob_match
from vaultflow.engines.mysql.config import quote_identifier
from vaultflow.engines.process import ToolProcess
from vaultflow.errors import InputError, ToolFailed
from vaultflow.repository.manifest import BinlogPosition, StreamManifest, TableStats

if TYPE_CHECKING:
    from vaultflow.engines.mysql.engine import MySQLEngine

DUMP_FORMAT = "mysqldump-sql"  # one database as the SQL script mariadb-dump/mysqldump writes

_DUMP_FLAGS = (
    "--single-transaction", "--routines", "--triggers", "--events", "--hex-blob",
    # InnoDB scans in primary key order anyway; for other engines this keeps the row order,
    # and so the chunks of unchanged rows, stable between dumps.
    "--order-by-primary",
    # A multi-row INSERT ends every net_buffer_length bytes, so one changed row moves every
    # later statement boundary; 8 MiB statements (instead of 1 MiB) leave most chunks
    # without a boundary. Restoring needs max_allowed_packet > 8 MiB (MariaDB's default
    # is 16 MiB, MySQL 8's 64 MiB). Measured: 1% of a 30 MiB table changed in one range
    # re-stores 13-21% of the dump with this, 73% with the default (bench/mariadb_vs_dump.py).
    "--net-buffer-length=8M",
    "--skip-dump-date", "--default-character-set=utf8mb4", "--max-allowed-packet=1G", "--quick",
)


@contextmanager
def open_dump(
    engine: MySQLEngine, *, table_checksums: bool = True, timeout: float | None = None,
    include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
    parent_streams: list[StreamManifest] | None = None,
) -> Iterator[DumpSession]:
    """One source: the whole database as SQL from mariadb-dump --single-transaction.

    A view that cannot be read fails the backup before anything is stored: the dump
    tool would write it with database-qualified names that restore only under the same
    database name, and the view is unusable on the source already.
    """
    versions = engine.versions()
    skipped = _tables_without_rows(engine, include_tables, exclude_tables) if include_tables or exclude_tables else []
    with engine.connect(engine.conn.database) as c, c.cursor() as cur:
        cur.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, @@GLOBAL.log_bin "
                    "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (engine.conn.database,))
        row = cur.fetchone()
    assert row is not None
    broken = engine.broken_views()
    if broken:
        raise InputError(f"{engine.describe()} has a view that cannot be dumped: {'; '.join(broken)}",
                         "recreate the user, or fix the view (ALTER DEFINER=... VIEW, or drop it), then "
                         "back up again")
    # information_schema is not transactional: the inventory is read just before the dump.
    session = DumpSession(sources=[], versions=versions, inventory=engine.schema_inventory())

    # With log_bin on, the snapshot records its binlog position (MariaDB's mariadb-dump only).
    record_binlog = bool(int(row[2])) and engine._tool("mariadb-dump", "mysqldump").endswith("mariadb-dump")

    @contextmanager
    def open_stream() -> Iterator[IO[bytes]]:
        with dump_stream(engine, timeout, skipped, record_binlog=record_binlog) as stream:
            yield stream
        session.tables[:] = tap.stats()
        session.binlog = tap.binlog_position()
        if record_binlog and session.binlog is None:
            raise ToolFailed(f"the dump of {engine.describe()} holds no binlog position although log_bin is on",
                             "check the mariadb-dump version (--master-data=2), then back up again")

    tap = DumpStatsTap(hash_rows=table_checksums)
    session.sources.append(StreamSource("dump", DUMP_FORMAT, open_stream, tap=tap,
                                        meta={"charset": str(row[0]), "collation": str(row[1])}))
    yield session


def broken_views(engine: MySQLEngine) -> list[str]:
    """Views the dump tool cannot write portably, as "view `v` (reason)".

    SHOW FIELDS (no query runs) finds views on dropped tables or columns. A definer that
    no longer exists matters only for SQL SECURITY DEFINER views; it is looked up in
    mysql.user, or, where that is not readable, found by opening the view (LIMIT 0).
    """
    broken = []
    with engine.connect(engine.conn.database) as c, c.cursor() as cur:
        cur.execute("SELECT TABLE_NAME, DEFINER, SECURITY_TYPE FROM information_schema.VIEWS "
                    "WHERE TABLE_SCHEMA = %s ORDER BY 1", (engine.conn.database,))
        views = [(str(n), str(d), str(t)) for n, d, t in cur.fetchall()]
        if not views:
            return []
        accounts: set[tuple[str, str]] | None
        try:
            cur.execute("SELECT User, Host FROM mysql.user")
            accounts = {(str(u), str(h).lower()) for u, h in cur.fetchall()}
        except pymysql.MySQLError:
            accounts = None
        for name, definer, security in views:
            try:
                cur.execute(f"SHOW FIELDS FROM {quote_identifier(name)}")
                cur.fetchall()
                if security.upper() != "DEFINER":
                    continue
                if accounts is not None:
                    user, _, host = definer.rpartition("@") if "@" in definer else (definer, "", "")
                    if (user, host.lower()) not in accounts:
                        broken.append(f"view `{name}` (its definer {definer} no longer exists)")
                    continue
                cur.execute(f"SELECT * FROM {quote_identifier(name)} LIMIT 0")
                cur.fetchall()
            except pymysql.MySQLError as exc:
                code = exc.args[0] if exc.args else 0
                if code == 1449:
                    broken.append(f"view `{name}` (its definer {definer} no longer exists)")
                elif code in (1356, 1146, 1054):
                    broken.append(f"view `{name}` (it refers to a table, column or function that no longer "
                                  "exists, or its definer lacks rights)")
                else:
                    raise engine.map_error(exc, engine.conn.database) from None
    return broken


def _tables_without_rows(engine: MySQLEngine, include: list[str] | None, exclude: list[str] | None) -> list[str]:
    """The base tables whose rows a table subset leaves out (globs: `table`, or
    `database.table`); the schema of every table is still dumped."""
    with engine.connect(engine.conn.database) as c, c.cursor() as cur:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY 1", (engine.conn.database,))
        tables = [str(r[0]) for r in cur.fetchall()]
    db = engine.conn.database
    kept = {t for t in tables if (not include or any(table_glob_match(p, db, t) for p in include))
            and not any(table_glob_match(p, db, t) for p in exclude or [])}
    if not kept:
        raise InputError(f"no table of database {db!r} matches the include/exclude patterns",
                         "check the globs (table, or database.table)")
    skipped = [t for t in tables if t not in kept]
    # The dump tool matches --ignore-table-data names without regard to case.
    folded = {t.casefold() for t in skipped}
    clash = sorted(t for t in kept if t.casefold() in folded)
    if clash:
        raise InputError(f"table(s) {', '.join(clash)} of database {db!r} differ only in case from tables "
                         "left out, and the dump tool would leave out both",
                         "choose or leave out those tables together")
    return skipped


@contextmanager
def dump_stream(engine: MySQLEngine, timeout: float | None, skipped: list[str] | None = None, *,
                record_binlog: bool = False) -> Iterator[IO[bytes]]:
    """mariadb-dump's SQL of the database; `record_binlog` adds the commented binlog position
    (--master-data=2: file and position near the top, the GTID position at the end)."""
    tool = engine._tool("mariadb-dump", "mysqldump")
    if skipped and "--ignore-table-data" not in subprocess.run(
            [tool, "--help"], capture_output=True, text=True, check=False).stdout:
        raise InputError(f"{os.path.basename(tool)} cannot leave out table rows (no --ignore-table-data), "
                         f"so {engine.describe()} cannot be backed up with a table subset",
                         "use MariaDB's mariadb-dump (bin_dir), or drop --include-table/--exclude-table")
    with engine.option_file() as options:
        argv = [*engine.tool_argv(tool, options), *_DUMP_FLAGS, *(["--master-data=2"] if record_binlog else []),
                *(f"--ignore-table-data={engine.conn.database}.{t}" for t in skipped or []), engine.conn.database]
        with ToolProcess(argv, stdout=subprocess.PIPE, timeout=timeout) as proc:
            yield proc.stdout
            if proc.wait() != 0:
                raise engine.tool_failure(os.path.basename(tool), proc, timeout)


class DumpStatsTap:
    """Row count and checksum per base table, read from mariadb-dump/mysqldump SQL as it passes.

    Rows come only in `INSERT INTO `t` VALUES ...;` statements outside DELIMITER blocks
    (trigger and routine bodies); the dump escapes newlines inside values, so a statement
    ends at the first `);` that ends a line. MariaDB writes one row per line; MySQL writes
    a statement on one line, whose rows are counted by parsing the tuples. The checksum is
    the BLAKE3 of the table's row tuples as the tool writes them, in their order (primary
    key), whatever statements they were grouped in.

    It sees every byte of a dump, so rows are hashed and counted where they lie in the
    block, without copying them; only a partial line outside the rows is carried over.
    """

    _INSERT = re.compile(rb"INSERT INTO `((?:[^`]|``)+)` VALUES")
    _BINLOG = re.compile(rb"-- CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+);")
    _GTID = re.compile(rb"-- SET GLOBAL gtid_slave_pos='([^']*)';")
    _CREATE = re.compile(rb"CREATE TABLE `((?:[^`]|``)+)` \(")
    _ROW = re.compile(rb"\((?:[^'()]|'(?:[^'\\]|\\.)*')*\)", re.DOTALL)
    _END = b");\n"  # the end of an INSERT statement; `),\n` ends the rows before it
    _FALSE_ENDS = 16  # semicolons in values tried one by one before a plain search for _END

    def __init__(self, *, hash_rows: bool = True) -> None:
        self.hash_rows = hash_rows
        self._carry = b""  # a partial line outside INSERT rows
        self._in_body = False  # inside DELIMITER ;; ... DELIMITER ;
        self._table: str | None = None  # inside this table's INSERT statement
        self._one_line = False
        self._statement = bytearray()  # a one-line statement, kept whole to count its rows
        self._held = b""  # `)` or `);` at a block's end: maybe the start of the statement's end
        self._rows: dict[str, int] = {}
        self._hashes: dict[str, Any] = {}
        self._binlog: tuple[str, int] | None = None
        self._gtid: str | None = None

    def _start_table(self, name: str) -> None:
        self._rows.setdefault(name, 0)
        self._hashes.setdefault(name, blake3.blake3())

    def __call__(self, block: bytes) -> None:
        if self._carry:
            data, self._carry = self._carry + block, b""
        else:
            data = block
        pos = 0
        end_of_data = len(data)
        while pos < end_of_data:
            if self._table is not None:
                pos = self._one_line_rows(data, pos) if self._one_line else self._rows_lines(data, pos)
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                if not self._in_body and data.startswith(b"INSERT INTO `", pos):
                    m = self._INSERT.match(data, pos)
                    if m and m.end() < end_of_data:  # a one-line statement: no need to wait for its end
                        self._enter_insert(m, data)
                        continue
                break
            if data.startswith(b"DELIMITER ;", pos):
                line = data[pos:nl]
                if line == b"DELIMITER ;;":
                    self._in_body = True
                elif line == b"DELIMITER ;":
                    self._in_body = False
            elif data.startswith(b"-- ", pos) and not self._in_body:
                self._comment(data[pos:nl])
            elif not self._in_body and data.startswith(b"CREATE TABLE `", pos):
                m = self._CREATE.match(data, pos, nl)
                if m:
                    self._start_table(_unquote(m.group(1)))
            elif not self._in_body and data.startswith(b"INSERT INTO `", pos):
                m = self._INSERT.match(data, pos, nl)
                if m:
                    self._enter_insert(m, data)
                    if self._one_line:
                        continue  # the statement is this very line: read it as rows
            pos = nl + 1
        self._carry = data[pos:]

    def _comment(self, line: bytes) -> None:
        """--master-data=2 writes the binlog position as comments (file and position near the top,
        the GTID position after the data)."""
        if m := self._BINLOG.fullmatch(line):
            self._binlog = (m.group(1).decode(), int(m.group(2)))
        elif m := self._GTID.fullmatch(line):
            self._gtid = m.group(1).decode()

    def binlog_position(self) -> BinlogPosition | None:
        """The dump's binlog position, None when it wrote none (log_bin off)."""
        if self._binlog is None:
            return None
        return BinlogPosition(file=self._binlog[0], position=self._binlog[1], gtid=self._gtid or None)

    def _enter_insert(self, m: re.Match[bytes], data: bytes) -> None:
        name = _unquote(m.group(1))
        self._start_table(name)
        self._table = name
        self._one_line = data[m.end():m.end() + 1] != b"\n"

    def _rows_lines(self, data: bytes, pos: int) -> int:
        """Rows written one per line from data[pos:]; where the statement ended, or len(data)."""
        assert self._table is not None
        digest = self._hashes[self._table] if self.hash_rows else None
        held, self._held = self._held, b""
        if held:
            joined = held + data[pos:pos + 3 - len(held)]
            if joined == self._END:
                self._rows[self._table] += 1
                if digest is not None:
                    digest.update(b"),\n")  # `),` and `);` end a row alike: statement boundaries do not count
                self._table = None
                return pos + 3 - len(held)
            if self._END.startswith(joined):  # the data ended before telling
                self._held = joined
                return len(data)
            if digest is not None:
                digest.update(held)
        end = self._find_end(data, pos)
        if end >= 0:
            self._rows[self._table] += data.count(b"\n", pos, end) + 1
            if digest is not None:
                digest.update(memoryview(data)[pos:end])
                digest.update(b"),\n")
            self._table = None
            return end + 3
        stop = len(data)
        hold = 2 if data.endswith(b");") else 1 if data.endswith(b")") else 0
        hold = min(hold, stop - pos)
        self._rows[self._table] += data.count(b"\n", pos, stop - hold)
        if digest is not None:
            digest.update(memoryview(data)[pos:stop - hold])
        self._held = data[stop - hold:]
        return stop

    def _find_end(self, data: bytes, pos: int) -> int:
        """Index of the first `);\n` at or after pos, or -1: semicolons are rare in rows and
        found by memchr, so try them first; many in values fall back to the plain search."""
        at = pos
        for _ in range(self._FALSE_ENDS):
            semi = data.find(b";", at)
            if semi < 0:
                return -1
            if semi > pos and data[semi - 1] == 41 and data[semi + 1:semi + 2] == b"\n":  # ")" before, "\n" after
                return semi - 1
            at = semi + 1
        return data.find(self._END, at - 1)

    def _one_line_rows(self, data: bytes, pos: int) -> int:
        """A one-line statement from data[pos:]; where it ended, or len(data)."""
        assert self._table is not None
        statement = self._statement
        before = len(statement)
        statement += data[pos:]
        end = statement.find(self._END, max(before - 2, 0))
        if end < 0:
            return len(data)
        del statement[end + 3:]
        self._rows[self._table] += len(self._ROW.findall(statement))
        if self.hash_rows:
            values = statement[statement.index(b" VALUES ") + 8:-2]
            self._hashes[self._table].update(values + b",")
        statement.clear()
        self._table = None
        return pos + end + 3 - before

    def stats(self) -> list[TableStats]:
        return sorted((TableStats(schema="", name=name, rows=rows,
                                  checksum="sql-b3:" + self._hashes[name].hexdigest() if self.hash_rows else None)
                       for name, rows in self._rows.items()), key=lambda t: t.name)


def _unquote(name: bytes) -> str:
    return name.replace(b"``", b"`").decode("utf-8", "replace")
