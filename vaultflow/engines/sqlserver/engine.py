"""SQL Server / Azure SQL Managed Instance: native COPY_ONLY backups as vaultflow snapshots.

NOT RUN AGAINST A REAL SERVER: no SQL Server can run on the machines this was written on.
`SqlServerEngine` takes a native `BACKUP DATABASE ... WITH COPY_ONLY, CHECKSUM` into a
staging place that both the server and vaultflow reach (an Azure Blob container with a
SAS, written TO URL; or a shared directory, written TO DISK), streams that .bak through
the repository writer as one stream and deletes the staging object, also on failure.
Restore streams the .bak back to staging and runs RESTORE FILELISTONLY and RESTORE ...
WITH MOVE to the target name (never REPLACE). The T-SQL, the ODBC connection strings,
the error mapping and the staging and repository parts are tested (the staging parts
against Azurite and a real directory); the statements themselves were only ever given
to a stand-in client in the tests, never to SQL Server.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import posixpath
import re
import uuid
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import SecretStr

from vaultflow.engines.base import DumpSession, RestoreObserver, ServerEngine, StreamReader, StreamSource
from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    InputError,
    StorageUnwritable,
    TargetNotEmpty,
    ToolFailed,
    VaultflowError,
)
from vaultflow.log_redaction import hide_sas_in_logs
from vaultflow.repository.manifest import StreamManifest, TableStats
from vaultflow.repository.repository import ByteSink

_log = logging.getLogger("vaultflow.sqlserver")

DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"
SYSTEM_DATABASES = ("master", "tempdb", "model", "msdb")
MISSING_DRIVER_FIX = ("install pyodbc (pip install pyodbc, or the extra named sqlserver), the unixODBC library "
                      "(Debian: apt-get install unixodbc) and Microsoft's driver (Debian/Ubuntu: msodbcsql18 from "
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
    bin_dir: str | None = None  # where bcp is, for the logical path; PATH if empty

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

SERVER_INFO = "SELECT @@VERSION, CAST(SERVERPROPERTY('EngineEdition') AS int)"
AZURE_SQL_DATABASE_EDITION = 5  # EngineEdition of Azure SQL Database (Managed Instance is 8)
DEFAULT_PATHS = ("SELECT CAST(SERVERPROPERTY('InstanceDefaultDataPath') AS nvarchar(4000)), "
                 "CAST(SERVERPROPERTY('InstanceDefaultLogPath') AS nvarchar(4000))")


def database_exists_sql(name: str) -> str:
    """One row: the database's id, NULL when there is no database of that name (any state)."""
    return f"SELECT DB_ID({quote_string(name)})"


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
        self._run(f"DROP DATABASE {quote_name(name)}")

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


# -- the engine: native backups through a staging place --------------------------------

NATIVE_FORMAT = "mssql-native-bak"  # one stream: the .bak of BACKUP DATABASE ... COPY_ONLY, CHECKSUM
CHECKSUM_PREFIX = "mssql-checksum-agg:"  # CHECKSUM_AGG(BINARY_CHECKSUM(*)): weak, order-independent
STAGING_PREFIX = "vaultflow-staging"
_READ_BLOCK = 4 * 1024 * 1024
_UPLOAD_BLOCK = 8 * 1024 * 1024  # 50,000 blocks of 8 MiB: a staged .bak of up to 390 GiB


def _is_windows_path(path: str) -> bool:
    return "\\" in path and "/" not in path


def _server_join(directory: str, name: str) -> str:
    """`name` in `directory` as the SQL Server host writes paths (Windows or Linux)."""
    if _is_windows_path(directory):
        return directory.rstrip("\\") + "\\" + name
    return posixpath.join(directory, name)


