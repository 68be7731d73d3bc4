"""MySQL and MariaDB: `mariadb-dump`/`mysqldump --single-transaction` streamed, the client restores it.

Discovery and checks go through pymysql. The dump is one SQL stream; its table
statistics are read from the stream itself as it passes (see DumpStatsTap), so they
describe exactly the snapshot stored. The password reaches the tools only through a
0600 option file given as --defaults-extra-file, never argv or the environment.
"""

from __future__ import annotations

import io
import logging
import os
import re
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar
from urllib.parse import quote

import blake3
import pymysql

from vaultflow.engines.base import (
    GLOBALS_STREAM,
    DumpSession,
    RestoreObserver,
    ServerEngine,
    SqlAlchemyTarget,
    StreamReader,
    StreamSource,
    table_glob_match,
)
from vaultflow.engines.mysql.config import MySQLConnection
from vaultflow.engines.process import ToolProcess
from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    InputError,
    TargetNotEmpty,
    ToolFailed,
    ToolVersionMismatch,
    TransientError,
    VaultflowError,
)
from vaultflow.repository.manifest import ColumnProfile, SchemaInventory, StreamManifest, TableProfile, TableStats
from vaultflow.repository.repository import ByteSink

_log = logging.getLogger("vaultflow.mysql")

DUMP_FORMAT = "mysqldump-sql"  # one database as the SQL script mariadb-dump/mysqldump writes
GLOBALS_FORMAT = "mysql-accounts-sql"  # CREATE USER/ROLE and GRANT statements, one per line
SYSTEM_ACCOUNTS = ("mariadb.sys", "mysql.sys", "mysql.session", "mysql.infoschema")
SYSTEM_DATABASES = ("information_schema", "mysql", "performance_schema", "sys")
MIN_MYSQL = (5, 7)
MIN_MARIADB = (10, 4)

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

_USER_OBJECTS = """
SELECT (SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s)
     + (SELECT count(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s)
     + (SELECT count(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s)
"""

_FINGERPRINT_ENGINES = """
SELECT DISTINCT ENGINE FROM information_schema.TABLES
WHERE TABLE_SCHEMA = %s AND TABLE_TYPE <> 'VIEW' AND ENGINE IS NOT NULL
"""

_FINGERPRINT_DEFINITIONS = """
SELECT md5(concat_ws('|',
  (SELECT group_concat(concat_ws(':', TABLE_NAME, TABLE_TYPE, ENGINE, CREATE_TIME, TABLE_COLLATION, CREATE_OPTIONS)
                       ORDER BY TABLE_NAME SEPARATOR ',') FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s),
  (SELECT group_concat(concat_ws(':', TABLE_NAME, DEFINER, md5(VIEW_DEFINITION)) ORDER BY TABLE_NAME SEPARATOR ',')
   FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s),
  (SELECT group_concat(concat_ws(':', TRIGGER_NAME, CREATED, DEFINER, md5(ACTION_STATEMENT))
                       ORDER BY TRIGGER_NAME SEPARATOR ',') FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s),
  (SELECT group_concat(concat_ws(':', ROUTINE_TYPE, ROUTINE_NAME, LAST_ALTERED, DEFINER, md5(ROUTINE_DEFINITION))
                       ORDER BY ROUTINE_TYPE, ROUTINE_NAME SEPARATOR ',')
   FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s),
  (SELECT group_concat(concat_ws(':', EVENT_NAME, LAST_ALTERED, STATUS, DEFINER, md5(EVENT_DEFINITION))
                       ORDER BY EVENT_NAME SEPARATOR ',') FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s)))
"""


class MySQLClientConnection(pymysql.connections.Connection):  # type: ignore[misc]
    """pymysql's connection with a cheaper context for its default, opportunistic TLS.

    Given no TLS options, pymysql 1.2 offers TLS without verifying the server, and builds
    that context on every connect with ssl.create_default_context, which loads the system
    CA store that a CERT_NONE context never reads (0.1 to 0.2 s, most of a connection's
    cost). This is the same context without the store, built once.
    """

    _default_tls: ClassVar[ssl.SSLContext | None] = None

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if sslp:
            return super()._create_ssl_ctx(sslp)  # type: ignore[no-any-return]
        if MySQLClientConnection._default_tls is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
            MySQLClientConnection._default_tls = ctx
        return MySQLClientConnection._default_tls


