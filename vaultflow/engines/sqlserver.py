"""SQL Server / Azure SQL: connection strings, native BACKUP/RESTORE T-SQL, error mapping.

NOT RUN AGAINST A REAL SERVER: no SQL Server can run on the machines this was written on.
What is here is tested as text (generated T-SQL, ODBC connection strings, error mapping,
the missing-driver message); `SqlServerClient` executes that text through pyodbc but has
never been run. It is not a DatabaseEngine yet: native backups write .bak files on the
server's disk or straight to Azure Blob (TO URL), not through a vaultflow repository.
"""

from __future__ import annotations

import importlib
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    InputError,
    TargetNotEmpty,
    ToolFailed,
    VaultflowError,
)

DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"
SYSTEM_DATABASES = ("master", "tempdb", "model", "msdb")
MISSING_DRIVER_FIX = ("install pyodbc (pip install 'vaultflow[sqlserver]'), the unixODBC library (Debian: "
                      "apt-get install unixodbc) and Microsoft's driver (Debian/Ubuntu: msodbcsql18 from "
                      "packages.microsoft.com, ACCEPT_EULA=Y)")


@dataclass(frozen=True)
class SqlServerConnection:
    """Where a SQL Server database is; the password travels only as a SecretStr."""

    host: str
    port: int = 1433
    user: str = "sa"
    password: SecretStr | None = None
    database: str = "master"
    driver: str = DEFAULT_DRIVER
    encrypt: bool = True
    trust_server_certificate: bool = False
    connect_timeout: int = 15

    def server_label(self) -> str:
        return f"{self.host}:{self.port}"


def odbc_value(value: str) -> str:
    """One ODBC connection-string value: braced (with `}` doubled) when it holds ; { } or
    leading/trailing spaces, as the ODBC grammar requires."""
    if re.search(r"[;{}=]|^\s|\s$", value):
        return "{" + value.replace("}", "}}") + "}"
    return value


def connection_string(conn: SqlServerConnection, *, with_password: bool = True) -> str:
    """The ODBC connection string; `with_password=False` gives the one that is safe to log."""
    parts = [
        ("DRIVER", "{" + conn.driver.replace("}", "}}") + "}"),
        ("SERVER", odbc_value(f"tcp:{conn.host},{conn.port}")),
        ("DATABASE", odbc_value(conn.database)),
        ("UID", odbc_value(conn.user)),
    ]
    if conn.password is not None:
        secret = conn.password.get_secret_value() if with_password else "***"
        parts.append(("PWD", "{" + secret.replace("}", "}}") + "}"))
    parts += [("Encrypt", "yes" if conn.encrypt else "no"),
              ("TrustServerCertificate", "yes" if conn.trust_server_certificate else "no"),
              ("Connection Timeout", str(conn.connect_timeout)), ("APP", "vaultflow")]
    return ";".join(f"{k}={v}" for k, v in parts) + ";"


# -- T-SQL ------------------------------------------------------------------------------

def quote_name(name: str) -> str:
    """A bracketed identifier, as QUOTENAME does (`]` doubled); at most 128 characters."""
    if not name or len(name) > 128:
        raise InputError(f"SQL Server name {name[:40]!r} is empty or longer than 128 characters", "check the name")
    return "[" + name.replace("]", "]]") + "]"


def quote_string(value: str) -> str:
    return "N'" + value.replace("'", "''") + "'"


LIST_DATABASES = ("SELECT name FROM sys.databases WHERE database_id > 4 AND state_desc = 'ONLINE' "
                  "AND source_database_id IS NULL ORDER BY name")
"""User databases that are online, without database snapshots."""

TABLE_STATS = """
SELECT s.name, t.name, SUM(p.rows)
FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id
JOIN sys.partitions p ON p.object_id = t.object_id AND p.index_id IN (0, 1)
WHERE t.is_ms_shipped = 0
GROUP BY s.name, t.name ORDER BY 1, 2
"""


def table_checksum_sql(schema: str, table: str) -> str:
    """Row count and CHECKSUM_AGG(BINARY_CHECKSUM(*)) of one table (a weak, native checksum)."""
    return f"SELECT COUNT_BIG(*), CHECKSUM_AGG(BINARY_CHECKSUM(*)) FROM {quote_name(schema)}.{quote_name(table)}"


def _backup_options(compression: bool, extra: list[str]) -> str:
    # COPY_ONLY leaves the server's own backup chain (differential base, log chain) alone.
    options = ["COPY_ONLY", "CHECKSUM", "FORMAT", "INIT", *extra, "STATS = 10"]
    if compression:
        options.insert(2, "COMPRESSION")
    return " WITH " + ", ".join(options)


def backup_to_disk_sql(database: str, path: str, *, compression: bool = False) -> str:
    """BACKUP DATABASE to a file on the server's disk (path as the server sees it)."""
    return f"BACKUP DATABASE {quote_name(database)} TO DISK = {quote_string(path)}" + _backup_options(compression, [])


def backup_to_url_sql(database: str, urls: list[str], *, compression: bool = True) -> str:
    """BACKUP DATABASE straight to Azure Blob block blobs (striped over `urls`, at most 64),
    authenticated by a SHARED ACCESS SIGNATURE credential named after the container URL."""
    if not urls or len(urls) > 64:
        raise InputError("a backup to URL needs 1 to 64 blob URLs", "split the backup over fewer stripes")
    for url in urls:
        if not url.startswith("https://") or "?" in url:
            raise InputError("backup URLs must be https:// blob URLs without a query string",
                             "the SAS goes into the credential, not the URL")
    targets = ", ".join(f"URL = {quote_string(u)}" for u in urls)
    # Block blobs need MAXTRANSFERSIZE 4 MiB and BLOCKSIZE 64 KiB (SQL Server 2016+).
    return f"BACKUP DATABASE {quote_name(database)} TO {targets}" + _backup_options(
        compression, ["MAXTRANSFERSIZE = 4194304", "BLOCKSIZE = 65536"])