@dataclass(frozen=True)
class DiskStaging:
    """A directory both the SQL Server host and vaultflow reach (a share, a bind mount).

    `server_path` is the directory as SQL Server sees it (BACKUP ... TO DISK writes there,
    as its service account); `local_path` is the same directory as vaultflow sees it.
    """

    server_path: str
    local_path: str

    def describe(self, name: str) -> str:
        return f"staging file {os.path.join(self.local_path, name)}"

    def check(self) -> None:
        if not self.server_path or not self.local_path:
            raise InputError("disk staging for SQL Server needs both server_path and local_path",
                             "set the directory as the SQL Server host sees it and as vaultflow sees it")
        if not os.path.isdir(self.local_path):
            raise InputError(f"the staging directory {self.local_path} does not exist or is not a directory",
                             "create it (shared with the SQL Server host as server_path) or fix local_path")

    def backup(self, client: SqlServerClient, database: str, name: str, compression: bool) -> None:
        client.backup_to_disk(database, _server_join(self.server_path, name), compression=compression)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        path = os.path.join(self.local_path, name)
        try:
            stream = open(path, "rb")  # closed by the with below
        except FileNotFoundError:
            raise ToolFailed(f"SQL Server reported the backup done but {path} does not exist",
                             "check that server_path and local_path name the same directory") from None
        with stream:
            yield stream

    def write(self, name: str, fill: Callable[[ByteSink], None]) -> None:
        path = os.path.join(self.local_path, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)  # the server's account must read it
        except OSError as exc:
            raise StorageUnwritable(f"cannot create {path}: {exc.strerror}",
                                    "check that vaultflow may write the staging directory (local_path)") from None
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())

    def restore_source(self, client: SqlServerClient, name: str) -> dict[str, Any]:
        return {"disk": _server_join(self.server_path, name)}

    def remove(self, name: str) -> None:
        Path(self.local_path, name).unlink(missing_ok=True)


@dataclass(frozen=True)
class BlobStaging:
    """An Azure Blob container both SQL Server (BACKUP/RESTORE ... URL) and vaultflow reach.

    `container_url` is https://ACCOUNT.blob.core.windows.net/CONTAINER as SQL Server reaches
    it; `sas` a SAS for that container (read, write, create, list, delete) that goes only into
    the server's CREDENTIAL and vaultflow's own blob client. `client_url` is the same
    container as vaultflow reaches it, when that differs (a private endpoint, an emulator).
    """

    container_url: str
    sas: SecretStr
    client_url: str | None = None

    def describe(self, name: str) -> str:
        return f"staging blob {self.container_url.rstrip('/')}/{name}"

    def check(self) -> None:
        hide_sas_in_logs()
        url = self.container_url.rstrip("/")
        if not url.startswith("https://") or "?" in url or url.count("/") != 3:
            raise InputError("the staging container URL must be https://ACCOUNT.blob.core.windows.net/CONTAINER",
                             "give the SAS separately (staging_sas), not in the URL")
        if "?" in (self.client_url or ""):
            raise InputError("the staging client URL must not hold a query string", "give the SAS separately")
        if not self.sas.get_secret_value().strip("?"):
            raise InputError("the staging SAS is empty", "generate a container SAS with read, write, create, "
                             "list and delete permissions")

    def _store(self) -> Any:
        from vaultflow.storage.azure import AzureBlobStore, AzureSettings

        url = (self.client_url or self.container_url).rstrip("/")
        account_url, _, container = url.rpartition("/")
        return AzureBlobStore(AzureSettings(container=container, prefix=STAGING_PREFIX, account_url=account_url,
                                            sas_token=self.sas))

    def backup(self, client: SqlServerClient, database: str, name: str, compression: bool) -> None:
        client.backup_to_url(database, self.container_url, self.sas, [f"{STAGING_PREFIX}/{name}"],
                             compression=compression)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        from azure.core.exceptions import AzureError

        store = self._store()
        try:
            chunks = store.client.download_blob(f"{STAGING_PREFIX}/{name}").chunks()
        except AzureError as exc:
            raise store._map(exc, "read", name) from None
        with io.BufferedReader(_ChunkReader(chunks, lambda exc: store._map(exc, "read", name)),
                               _READ_BLOCK) as stream:
            yield stream

    def write(self, name: str, fill: Callable[[ByteSink], None]) -> None:
        store = self._store()
        uploader = _BlockUploader(store, f"{STAGING_PREFIX}/{name}", name)
        fill(uploader)
        uploader.commit()

    def restore_source(self, client: SqlServerClient, name: str) -> dict[str, Any]:
        client.url_credential(self.container_url, self.sas)
        return {"urls": [f"{self.container_url.rstrip('/')}/{STAGING_PREFIX}/{name}"]}

    def remove(self, name: str) -> None:
        """Delete the blob and any uncommitted blocks of it (a BACKUP or an upload that
        failed half-way leaves blocks that Azure keeps for up to a week otherwise):
        committing an empty block list discards them, then the empty blob is deleted.
        Azurite deletes a blob of uncommitted blocks without that step, so the tests do not
        show the step is needed on Azure; it is there because Azure's documentation says
        uncommitted blocks live on until a block list is committed or a week passes."""
        from azure.core.exceptions import AzureError

        store = self._store()
        try:
            store.client.get_blob_client(f"{STAGING_PREFIX}/{name}").commit_block_list([])
        except AzureError:
            pass  # e.g. a lease a failed BACKUP left; the delete below reports what matters
        store.delete(name)


