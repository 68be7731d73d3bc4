"""MySQL and MariaDB: `mariadb-dump`/`mysqldump --single-transaction` streamed, the client restores it.

Discovery and checks go through pymysql. The engine holds the connection, the error
mapping, versions, the change fingerprint and the tool login; dumps, restores, table
statistics and accounts are in dump.py, restore.py, stats.py and accounts.py, as functions
of the engine. The password reaches the tools only through a 0600 option file given as
--defaults-extra-file, never argv or the environment.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import pymysql

from vaultflow.engines.base import (
    DumpSession,
    RestoreObserver,
    ServerEngine,
    SqlAlchemyTarget,
    StreamReader,
    StreamSource,
)
from vaultflow.engines.mysql import accounts, dump, stats
from vaultflow.engines.mysql.config import MySQLConnection, quote_identifier
from vaultflow.engines.mysql.restore import restore_database
from vaultflow.engines.process import ToolProcess
from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    InputError,
    ToolFailed,
    ToolVersionMismatch,
    TransientError,
    VaultflowError,
)
from vaultflow.repository.manifest import SchemaInventory, StreamManifest, TableStats

SYSTEM_DATABASES = ("information_schema", "mysql", "performance_schema", "sys")
MIN_MYSQL = (5, 7)
MIN_MARIADB = (10, 4)

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

    def connect(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
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
    def option_file(self) -> Iterator[str]:
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

    def tool_argv(self, tool: str, option_file: str) -> list[str]:
        # --defaults-extra-file must come first; the login (user, password) is in it.
        return [tool, f"--defaults-extra-file={option_file}", "--protocol=TCP",
                f"--host={self.conn.host}", f"--port={self.conn.port}"]

    def tool_failure(self, tool: str, proc: ToolProcess, timeout: float | None) -> VaultflowError:
        """The error of a dump or client run that failed: a killed run is transient."""
        if proc.timed_out:
            return TransientError(
                f"{tool} for {self.describe()} ran past its {timeout:.0f} s deadline and was killed",
                "raise the timeout or look at the server's load",
            )
        return self._tool_error(tool, proc.last_error_line())

    def execute(self, statement: str) -> None:
        """Run one statement outside any database, its error mapped."""
        with self.connect() as c, c.cursor() as cur:
            try:
                cur.execute(statement)
            except pymysql.MySQLError as exc:
                raise self.map_error(exc, self.conn.database) from None

    # -- discovery and versions ------------------------------------------------------

    def list_databases(self) -> list[str]:
        """Every database but the server's own (information_schema, mysql, performance_schema, sys)."""
        with self.connect() as c, c.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1")
            names = [str(r[0]) for r in cur.fetchall()]
        return [n for n in names if n not in SYSTEM_DATABASES]

    def server_version(self) -> tuple[str, str]:
        """("mariadb" or "mysql", version)."""
        with self.connect() as c, c.cursor() as cur:
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
        with self.connect(self.conn.database) as c, c.cursor() as cur:
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
        """Row count and checksum of every base table, read by running the backup's own dump."""
        return stats.table_stats(self, like=like, checksums=checksums)

    # -- restore drills --------------------------------------------------------------

    def schema_inventory(self) -> SchemaInventory:
        return stats.schema_inventory(self)

    def drop_database(self) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {quote_identifier(self.conn.database)}")

    def sqlalchemy_target(self) -> SqlAlchemyTarget:
        c = self.conn
        kwargs: dict[str, object] = {"connect_args": {"password": c.password.get_secret_value()}} if c.password else {}
        url = f"mysql+pymysql://{quote(c.user, safe='')}@{c.host}:{c.port}/{quote(c.database, safe='')}"
        return SqlAlchemyTarget(url, engine_kwargs=kwargs, schemaless=True)

    # -- dump ------------------------------------------------------------------------

    def broken_views(self) -> list[str]:
        """Views the dump tool cannot write portably, as "view `v` (reason)"."""
        return dump.broken_views(self)

    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        parent_streams: list[StreamManifest] | None = None,
    ) -> AbstractContextManager[DumpSession]:
        """One source: the whole database as SQL from mariadb-dump --single-transaction."""
        return dump.open_dump(self, table_checksums=table_checksums, timeout=timeout, include_tables=include_tables,
                              exclude_tables=exclude_tables, parent_streams=parent_streams)

    # -- server-wide objects ----------------------------------------------------------

    def account_statements(self, *, passwords: bool = False) -> list[str]:
        """CREATE USER/ROLE IF NOT EXISTS and GRANT statements of every account but the server's own."""
        return accounts.account_statements(self, passwords=passwords)

    def globals_source(self, *, passwords: bool = False) -> StreamSource:
        """Users, roles and their grants as SQL, one statement per line."""
        return accounts.globals_source(self, passwords=passwords)

    def restore_globals(self, stream: StreamManifest, read: StreamReader) -> None:
        """Run the statements; accounts that exist keep their password, grants are added."""
        accounts.restore_globals(self, stream, read)

    # -- restore ---------------------------------------------------------------------

    def _schema_info(self, name: str) -> tuple[str, str] | None:
        with self.connect() as c, c.cursor() as cur:
            cur.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                        "WHERE SCHEMA_NAME = %s", (name,))
            row = cur.fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def has_user_objects(self) -> bool:
        name = self.conn.database
        with self.connect() as c, c.cursor() as cur:
            cur.execute(_USER_OBJECTS, (name, name, name))
            row = cur.fetchone()
        return bool(row and row[0])

    def restore(
        self, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
        tables: list[str] | None = None, observer: RestoreObserver | None = None, server_locale: bool = False,
    ) -> None:
        """Load the dump through the mysql/mariadb client (restore.restore_database has the details)."""
        restore_database(self, streams, read, replace=replace, timeout=timeout, no_owner=no_owner, jobs=jobs,
                         tables=tables, observer=observer, server_locale=server_locale)


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


def _option_value(value: str) -> str:
    """A value for a MySQL option file: quoted, with the escapes the file format defines."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _client_error_code(text: str) -> int:
    """The server or client error number in a tool's message, e.g. `ERROR 1045 (28000)` or `(2003)`."""
    m = re.search(r"(?:ERROR|Got error:)\s*(\d{4})", text)
    return int(m.group(1)) if m else 0