class MySQLEngine(ServerEngine[MySQLConnection]):
    engine = "mysql"
    tool_fix = "install the MariaDB or MySQL client (Debian: mariadb-client) or set bin_dir"

    def __init__(self, conn: MySQLConnection) -> None:
        if conn.database.startswith("-"):
            raise InputError(f"database name {conn.database!r} starts with '-'", "rename the database")
        super().__init__(conn)

    # -- identity --------------------------------------------------------------------

    def describe(self) -> str:
        return f"MySQL database {self.conn.database!r} on {self.server_label()}"

    # -- connections -----------------------------------------------------------------

    def _connect(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        c = self.conn
        try:
            return MySQLClientConnection(
                host=c.host, port=c.port, user=c.user,
                password=c.password.get_secret_value() if c.password is not None else "",
                database=database, connect_timeout=c.connect_timeout, charset="utf8mb4", autocommit=True,
                program_name="vaultflow",
            )
        except pymysql.MySQLError as exc:
            raise self.map_error(exc, database or c.database) from None

    def map_error(self, exc: BaseException, database: str) -> VaultflowError:
        """A driver or client error as one vaultflow error; never echoes a password."""
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else _client_error_code(str(exc))
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        where = self.server_label()
        if code == 1045:
            return AuthenticationFailed(
                f"MySQL at {where} rejected the credentials of user {self.conn.user!r}",
                "check the password in the MySQLServer block",
            )
        if code == 1049:
            return DatabaseNotFound(f"database {database!r} does not exist on MySQL at {where}",
                                    "check the name (SHOW DATABASES lists them)")
        if code in (1044, 1142, 1227):
            return AuthenticationFailed(f"user {self.conn.user!r} lacks a privilege on MySQL at {where}: {text[:200]}",
                                        "grant it SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES (and for "
                                        "restores CREATE, DROP, INSERT...) on the database")
        if code in (2002, 2003, 2005, 2006, 2013, 1040, 1053, 1203):
            return ConnectionFailed(f"cannot connect to MySQL at {where} ({text.strip()[:160]})",
                                    "check that the server is running and the host and port are right")
        return VaultflowError(f"MySQL error on {where}/{database}: {text.strip()[:300]}")

    @contextmanager
    def _option_file(self) -> Iterator[str]:
        """A 0600 [client] option file with the login; removed when the tool is done."""
        spool_dir = os.environ.get("VAULTFLOW_SPOOL_DIR") or None
        fd, path = tempfile.mkstemp(prefix="vaultflow-my-", suffix=".cnf", dir=spool_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("[client]\n")
                f.write(f"user={_option_value(self.conn.user)}\n")
                if self.conn.password is not None:
                    f.write(f"password={_option_value(self.conn.password.get_secret_value())}\n")
            yield path
        finally:
            Path(path).unlink(missing_ok=True)

    def _tool_argv(self, tool: str, option_file: str) -> list[str]:
        # --defaults-extra-file must come first; the login (user, password) is in it.
        return [tool, f"--defaults-extra-file={option_file}", "--protocol=TCP",
                f"--host={self.conn.host}", f"--port={self.conn.port}"]

    # -- discovery and versions ------------------------------------------------------

    def list_databases(self) -> list[str]:
        """Every database but the server's own (information_schema, mysql, performance_schema, sys)."""
        with self._connect() as c, c.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1")
            names = [str(r[0]) for r in cur.fetchall()]
        return [n for n in names if n not in SYSTEM_DATABASES]

    def server_version(self) -> tuple[str, str]:
        """("mariadb" or "mysql", version)."""
        with self._connect() as c, c.cursor() as cur:
            cur.execute("SELECT VERSION()")
            row = cur.fetchone()
        raw = str(row[0]) if row else ""
        flavour = "mariadb" if "mariadb" in raw.lower() else "mysql"
        return flavour, raw.split("-", 1)[0]

    def versions(self) -> dict[str, str]:
        flavour, version = self.server_version()
        parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
        minimum = MIN_MARIADB if flavour == "mariadb" else MIN_MYSQL
        if parts < minimum:
            raise ToolVersionMismatch(
                f"{flavour} {version} at {self.server_label()} is older than the oldest supported "
                f"{'.'.join(map(str, minimum))}", "upgrade the server or back it up with its own tools")
        out = {f"{flavour}-server": version}
        for names in (("mariadb-dump", "mysqldump"), ("mariadb", "mysql")):
            path = self._tool(*names)
            run = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
            m = re.search(r"Ver [^,]*", run.stdout)
            if run.returncode != 0 or not m:
                raise ToolFailed(f"could not read the version of {path}", "check the installation")
            out[os.path.basename(path)] = m.group(0).strip()
        return out

    # -- statistics ------------------------------------------------------------------

    def fingerprint(self) -> str | None:
        """The InnoDB log sequence number plus a digest of the database's definitions.

        Every change to an InnoDB page (rows, auto-increment counters, InnoDB DDL) moves
        the server-wide LSN, which survives restarts; views, triggers, routines and events
        live outside InnoDB, so their definitions are hashed too. A database with any
        table of another engine (MyISAM, Aria, MEMORY) gets None: their writes move
        nothing cheap to read. The binary log position is not used: sessions with
        sql_log_bin=0 write around it.
        """
        with self._connect(self.conn.database) as c, c.cursor() as cur:
            try:
                cur.execute(_FINGERPRINT_ENGINES, (self.conn.database,))
                engines = {str(r[0]).lower() for r in cur.fetchall()}
                if engines - {"innodb"}:
                    return None
                lsn = _innodb_lsn(cur)
                if lsn is None:
                    return None
                cur.execute("SET SESSION group_concat_max_len = 1073741824")  # MySQL's default is 1024
                cur.execute(_FINGERPRINT_DEFINITIONS, (self.conn.database,) * 5)
                row = cur.fetchone()
            except pymysql.MySQLError as exc:
                raise self.map_error(exc, self.conn.database) from None
        return f"mysql:lsn={lsn}:defs={row[0] if row else ''}"

    def table_stats(self, *, like: list[TableStats] | None = None, checksums: bool = True) -> list[TableStats]:
        """Row count and checksum of every base table, read by running the backup's own dump.

        The checksum is the BLAKE3 of the table's row tuples as the dump tool writes them
        (primary key order), so a restored copy matches its snapshot's statistics.
        """
        tap = DumpStatsTap()
        with self._dump_stream(timeout=None) as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                tap(block)
        return tap.stats()

    # -- restore drills --------------------------------------------------------------

    def schema_inventory(self) -> SchemaInventory:
        """Tables, views, sequences, indexes (table.index), constraints and column profiles
        from information_schema; names without the database, as table statistics have them."""
        db = self.conn.database
        found: dict[str, list[str]] = {"tables": [], "views": [], "sequences": []}
        kinds = {"BASE TABLE": "tables", "SYSTEM VERSIONED": "tables", "VIEW": "views", "SEQUENCE": "sequences"}
        with self._connect() as c, c.cursor() as cur:
            cur.execute("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (db,))
            for name, kind in cur.fetchall():
                if kind in kinds:
                    found[kinds[kind]].append(str(name))
            cur.execute("SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART FROM "
                        "information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
                        "ORDER BY TABLE_NAME, INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX", (db,))
            indexes: dict[tuple[str, str], list[str]] = {}
            partial: set[tuple[str, str]] = set()
            unique: set[tuple[str, str]] = set()
            for table, index, non_unique, column, sub_part in cur.fetchall():
                key = (str(table), str(index))
                indexes.setdefault(key, []).append(str(column))
                if not int(non_unique):
                    unique.add(key)
                if sub_part is not None:
                    partial.add(key)  # a prefix index does not make the whole column unique
            cur.execute("SELECT TABLE_NAME, CONSTRAINT_NAME, CONSTRAINT_TYPE FROM "
                        "information_schema.TABLE_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s", (db,))
            constraints = sorted(f"{t}.{n} ({k})" for t, n, k in cur.fetchall())
            cur.execute("SELECT c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE FROM "
                        "information_schema.COLUMNS c JOIN information_schema.TABLES t ON "
                        "t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
                        "WHERE c.TABLE_SCHEMA = %s AND t.TABLE_TYPE = 'BASE TABLE' "
                        "ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION", (db,))
            columns: dict[str, list[ColumnProfile]] = {}
            for table, column, type_, nullable in cur.fetchall():
                columns.setdefault(str(table), []).append(
                    ColumnProfile(name=str(column), type=str(type_), nullable=nullable == "YES"))
        profiles = [TableProfile(schema="", name=table, columns=cols,
                                 unique_keys=[cols_ for (t, _), cols_ in indexes.items()
                                              if t == table and (t, _) in unique and (t, _) not in partial])
                    for table, cols in sorted(columns.items())]
        return SchemaInventory(tables=sorted(found["tables"]), views=sorted(found["views"]),
                               sequences=sorted(found["sequences"]),
                               indexes=sorted(f"{t}.{i}" for t, i in indexes), constraints=constraints,
                               profiles=profiles)

    def drop_database(self) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {_ident(self.conn.database)}")

    def sqlalchemy_target(self) -> SqlAlchemyTarget:
        c = self.conn
        kwargs: dict[str, object] = {"connect_args": {"password": c.password.get_secret_value()}} if c.password else {}
        url = f"mysql+pymysql://{quote(c.user, safe='')}@{c.host}:{c.port}/{quote(c.database, safe='')}"
        return SqlAlchemyTarget(url, engine_kwargs=kwargs, schemaless=True)

    # -- dump ------------------------------------------------------------------------

    def broken_views(self) -> list[str]:
        """Views the dump tool cannot write portably, as "view `v` (reason)".

        SHOW FIELDS (no query runs) finds views on dropped tables or columns. A definer that
        no longer exists matters only for SQL SECURITY DEFINER views; it is looked up in
        mysql.user, or, where that is not readable, found by opening the view (LIMIT 0).
        """
        broken = []
        with self._connect(self.conn.database) as c, c.cursor() as cur:
            cur.execute("SELECT TABLE_NAME, DEFINER, SECURITY_TYPE FROM information_schema.VIEWS "
                        "WHERE TABLE_SCHEMA = %s ORDER BY 1", (self.conn.database,))
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
                    cur.execute(f"SHOW FIELDS FROM {_ident(name)}")
                    cur.fetchall()
                    if security.upper() != "DEFINER":
                        continue
                    if accounts is not None:
                        user, _, host = definer.rpartition("@") if "@" in definer else (definer, "", "")
                        if (user, host.lower()) not in accounts:
                            broken.append(f"view `{name}` (its definer {definer} no longer exists)")
                        continue
                    cur.execute(f"SELECT * FROM {_ident(name)} LIMIT 0")
                    cur.fetchall()
                except pymysql.MySQLError as exc:
                    code = exc.args[0] if exc.args else 0
                    if code == 1449:
                        broken.append(f"view `{name}` (its definer {definer} no longer exists)")
                    elif code in (1356, 1146, 1054):
                        broken.append(f"view `{name}` (it refers to a table, column or function that no longer "
                                      "exists, or its definer lacks rights)")
                    else:
                        raise self.map_error(exc, self.conn.database) from None
        return broken

    @contextmanager
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        parent_streams: list[StreamManifest] | None = None,
    ) -> Iterator[DumpSession]:
        """One source: the whole database as SQL from mariadb-dump --single-transaction.

        A view that cannot be read fails the backup before anything is stored: the dump
        tool would write it with database-qualified names that restore only under the same
        database name, and the view is unusable on the source already.
        """
        versions = self.versions()
        skipped = self._tables_without_rows(include_tables, exclude_tables) if include_tables or exclude_tables else []
        with self._connect(self.conn.database) as c, c.cursor() as cur:
            cur.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                        "WHERE SCHEMA_NAME = %s", (self.conn.database,))
            row = cur.fetchone()
        assert row is not None
        broken = self.broken_views()
        if broken:
            raise InputError(f"{self.describe()} has a view that cannot be dumped: {'; '.join(broken)}",
                             "recreate the user, or fix the view (ALTER DEFINER=... VIEW, or drop it), then "
                             "back up again")
        # information_schema is not transactional: the inventory is read just before the dump.
        session = DumpSession(sources=[], versions=versions, inventory=self.schema_inventory())

        @contextmanager
        def open_stream() -> Iterator[IO[bytes]]:
            with self._dump_stream(timeout, skipped) as stream:
                yield stream
            session.tables[:] = tap.stats()

        tap = DumpStatsTap(hash_rows=table_checksums)
        session.sources.append(StreamSource("dump", DUMP_FORMAT, open_stream, tap=tap,
                                            meta={"charset": str(row[0]), "collation": str(row[1])}))
        yield session

    def _tables_without_rows(self, include: list[str] | None, exclude: list[str] | None) -> list[str]:
        """The base tables whose rows a table subset leaves out (globs: `table`, or
        `database.table`); the schema of every table is still dumped."""
        with self._connect(self.conn.database) as c, c.cursor() as cur:
            cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                        "AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY 1", (self.conn.database,))
            tables = [str(r[0]) for r in cur.fetchall()]
        db = self.conn.database
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
    def _dump_stream(self, timeout: float | None, skipped: list[str] | None = None) -> Iterator[IO[bytes]]:
        tool = self._tool("mariadb-dump", "mysqldump")
        if skipped and "--ignore-table-data" not in subprocess.run(
                [tool, "--help"], capture_output=True, text=True, check=False).stdout:
            raise InputError(f"{os.path.basename(tool)} cannot leave out table rows (no --ignore-table-data), "
                             f"so {self.describe()} cannot be backed up with a table subset",
                             "use MariaDB's mariadb-dump (bin_dir), or drop --include-table/--exclude-table")
        with self._option_file() as options:
            argv = [*self._tool_argv(tool, options), *_DUMP_FLAGS,
                    *(f"--ignore-table-data={self.conn.database}.{t}" for t in skipped or []), self.conn.database]
            with ToolProcess(argv, stdout=subprocess.PIPE, timeout=timeout) as proc:
                yield proc.stdout
                if proc.wait() != 0:
                    raise self._tool_failure(os.path.basename(tool), proc, timeout)

    def _tool_failure(self, tool: str, proc: ToolProcess, timeout: float | None) -> VaultflowError:
        if proc.timed_out:
            return TransientError(
                f"{tool} for {self.describe()} ran past its {timeout:.0f} s deadline and was killed",
                "raise the timeout or look at the server's load",
            )
        return self._tool_error(tool, proc.last_error_line())

    # -- server-wide objects ----------------------------------------------------------

    def account_statements(self, *, passwords: bool = False) -> list[str]:
        """CREATE USER/ROLE IF NOT EXISTS and GRANT statements of every account but the
        server's own, from SHOW CREATE USER and SHOW GRANTS; password hashes only if asked."""
        out: list[str] = []
        with self._connect() as c, c.cursor() as cur:
            try:
                try:
                    cur.execute("SELECT User, Host, is_role FROM mysql.user ORDER BY is_role DESC, User, Host")
                except pymysql.MySQLError:  # MySQL: roles are locked accounts
                    cur.execute("SELECT User, Host, 'N' FROM mysql.user ORDER BY User, Host")
                accounts = [(str(u), str(h), str(r) == "Y") for u, h, r in cur.fetchall()]
                for user, host, is_role in accounts:
                    if user in SYSTEM_ACCOUNTS or (user, host) == ("mysql", "localhost"):
                        continue
                    account = f"{_quote_text(user)}@{_quote_text(host)}"
                    if is_role:
                        out.append(f"CREATE ROLE IF NOT EXISTS {_quote_text(user)}")
                    else:
                        cur.execute(f"SHOW CREATE USER {account}")
                        row = cur.fetchone()
                        create = str(row[0]) if row else f"CREATE USER {account}"
                        out.append(_if_not_exists(create if passwords else strip_authentication(create)))
                    cur.execute(f"SHOW GRANTS FOR {_quote_text(user) if is_role else account}")
                    out.extend(strip_authentication(str(r[0])) for r in cur.fetchall())
            except pymysql.MySQLError as exc:
                raise self.map_error(exc, "mysql") from None
        return [statement.replace("\n", " ") for statement in out]  # one statement per line

    def globals_source(self, *, passwords: bool = False) -> StreamSource:
        """Users, roles and their grants as SQL, one statement per line."""

        @contextmanager
        def open_accounts() -> Iterator[IO[bytes]]:
            text = "".join(f"{statement};\n" for statement in self.account_statements(passwords=passwords))
            yield io.BytesIO(text.encode())

        return StreamSource(GLOBALS_STREAM, GLOBALS_FORMAT, open_accounts, meta={"passwords": str(passwords).lower()})

    def restore_globals(self, stream: StreamManifest, read: StreamReader) -> None:
        """Run the statements; accounts that exist keep their password, grants are added."""
        if stream.format != GLOBALS_FORMAT:
            raise InputError(f"stream {stream.name!r} holds {stream.format}, not MySQL accounts",
                             "restore globals into a server of the snapshot's engine")
        buffer = io.BytesIO()
        read(stream, buffer)
        with self._connect() as c, c.cursor() as cur:
            for statement in buffer.getvalue().decode("utf-8").splitlines():
                if not statement.strip():
                    continue
                try:
                    cur.execute(statement.rstrip().rstrip(";"))
                except pymysql.MySQLError as exc:
                    if statement.startswith("GRANT PROXY ON "):  # needs a PROXY grant the restoring user may lack
                        _log.warning("%s: skipped %s (%s)", self.server_label(), statement.rstrip(";"), exc.args[-1])
                        continue
                    raise ToolFailed(f"restoring accounts on {self.server_label()} failed at "
                                     f"{statement.split(' IDENTIFIED')[0][:160]!r}: "
                                     f"{hide_authentication(str(exc.args[-1]), statement)}",
                                     "fix the account named there, then restore with --globals again") from None

    # -- restore ---------------------------------------------------------------------

    def _schema_info(self, name: str) -> tuple[str, str] | None:
        with self._connect() as c, c.cursor() as cur:
            cur.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                        "WHERE SCHEMA_NAME = %s", (name,))
            row = cur.fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def has_user_objects(self) -> bool:
        name = self.conn.database
        with self._connect() as c, c.cursor() as cur:
            cur.execute(_USER_OBJECTS, (name, name, name))
            row = cur.fetchone()
        return bool(row and row[0])

    def _admin(self, statement: str) -> None:
        with self._connect() as c, c.cursor() as cur:
            try:
                cur.execute(statement)
            except pymysql.MySQLError as exc:
                raise self.map_error(exc, self.conn.database) from None

    def _create(self, name: str, charset: tuple[str, str] | None) -> None:
        """CREATE DATABASE with this (character set, collation), or the server's default."""
        self._admin(f"CREATE DATABASE {_ident(name)}" if charset is None else
                    f"CREATE DATABASE {_ident(name)} CHARACTER SET {_ident(charset[0])} COLLATE {_ident(charset[1])}")

    def _drop_quietly(self, name: str) -> None:
        try:
            self._admin(f"DROP DATABASE IF EXISTS {_ident(name)}")
        except VaultflowError as exc:
            _log.warning("could not drop database %s on %s: %s", name, self.server_label(), exc.line())

    def restore(
        self, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
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
        self.versions()
        target = self.conn.database
        existing = self._schema_info(target)
        charset = existing or (None if server_locale else (stream.meta.get("charset", "utf8mb4"),
                                                           stream.meta.get("collation", "utf8mb4_general_ci")))
        non_empty = existing is not None and self.has_user_objects()
        if non_empty and not replace:
            raise TargetNotEmpty(f"database {target!r} on {self.server_label()} already has tables",
                                 "restore into a new database name, or pass --replace to replace it")
        if not non_empty:
            if existing is None:
                self._create(target, charset)
            try:
                self._load(target, stream, read, timeout, tables)
            except BaseException:
                self._drop_quietly(target)
                if existing is not None:
                    self._create(target, charset)  # it existed, empty: leave it so
                raise
            return
        staging = f"vf_restore_{os.urandom(6).hex()}_{target}"[:64]  # names its target for whoever finds it
        self._create(staging, charset)
        try:
            self._load(staging, stream, read, timeout, tables)
        except BaseException:
            self._drop_quietly(staging)
            raise
        try:
            self._admin(f"DROP DATABASE {_ident(target)}")
        except BaseException:
            self._drop_quietly(staging)  # the target is as it was
            raise
        try:
            self._create(target, charset)
            self._load(target, stream, read, timeout, tables)
        except VaultflowError as exc:
            raise type(exc)(f"{exc.what}; the previous content of {target!r} is gone, a complete restored copy is "
                            f"in database {staging!r}", "run the restore again, or use that copy") from None
        self._drop_quietly(staging)

    def _load(self, database: str, stream: StreamManifest, read: StreamReader, timeout: float | None,
              tables: list[str] | None = None) -> None:
        tool = self._tool("mariadb", "mysql")
        with self._option_file() as options:
            argv = [*self._tool_argv(tool, options), f"--connect-timeout={self.conn.connect_timeout}",
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
                    failure = self._tool_failure(os.path.basename(tool), proc, timeout)
                    raise type(failure)(f"restoring into database {database!r}: {failure.what}", failure.fix)


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


def _innodb_lsn(cur: Any) -> int | None:
    """The current InnoDB log sequence number: a status variable on MariaDB, parsed from
    SHOW ENGINE INNODB STATUS on MySQL (needs PROCESS); None if neither can be read."""
    cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_lsn_current'")
    row = cur.fetchone()
    if row:
        return int(row[1])
    try:
        cur.execute("SHOW ENGINE INNODB STATUS")
        status = cur.fetchone()
    except pymysql.MySQLError:
        return None
    m = re.search(r"Log sequence number\s+(\d+)", str(status[2]) if status else "")
    return int(m.group(1)) if m else None


_AUTHENTICATION = re.compile(
    r"\s+IDENTIFIED\s+(?:BY|WITH|VIA)\b(?:'(?:[^'\\]|\\.)*'|[^'])*?"
    r"(?=\s+(?:REQUIRE|WITH\s+(?:MAX_\w+|GRANT\s+OPTION|ADMIN\s+OPTION)|PASSWORD\s+EXPIRE|ACCOUNT|DEFAULT\s+ROLE)\b|$)",
    re.IGNORECASE)


def strip_authentication(statement: str) -> str:
    """The statement without its IDENTIFIED ... clause (password hash, plugin, auth string)."""
    return _AUTHENTICATION.sub("", statement)


_AUTH_LITERAL = re.compile(r"""\b(?:AS|USING|PASSWORD|BY)\s+('(?:[^'\\]|\\.)*'|0x[0-9A-Fa-f]+)""", re.IGNORECASE)


def hide_authentication(message: str, statement: str) -> str:
    """A server's error about `statement` without the statement's password hash or auth string.

    A syntax error quotes the statement from where parsing stopped ("near '...'"), which
    can be inside the IDENTIFIED clause; so that excerpt is dropped, and any literal of the
    clause the message still holds is masked.
    """
    _, identified, clause = statement.partition(" IDENTIFIED")
    if not identified:
        return message
    message = re.sub(r" near '.*' at line \d+", " near the account's authentication clause (not shown)", message,
                     flags=re.DOTALL)
    for literal in _AUTH_LITERAL.findall(clause):
        secret = literal.strip("'")
        if secret:
            message = message.replace(secret, "***")
    return message


def _if_not_exists(create: str) -> str:
    return re.sub(r"^CREATE USER\s+(?!IF NOT EXISTS)", "CREATE USER IF NOT EXISTS ", create, count=1)


def _quote_text(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _unquote(name: bytes) -> str:
    return name.replace(b"``", b"`").decode("utf-8", "replace")


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _option_value(value: str) -> str:
    """A value for a MySQL option file: quoted, with the escapes the file format defines."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _client_error_code(text: str) -> int:
    """The server or client error number in a tool's message, e.g. `ERROR 1045 (28000)` or `(2003)`."""
    m = re.search(r"(?:ERROR|Got error:)\s*(\d{4})", text)
    return int(m.group(1)) if m else 0