class _ChunkReader(io.RawIOBase):
    """A readable raw stream over a blob download's chunks; SDK errors become vaultflow errors."""

    def __init__(self, chunks: Iterator[bytes], map_error: Callable[[Any], VaultflowError]) -> None:
        self._chunks = chunks
        self._map = map_error
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from azure.core.exceptions import AzureError

        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
            except AzureError as exc:
                raise self._map(exc) from None
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class _BlockUploader:
    """A byte sink that stages 8 MiB blocks of one block blob and commits them at the end:
    the blob appears whole or not at all."""

    def __init__(self, store: Any, blob: str, key: str) -> None:
        self._store = store
        self._blob = store.client.get_blob_client(blob)
        self._key = key
        self._buffer = bytearray()
        self._ids: list[str] = []

    def _stage(self, data: bytes) -> None:
        from azure.core.exceptions import AzureError

        block_id = b64encode(f"{len(self._ids):08d}".encode()).decode()
        try:
            self._blob.stage_block(block_id, data, length=len(data))
        except AzureError as exc:
            raise self._store._map(exc, "upload", self._key) from None
        self._ids.append(block_id)

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) >= _UPLOAD_BLOCK:
            self._stage(bytes(self._buffer[:_UPLOAD_BLOCK]))
            del self._buffer[:_UPLOAD_BLOCK]
        return len(data)

    def commit(self) -> None:
        from azure.core.exceptions import AzureError
        from azure.storage.blob import BlobBlock

        if self._buffer or not self._ids:
            self._stage(bytes(self._buffer))
            self._buffer.clear()
        try:
            self._blob.commit_block_list([BlobBlock(block_id=i) for i in self._ids])
        except AzureError as exc:
            raise self._store._map(exc, "upload", self._key) from None


Staging = DiskStaging | BlobStaging