def sas_credential_sql(container_url: str, sas: SecretStr) -> str:
    """CREATE (or replace) the credential BACKUP/RESTORE ... URL uses for a container.

    The statement holds the SAS: send it, never log it. The SAS is taken without its `?`.
    """
    if not container_url.startswith("https://") or "?" in container_url:
        raise InputError("the container URL must be https://account.blob.core.windows.net/container",
                         "give the SAS separately")
    name = container_url.rstrip("/")
    token = sas.get_secret_value().lstrip("?")
    return (f"IF EXISTS (SELECT 1 FROM sys.credentials WHERE name = {quote_string(name)}) "
            f"DROP CREDENTIAL {quote_name(name)}; "
            f"CREATE CREDENTIAL {quote_name(name)} WITH IDENTITY = 'SHARED ACCESS SIGNATURE', "
            f"SECRET = {quote_string(token)}")


def _source(disk: str | None, urls: list[str] | None) -> str:
    if bool(disk) == bool(urls):
        raise InputError("restore from either a disk file or blob URLs", "give exactly one of them")
    if disk:
        return f"DISK = {quote_string(disk)}"
    return ", ".join(f"URL = {quote_string(u)}" for u in urls or [])


def filelist_sql(*, disk: str | None = None, urls: list[str] | None = None) -> str:
    """The logical files of a backup (LogicalName, PhysicalName, Type ...)."""
    return f"RESTORE FILELISTONLY FROM {_source(disk, urls)}"


def restore_with_move_sql(new_database: str, files: list[tuple[str, str]], *, data_dir: str, log_dir: str,
                          disk: str | None = None, urls: list[str] | None = None) -> str:
    """RESTORE a backup as a new database, every file moved to a name of its own.

    `files` are (logical name, type) from RESTORE FILELISTONLY: D data, L log, S filestream
    (moved to a directory). Never WITH REPLACE: an existing database of that name fails.
    """
    if not files:
        raise InputError("the backup lists no files", "check the backup with RESTORE FILELISTONLY")
    moves = []
    counts = {"D": 0, "L": 0, "S": 0}
    for logical, kind in files:
        kind = kind.upper()
        if kind not in counts:
            raise InputError(f"file {logical!r} of type {kind!r} cannot be moved", "restore it by hand")
        n = counts[kind]
        counts[kind] += 1
        if kind == "D":
            name = f"{new_database}.mdf" if n == 0 else f"{new_database}_{n}.ndf"
            path = posixpath.join(data_dir, name) if "/" in data_dir else f"{data_dir.rstrip(chr(92))}\\{name}"
        elif kind == "L":
            name = f"{new_database}_log.ldf" if n == 0 else f"{new_database}_log{n}.ldf"
            path = posixpath.join(log_dir, name) if "/" in log_dir else f"{log_dir.rstrip(chr(92))}\\{name}"
        else:
            name = f"{new_database}_fs{n}"
            path = posixpath.join(data_dir, name) if "/" in data_dir else f"{data_dir.rstrip(chr(92))}\\{name}"
        moves.append(f"MOVE {quote_string(logical)} TO {quote_string(path)}")
    return (f"RESTORE DATABASE {quote_name(new_database)} FROM {_source(disk, urls)} WITH "
            + ", ".join([*moves, "CHECKSUM", "RECOVERY", "STATS = 10"]))


# -- errors -----------------------------------------------------------------------------

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
    """Runs the statements above through pyodbc. NEVER RUN AGAINST A REAL SERVER (see module doc)."""

    def __init__(self, conn: SqlServerConnection) -> None:
        self.conn = conn

    def _connect(self, database: str | None = None) -> Any:
        pyodbc = require_pyodbc(self.conn.driver)
        conn = self.conn if database is None else SqlServerConnection(**{**self.conn.__dict__, "database": database})
        try:
            return pyodbc.connect(connection_string(conn), autocommit=True)  # BACKUP/RESTORE refuse transactions
        except pyodbc.Error as exc:
            raise map_error(exc, self.conn.server_label(), conn.database) from None

    def _run(self, statement: str, database: str = "master") -> list[tuple[Any, ...]]:
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
                raise map_error(exc, self.conn.server_label(), database) from None

    def list_databases(self) -> list[str]:
        return [str(r[0]) for r in self._run(LIST_DATABASES)]

    def table_stats(self, database: str) -> list[tuple[str, str, int]]:
        return [(str(s), str(t), int(n)) for s, t, n in self._run(TABLE_STATS, database)]

    def backup_to_disk(self, database: str, path: str, *, compression: bool = False) -> None:
        self._run(backup_to_disk_sql(database, path, compression=compression))

    def backup_to_url(self, database: str, container_url: str, sas: SecretStr, blob_names: list[str]) -> None:
        self._run(sas_credential_sql(container_url, sas))
        self._run(backup_to_url_sql(database, [f"{container_url.rstrip('/')}/{n}" for n in blob_names]))

    def restore_as(self, new_database: str, *, data_dir: str, log_dir: str, disk: str | None = None,
                   urls: list[str] | None = None) -> None:
        files = [(str(r[0]), str(r[2])) for r in self._run(filelist_sql(disk=disk, urls=urls))]
        self._run(restore_with_move_sql(new_database, files, data_dir=data_dir, log_dir=log_dir, disk=disk,
                                        urls=urls))
