"""The T-SQL vaultflow sends to SQL Server, as text: catalog queries, BACKUP, RESTORE,
the SAS credential. Pure functions, no driver.

NEVER RUN AGAINST A REAL SERVER: the statements are tested as strings and were only ever
given to a stand-in client (tests/engines/sqlserver/stand_in.py), never to SQL Server.
"""

from __future__ import annotations

import posixpath

from pydantic import SecretStr

from vaultflow.errors import InputError


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


PRIMARY_KEYS = """
SELECT s.name, t.name, c.name
FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id
JOIN sys.indexes i ON i.object_id = t.object_id AND i.is_primary_key = 1
JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.key_ordinal > 0
JOIN sys.columns c ON c.object_id = t.object_id AND c.column_id = ic.column_id
WHERE t.is_ms_shipped = 0
ORDER BY s.name, t.name, ic.key_ordinal
"""
"""(schema, table, column) of every user table's primary key columns, in key order."""


def drop_database_sql(name: str) -> str:
    return f"DROP DATABASE {quote_name(name)}"