def staging_name(database: str) -> str:
    """A new, unique staging object name that says what it holds (lowercase a-z0-9._-)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", database.lower()).strip("-._")[:60] or "db"
    return f"vf-{uuid.uuid4().hex[:16]}-{slug}.bak"


class SqlServerEngine(ServerEngine[SqlServerConnection]):
    """One SQL Server database, backed up natively into a vaultflow repository.

    NEVER RUN AGAINST A REAL SERVER (see the module doc). `staging` is where BACKUP writes
    the .bak and RESTORE reads it; without it the engine lists databases and reads
    statistics but refuses to dump or restore. `data_dir`/`log_dir`: where a restore puts
    the database's files, as the server sees them (default: the instance's default paths).
    `compression` asks BACKUP for COMPRESSION: smaller staging objects, but a compressed
    .bak changes throughout when any page changes, so later snapshots share fewer chunks.
    """

    engine = "sqlserver"
    tool_fix = ("install Microsoft's mssql-tools18 (bcp, sqlcmd) or set bin_dir; the native path needs "
                "only pyodbc and msodbcsql18")

    def __init__(self, conn: SqlServerConnection, staging: Staging | None = None, *, data_dir: str | None = None,
                 log_dir: str | None = None, compression: bool = False,
                 client_factory: Callable[[SqlServerConnection], SqlServerClient] = SqlServerClient) -> None:
        super().__init__(conn)
        self.staging = staging
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.compression = compression
        self.client_factory = client_factory

    def with_database(self, database: str) -> SqlServerEngine:
        return SqlServerEngine(replace(self.conn, database=database), self.staging, data_dir=self.data_dir,
                               log_dir=self.log_dir, compression=self.compression,
                               client_factory=self.client_factory)

    def describe(self) -> str:
        return f"SQL Server database {self.conn.database!r} on {self.server_label()}"

    def client(self) -> SqlServerClient:
        return self.client_factory(self.conn)

    def map_error(self, exc: BaseException, database: str) -> VaultflowError:
        return map_error(exc, self.server_label(), database)

    def _staging(self, action: str) -> Staging:
        if self.staging is None:
            raise InputError(f"{action} {self.describe()} needs a staging place that SQL Server writes the .bak to "
                             "and vaultflow reads it from",
                             "set staging_container_url and staging_sas (Azure Blob), or staging_server_path and "
                             "staging_local_path (a shared directory) in the SqlServer block, or add "
                             "?server_path=...&local_path=... to the mssql:// URL")
        self.staging.check()
        return self.staging

    def check_configuration(self, action: Literal["backup", "restore"]) -> None:
        self._staging("backing up" if action == "backup" else "restoring into")

    # -- discovery and checks ----------------------------------------------------------

    def list_databases(self) -> list[str]:
        return self.client().list_databases()

    def database_exists(self) -> bool:
        return self.client().database_exists(self.conn.database)

    def versions(self) -> dict[str, str]:
        version, edition = self.client().server_info()
        if edition == AZURE_SQL_DATABASE_EDITION:
            raise InputError(f"{self.server_label()} is Azure SQL Database, which does not run a user's "
                             "BACKUP DATABASE", "use its automated backups or a BACPAC export; vaultflow's native "
                             "path needs SQL Server or Azure SQL Managed Instance")
        return {"sqlserver": version, "odbc_driver": self.conn.driver}

    def fingerprint(self) -> str | None:
        """None: no cheap value is known here that is sure to change with every write."""
        return None

    def table_stats(self, *, like: list[TableStats] | None = None, checksums: bool = True) -> list[TableStats]:
        """Row counts (exact, COUNT_BIG) and CHECKSUM_AGG(BINARY_CHECKSUM(*)) per user table.

        The checksum is weak (collisions are easy, some column types are left out of it)
        and is read from the live database, not from the .bak. Without `checksums` the row
        counts come from sys.partitions (approximate, cheap).
        """
        client = self.client()
        listed = client.table_stats(self.conn.database)
        if not checksums:
            return [TableStats(schema=s, name=t, rows=n) for s, t, n in listed]
        out = []
        for schema, table, _ in listed:
            rows, checksum = client.table_checksum(self.conn.database, schema, table)
            out.append(TableStats(schema=schema, name=table, rows=rows,
                                  checksum=f"{CHECKSUM_PREFIX}{'null' if checksum is None else checksum}"))
        return out

    # -- backup ------------------------------------------------------------------------

    @contextmanager
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        parent_streams: list[StreamManifest] | None = None,
    ) -> Iterator[DumpSession]:
        """BACKUP DATABASE ... COPY_ONLY, CHECKSUM into staging; one source reads it back.

        The staging object is deleted when the context is left, whether the backup
        succeeded or not. The table statistics are read from the live database just before
        BACKUP starts, so a concurrent writer makes them differ from the .bak's content.
        `timeout` is not applied to the BACKUP statement.
        """
        if include_tables or exclude_tables:
            raise InputError("SQL Server native backups copy the whole database; table subsets are not supported",
                             "drop --include-table/--exclude-table for SQL Server sources")
        staging = self._staging("backing up")
        versions = self.versions()
        tables = self.table_stats(checksums=table_checksums)
        client = self.client()
        name = staging_name(self.conn.database)
        where = staging.describe(name)
        try:
            _log.info("BACKUP DATABASE %s COPY_ONLY, CHECKSUM to %s", self.describe(), where)
            staging.backup(client, self.conn.database, name, self.compression)

            @contextmanager
            def staged() -> Iterator[IO[bytes]]:
                with staging.open(name) as stream:
                    yield stream

            meta = {"backup": "COPY_ONLY,CHECKSUM" + (",COMPRESSION" if self.compression else ""),
                    "staging": "url" if isinstance(staging, BlobStaging) else "disk"}
            yield DumpSession(sources=[StreamSource("bak", NATIVE_FORMAT, staged, meta=meta)], tables=tables,
                              versions=versions)
        finally:
            self._remove_staged(staging, name, where)

    def _remove_staged(self, staging: Staging, name: str, where: str) -> None:
        """Delete a staging object; a failure is logged (it holds the database, unencrypted)
        and does not hide the error that may be on its way."""
        try:
            staging.remove(name)
        except (VaultflowError, OSError) as exc:
            line = exc.line() if isinstance(exc, VaultflowError) else str(exc)
            _log.warning("could not delete %s (an unencrypted copy of the database): %s; delete it by hand",
                         where, line)

    # -- restore -----------------------------------------------------------------------

    def restore(
        self, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
        tables: list[str] | None = None, observer: RestoreObserver | None = None, server_locale: bool = False,
    ) -> None:
        """Stream the .bak to staging, then RESTORE ... WITH MOVE as this database (new name).

        An existing database of this name fails with TargetNotEmpty before anything is
        written; `replace` is refused (restore under a new name, then swap by hand). If the
        RESTORE fails, a database of this name it left behind is dropped. The staging
        object is deleted in every case. `no_owner`, `jobs` and `timeout` have no effect.
        """
        if [s.format for s in streams] != [NATIVE_FORMAT]:
            raise InputError(f"a snapshot with {', '.join(sorted({s.format for s in streams}))} streams cannot be "
                             "restored into SQL Server", "restore it into an engine of its own kind")
        if tables:
            raise InputError("SQL Server snapshots restore as a whole database", "drop --table for SQL Server targets")
        if replace:
            raise InputError(f"SQL Server restores never replace a database ({self.describe()})",
                             "restore under a new name, check it, then drop or rename the old one yourself")
        staging = self._staging("restoring into")
        client = self.client()
        target = self.conn.database
        quote_name(target)
        if client.database_exists(target):
            raise TargetNotEmpty(f"database {target!r} already exists on SQL Server at {self.server_label()}",
                                 "restore under a new database name")
        data_dir, log_dir = self.data_dir, self.log_dir
        if not data_dir or not log_dir:
            default_data, default_log = client.default_paths()
            data_dir, log_dir = data_dir or default_data, log_dir or default_log
        if not data_dir or not log_dir:
            raise InputError(f"SQL Server at {self.server_label()} reports no default data or log directory",
                             "set data_dir and log_dir in the SqlServer block")
        name = staging_name(target)
        where = staging.describe(name)
        try:
            staging.write(name, lambda sink: read(streams[0], sink))
            _log.info("RESTORE DATABASE %s WITH MOVE from %s", self.describe(), where)
            try:
                client.restore_as(target, data_dir=data_dir, log_dir=log_dir,
                                  **staging.restore_source(client, name))
            except BaseException:
                self._drop_partial(client, target)
                raise
        finally:
            self._remove_staged(staging, name, where)

    def bcp_sources(self, auth: str, *, timeout: float | None = None) -> list[StreamSource]:
        """The logical path: one source per user table, its rows from `bcp ... queryout` in
        native format and primary key order, streamed through a FIFO. Data only (no schema,
        no way to restore it yet), so backups do not use it; only trusted (Kerberos) or
        Entra ID logins, never a SQL login's password (bcp would need it in argv)."""
        return _bcp_sources(self, auth, timeout)

    def _drop_partial(self, client: SqlServerClient, target: str) -> None:
        """Drop what a failed RESTORE left under `target` (it did not exist before)."""
        try:
            if client.database_exists(target):
                client.drop_database(target)
        except VaultflowError as exc:
            _log.warning("could not drop the partly restored database %r on %s: %s; drop it by hand", target,
                         self.server_label(), exc.line())


