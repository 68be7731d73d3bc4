"""`SqlServerClient`: runs the statements of `sql.py` through pyodbc (loaded only when a
connection is made), and maps pyodbc errors to vaultflow errors without any secret.

NEVER RUN AGAINST A REAL SERVER: the client has only ever been driven by a stand-in that
replaces `_run` (tests/engines/sqlserver/stand_in.py); pyodbc never reached SQL Server.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from pydantic import SecretStr

from vaultflow.engines.sqlserver.config import DEFAULT_DRIVER, SqlServerConnection, connection_string
from vaultflow.engines.sqlserver.sql import (
    DEFAULT_PATHS,
    LIST_DATABASES,
    PRIMARY_KEYS,
    SERVER_INFO,
    TABLE_STATS,
    backup_to_disk_sql,
    backup_to_url_sql,
    database_exists_sql,
    drop_database_sql,
    filelist_sql,
    restore_with_move_sql,
    sas_credential_sql,
    table_checksum_sql,
)
from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    TargetNotEmpty,
    ToolFailed,
    VaultflowError,
)

MISSING_DRIVER_FIX = ("install pyodbc (pip install pyodbc, or the extra named sqlserver), the unixODBC library "
                      "(Debian: apt-get install unixodbc) and Microsoft's driver (Debian/Ubuntu: msodbcsql18 from "
                      "packages.microsoft.com, ACCEPT_EULA=Y)")

_TRANSIENT_NUMBERS = {40613, 40197, 40501, 49918, 49919, 49920, 4221, 10928, 10929, 1205, 233, 64, 10053, 10054,
                      10060, 11001}


def map_error(exc: BaseException, server: str, database: str) -> VaultflowError:
    """A pyodbc error (args: SQLSTATE, message with the native number in parentheses) as one
    vaultflow error; never echoes the connection string."""
    sqlstate = str(exc.args[0]) if exc.args else ""
    message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    numbers = {int(n) for n in re.findall(r"\((\d{2,5})\)", message)}
    text = re.sub(r"\[[^\]]*\]", "", message).split("(SQL")[0].strip()[:240]
    if 18456 in numbers or sqlstate == "28000":
        return AuthenticationFailed(f"SQL Server at {server} rejected the login", "check user and password in the "
                                    "SqlServer block")
    if 4060 in numbers or 911 in numbers:
        return DatabaseNotFound(f"database {database!r} does not exist on SQL Server at {server} or the login "
                                "may not open it", "check the name (sys.databases) and the login's user mapping")
    if 1801 in numbers:
        return TargetNotEmpty(f"database {database!r} already exists on SQL Server at {server}",
                              "restore under a new name")
    if numbers & {229, 262, 3110, 15247}:
        return AuthenticationFailed(f"the login lacks a permission on SQL Server at {server}: {text}",
                                    "grant it db_backupoperator (backups) or dbcreator (restores)")
    if 3201 in numbers:
        return ToolFailed(f"SQL Server at {server} cannot open the backup device: {text}",
                          "check that the path exists on the server and its service account may write it, "
                          "or for URLs that the SAS credential is valid")
    if sqlstate in ("08001", "08S01", "HYT00", "HYT01") or numbers & _TRANSIENT_NUMBERS:
        return ConnectionFailed(f"cannot reach SQL Server at {server} ({text})",
                                "check that it is running and the host and port are right")
    if sqlstate == "IM002" or "data source name not found" in message.lower() or "can't open lib" in message.lower():
        return ToolFailed("the ODBC driver for SQL Server is not installed", MISSING_DRIVER_FIX)
    return ToolFailed(f"SQL Server error on {server}/{database}: {text}")


def redact(error: VaultflowError, secret: SecretStr | None) -> VaultflowError:
    """The same error with `secret` (with or without its leading `?`) and any SAS signature
    (`sig=...`) cut out."""
    if secret is None:
        return error
    values = {v for v in (secret.get_secret_value(), secret.get_secret_value().lstrip("?")) if len(v) >= 4}
    what, fix = error.what, error.fix
    for value in sorted(values, key=len, reverse=True):
        what, fix = what.replace(value, "***"), fix.replace(value, "***")
    sig = re.compile(r"(?i)\bsig=[^&\s'\"]+")
    return type(error)(sig.sub("sig=***", what), sig.sub("sig=***", fix))


def require_pyodbc(driver: str = DEFAULT_DRIVER) -> Any:
    """The pyodbc module, with the driver installed; else ToolFailed naming the packages."""
    try:
        pyodbc = importlib.import_module("pyodbc")  # optional: the extra "sqlserver"
    except ImportError:
        raise ToolFailed("pyodbc cannot be imported (SQL Server support is optional)", MISSING_DRIVER_FIX) from None
    if driver not in pyodbc.drivers():
        raise ToolFailed(f"the ODBC driver {driver!r} is not installed", MISSING_DRIVER_FIX)
    return pyodbc


class SqlServerClient:
    """Runs the statements of `sql.py` through pyodbc. NEVER RUN AGAINST A REAL SERVER (see module doc)."""

    def __init__(self, conn: SqlServerConnection) -> None:
        self.conn = conn

    def _connect(self, database: str | None = None) -> Any:
        pyodbc = require_pyodbc(self.conn.driver)
        conn = self.conn if database is None else SqlServerConnection(**{**self.conn.__dict__, "database": database})
        try:
            return pyodbc.connect(connection_string(conn), autocommit=True)  # BACKUP/RESTORE refuse transactions
        except pyodbc.Error as exc:
            raise map_error(exc, self.conn.server_label(), conn.database) from None

    def _run(self, statement: str, database: str = "master", *, secret: SecretStr | None = None
             ) -> list[tuple[Any, ...]]:
        """Execute one batch; the rows of its last result set. `secret`: a value the
        statement holds (a SAS), cut out of any error text before it is raised."""
        pyodbc = require_pyodbc(self.conn.driver)
        with self._connect(database) as c:
            cur = c.cursor()
            try:
                cur.execute(statement)
                rows: list[tuple[Any, ...]] = []
                while True:  # BACKUP/RESTORE report progress as result sets; drain them all
                    if cur.description:
                        rows = [tuple(r) for r in cur.fetchall()]
                    if not cur.nextset():
                        break
                return rows
            except pyodbc.Error as exc:
                raise redact(map_error(exc, self.conn.server_label(), database), secret) from None

    def server_info(self) -> tuple[str, int]:
        """(first line of @@VERSION, SERVERPROPERTY('EngineEdition'))."""
        row = self._run(SERVER_INFO)[0]
        return str(row[0]).splitlines()[0].strip()[:200], int(row[1] or 0)

    def database_exists(self, name: str) -> bool:
        return self._run(database_exists_sql(name))[0][0] is not None

    def default_paths(self) -> tuple[str | None, str | None]:
        """The instance's default data and log directories (SQL Server 2012+), as it sees them."""
        data, log = self._run(DEFAULT_PATHS)[0]
        return (str(data) if data else None, str(log) if log else None)

    def table_checksum(self, database: str, schema: str, table: str) -> tuple[int, int | None]:
        rows, checksum = self._run(table_checksum_sql(schema, table), database)[0]
        return int(rows), None if checksum is None else int(checksum)

    def drop_database(self, name: str) -> None:
        self._run(drop_database_sql(name))

    def primary_keys(self, database: str) -> list[tuple[str, str, str]]:
        """(schema, table, column) of every primary key column, in key order."""
        return [(str(s), str(t), str(c)) for s, t, c in self._run(PRIMARY_KEYS, database)]

    def list_databases(self) -> list[str]:
        return [str(r[0]) for r in self._run(LIST_DATABASES)]

    def table_stats(self, database: str) -> list[tuple[str, str, int]]:
        return [(str(s), str(t), int(n)) for s, t, n in self._run(TABLE_STATS, database)]

    def backup_to_disk(self, database: str, path: str, *, compression: bool = False) -> None:
        self._run(backup_to_disk_sql(database, path, compression=compression))

    def backup_to_url(self, database: str, container_url: str, sas: SecretStr, blob_names: list[str], *,
                      compression: bool = True) -> None:
        self._run(sas_credential_sql(container_url, sas), secret=sas)
        self._run(backup_to_url_sql(database, [f"{container_url.rstrip('/')}/{n}" for n in blob_names],
                                    compression=compression))

    def url_credential(self, container_url: str, sas: SecretStr) -> None:
        """Create (or replace) the SAS credential RESTORE ... FROM URL needs."""
        self._run(sas_credential_sql(container_url, sas), secret=sas)

    def restore_as(self, new_database: str, *, data_dir: str, log_dir: str, disk: str | None = None,
                   urls: list[str] | None = None) -> None:
        files = [(str(r[0]), str(r[2])) for r in self._run(filelist_sql(disk=disk, urls=urls))]
        self._run(restore_with_move_sql(new_database, files, data_dir=data_dir, log_dir=log_dir, disk=disk,
                                        urls=urls))