# -- the logical path: bcp per table (data only; not wired into backups) -----------------
#
# bcp takes a SQL login's password only as -P on its command line, where every user of the
# host can read it (/proc/PID/cmdline, ps). vaultflow never puts a secret in argv, so bcp
# runs only with logins that need no password from us: Windows/Kerberos (-T) or Entra ID
# (-G). bcp writes to a file, never to stdout, so the rows come through a FIFO.

BCP_FORMAT = "mssql-bcp-native"  # one table's rows in bcp native format (-n), in primary key order; no schema
BCP_AUTHS = ("trusted", "entra")

PRIMARY_KEYS = """
SELECT s.name, t.name, c.name
FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id
JOIN sys.indexes i ON i.object_id = t.object_id AND i.is_primary_key = 1
JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.key_ordinal > 0
JOIN sys.columns c ON c.object_id = t.object_id AND c.column_id = ic.column_id
WHERE t.is_ms_shipped = 0
ORDER BY s.name, t.name, ic.key_ordinal
"""


def check_bcp_login(conn: SqlServerConnection, auth: str | None) -> str:
    """The bcp login kind, or one line saying why a SQL-password login cannot use bcp."""
    if auth not in BCP_AUTHS or conn.password is not None:
        raise InputError(
            f"bcp cannot log in to {conn.server_label()} as SQL login {conn.user!r} without putting its password "
            "on the command line (-P), where other users of this host can read it",
            "use the native path (BACKUP through staging), or a Kerberos/Windows login (bcp_auth=trusted) or an "
            "Entra ID login (bcp_auth=entra) without a password in vaultflow")
    return auth


def bcp_queryout_argv(tool: str, conn: SqlServerConnection, auth: str, schema: str, table: str,
                      key_columns: list[str], out_path: str) -> list[str]:
    """argv of `bcp "SELECT ... ORDER BY key" queryout FILE -n`: native format, rows in key
    order (so unchanged rows give the same bytes, and chunks, again). No password, ever."""
    auth = check_bcp_login(conn, auth)
    query = f"SELECT * FROM {quote_name(conn.database)}.{quote_name(schema)}.{quote_name(table)}"
    if key_columns:
        query += " ORDER BY " + ", ".join(quote_name(c) for c in key_columns)
    argv = [tool, query, "queryout", out_path, "-n", "-S", f"tcp:{conn.host},{conn.port}", "-d", conn.database]
    argv.append("-T" if auth == "trusted" else "-G")
    if conn.trust_server_certificate:
        argv.append("-u")  # mssql-tools18: trust the server certificate
    return argv


@contextmanager
def fifo_tool_stream(argv_for: Callable[[str], list[str]], what: str, timeout: float | None = None,
                     error: Callable[[str], VaultflowError] | None = None) -> Iterator[IO[bytes]]:
    """Run a tool that writes one file, given a FIFO as that file, and yield the FIFO's read
    end. The FIFO is in a private (0700) directory removed afterwards. A tool that exits
    without opening the FIFO does not leave the reader waiting: its exit is noticed and its
    last error line raised. Leaving the context checks the tool's exit status."""
    import shutil
    import subprocess
    import tempfile
    import threading

    from vaultflow.engines.process import ToolProcess

    workdir = tempfile.mkdtemp(prefix="vaultflow-bcp-")
    fifo = os.path.join(workdir, "rows")
    os.mkfifo(fifo, 0o600)
    try:
        with ToolProcess(argv_for(fifo), stdout=subprocess.DEVNULL, timeout=timeout) as proc:
            opened = threading.Event()

            def unblock_reader() -> None:
                proc.proc.wait()
                # If it never opened the FIFO, our open() below waits for a writer forever:
                # be that writer (until our open() is in, it fails with ENXIO) and close at once.
                while not opened.is_set():
                    try:
                        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                        return
                    except OSError:
                        opened.wait(0.01)

            threading.Thread(target=unblock_reader, daemon=True).start()
            with open(fifo, "rb") as stream:
                opened.set()
                yield stream
                while stream.read(1024 * 1024):
                    pass  # whatever the reader left, so the tool can finish
            code = proc.wait()
            if code != 0 or proc.timed_out:
                line = proc.last_error_line() or f"exit status {code}"
                if proc.timed_out:
                    line = f"killed after its {timeout:.0f} s deadline"
                raise error(line) if error else ToolFailed(f"{what} failed: {line[:300]}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bcp_sources(engine: SqlServerEngine, auth: str, timeout: float | None) -> list[StreamSource]:
    conn = engine.conn
    check_bcp_login(conn, auth)
    tool = engine._tool("bcp")
    client = engine.client()
    keys: dict[tuple[str, str], list[str]] = {}
    for schema, table, column in client.primary_keys(conn.database):
        keys.setdefault((schema, table), []).append(column)
    sources = []
    for schema, table, _ in client.table_stats(conn.database):
        key = keys.get((schema, table), [])

        def argv_for(path: str, schema: str = schema, table: str = table, key: list[str] = key) -> list[str]:
            return bcp_queryout_argv(tool, conn, auth, schema, table, key, path)

        def open_table(argv_for: Callable[[str], list[str]] = argv_for, schema: str = schema, table: str = table
                       ) -> Any:
            what = f"bcp of table {schema}.{table} of {engine.describe()}"
            return fifo_tool_stream(argv_for, what, timeout, lambda line: _bcp_error(engine, what, line))

        sources.append(StreamSource(f"{schema}.{table}", BCP_FORMAT, open_table,
                                    meta={"order": ",".join(key) or "none (no primary key)"}))
    return sources


def _bcp_error(engine: SqlServerEngine, what: str, line: str) -> VaultflowError:
    """bcp's last error line (`SQLState = 08001, NativeError = 2 Error = [...]...`) as the
    error map_error gives for the same SQLSTATE and native number, saying it was bcp."""
    state = re.search(r"SQLState = (\w+)", line)
    native = re.search(r"NativeError = (\d+)", line)
    text = re.search(r"NativeError = \d+,?\s*Error = (.*)", line)
    message = (text.group(1) if text else line) + (f" ({native.group(1)})" if native else "")
    mapped = map_error(Exception(state.group(1) if state else "", message), engine.server_label(),
                       engine.conn.database)
    return type(mapped)(f"{what} failed: {mapped.what}", mapped.fix)
