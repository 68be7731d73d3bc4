"""Engine blocks: where a database server is and how to log in."""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from vaultflow.errors import InputError

# The engine modules (psycopg, pymysql, numpy...) are imported when a block builds an engine,
# not when the block classes are defined (flow parameter types import this module).
if TYPE_CHECKING:
    from vaultflow.engines.files.engine import FileTreeEngine
    from vaultflow.engines.mysql.engine import MySQLEngine
    from vaultflow.engines.postgres.engine import PostgresEngine
    from vaultflow.engines.sqlite.engine import SqliteEngine
    from vaultflow.engines.sqlserver.client import SqlServerClient
    from vaultflow.engines.sqlserver.config import SqlServerConnection
    from vaultflow.engines.sqlserver.engine import SqlServerEngine
    from vaultflow.engines.sqlserver.staging import (
        BlobStaging,
        Staging,
    )


class ServerBlock(Block, ABC):
    """The login fields every database server block has, in this order (not registered itself)."""

    host: str = Field(default="127.0.0.1", description="Host name or address.")
    port: int = Field(ge=1, le=65535)
    user: str
    password: SecretStr | None = None
    database: str | None = Field(default=None, description="Default database when a run names none.")

    def _database_or_default(self, database: str | None) -> str:
        """`database`, else the block's default database; raises if neither is set."""
        name = database or self.database
        if not name:
            raise InputError(
                f"{type(self).__name__} block {self._block_document_name!r} names no database",
                "set its database field or give one with the run",
            )
        return name


class PostgresServer(ServerBlock):
    """A PostgreSQL server and the login vaultflow uses to dump and restore it."""

    _block_type_name = "vaultflow PostgreSQL Server"
    _block_type_slug = "vaultflow-postgres-server"
    _description = "Host, port and credentials of a PostgreSQL server that vaultflow backs up."

    port: int = Field(default=5432, ge=1, le=65535)
    user: str = Field(default="postgres", description="Role used for pg_dump/pg_restore.")
    password: SecretStr | None = Field(default=None, description="Leave empty for trust/peer or ~/.pgpass.")
    sslmode: str | None = Field(default=None, description="libpq sslmode, e.g. require or verify-full.")
    bin_dir: str | None = Field(default=None, description="Directory holding pg_dump/pg_restore; PATH if empty.")
    drill_suites: str | None = Field(
        default=None, description="Directory of expectation suites (JSON/YAML) that restore drills on this "
                                  "server run, besides the default suite.")

    def engine(self, database: str | None = None) -> PostgresEngine:
        from vaultflow.engines.postgres.config import PostgresConnection
        from vaultflow.engines.postgres.engine import PostgresEngine

        return PostgresEngine(PostgresConnection(
            host=self.host, port=self.port, user=self.user, database=self._database_or_default(database),
            password=self.password, sslmode=self.sslmode, bin_dir=self.bin_dir,
        ))

    def server_engine(self) -> PostgresEngine:

        """An engine for listing the server's databases (through the maintenance database)."""
        return self.engine(self.database or "postgres")


class MySQLServer(ServerBlock):
    """A MySQL or MariaDB server and the login vaultflow uses to dump and restore it."""

    _block_type_name = "vaultflow MySQL Server"
    _block_type_slug = "vaultflow-mysql-server"
    _description = "Host, port and credentials of a MySQL/MariaDB server that vaultflow backs up."

    port: int = Field(default=3306, ge=1, le=65535)
    user: str = Field(default="root", description="User for mariadb-dump/mysqldump and the mysql client.")
    password: SecretStr | None = Field(default=None, description="Given to the tools in a 0600 option file.")
    bin_dir: str | None = Field(default=None, description="Directory holding mariadb-dump/mysqldump; PATH if empty.")

    def engine(self, database: str | None = None) -> MySQLEngine:
        from vaultflow.engines.mysql.config import MySQLConnection
        from vaultflow.engines.mysql.engine import MySQLEngine

        return MySQLEngine(MySQLConnection(
            host=self.host, port=self.port, user=self.user, database=self._database_or_default(database),
            password=self.password, bin_dir=self.bin_dir,
        ))

    def server_engine(self) -> MySQLEngine:

        """An engine for listing the server's databases."""
        return self.engine(self.database or "mysql")


class SqlServer(ServerBlock):
    """A SQL Server / Azure SQL Managed Instance and where its native backups are staged.

    Not run against a real server yet (see docs/engines/sqlserver.md). A backup runs BACKUP
    DATABASE ... COPY_ONLY, CHECKSUM into the staging place, streams the .bak into the
    repository and deletes it; a restore does the reverse with RESTORE ... WITH MOVE.
    """

    _block_type_name = "vaultflow SQL Server"
    _block_type_slug = "vaultflow-sqlserver"
    _description = ("SQL Server login and the staging place (Azure Blob container + SAS, or a shared directory) "
                    "for native backups; needs pyodbc and msodbcsql18. Untested against a real server.")

    host: str = Field(description="Host name or address.")
    port: int = Field(default=1433, ge=1, le=65535)
    user: str = Field(default="sa", description="SQL login.")
    password: SecretStr | None = Field(default=None, description="Sent only inside the ODBC connection.")
    driver: str = Field(default="ODBC Driver 18 for SQL Server", description="ODBC driver name.")
    encrypt: bool = Field(default=True, description="Encrypt the connection (TLS).")
    trust_server_certificate: bool = Field(default=False, description="Skip certificate validation.")
    staging_container_url: str | None = Field(
        default=None, description="Azure Blob staging: https://ACCOUNT.blob.core.windows.net/CONTAINER as SQL Server "
                                  "reaches it (BACKUP/RESTORE ... URL).")
    staging_sas: SecretStr | None = Field(
        default=None, description="SAS for the staging container (read, write, create, list, delete); goes into the "
                                  "server's credential and vaultflow's blob client only.")
    staging_client_url: str | None = Field(
        default=None, description="The staging container as vaultflow reaches it, if not the same URL.")
    staging_server_path: str | None = Field(
        default=None, description="Directory staging: the shared directory as the SQL Server host sees it.")
    staging_local_path: str | None = Field(
        default=None, description="Directory staging: the same directory as vaultflow sees it.")
    data_dir: str | None = Field(default=None, description="Where restores put data files; the instance default if "
                                                           "empty.")
    log_dir: str | None = Field(default=None, description="Where restores put log files; the instance default if "
                                                          "empty.")
    compression: bool = Field(default=False, description="BACKUP WITH COMPRESSION (smaller staging, less chunk "
                                                         "reuse between snapshots).")

    def connection(self, database: str | None = None) -> SqlServerConnection:
        from vaultflow.engines.sqlserver.config import SqlServerConnection

        return SqlServerConnection(
            host=self.host, port=self.port, user=self.user, password=self.password,
            database=database or self.database or "master", driver=self.driver, encrypt=self.encrypt,
            trust_server_certificate=self.trust_server_certificate,
        )

    def client(self) -> SqlServerClient:
        from vaultflow.engines.sqlserver.client import SqlServerClient

        return SqlServerClient(self.connection())

    def staging(self) -> Staging | None:
        """The configured staging place; one clear line if it is half set or set twice."""
        from vaultflow.engines.sqlserver.staging import DiskStaging

        name = f"SqlServer block {self._block_document_name!r}"
        blob = self.staging_container_url or self.staging_sas or self.staging_client_url
        disk = self.staging_server_path or self.staging_local_path
        if blob and disk:
            raise InputError(f"{name} sets both Azure Blob and directory staging",
                             "keep either staging_container_url/staging_sas or staging_server_path/"
                             "staging_local_path")
        if blob:
            if not self.staging_container_url or self.staging_sas is None:
                raise InputError(f"{name}: Azure Blob staging needs both staging_container_url and staging_sas",
                                 "set the missing one")
            return blob_staging(self.staging_container_url, self.staging_sas, self.staging_client_url)
        if disk:
            if not self.staging_server_path or not self.staging_local_path:
                raise InputError(f"{name}: directory staging needs both staging_server_path and staging_local_path",
                                 "set the missing one")
            # Whether the directory exists is checked when a backup or restore uses it: a
            # machine that only lists databases need not have the share mounted.
            return DiskStaging(self.staging_server_path, self.staging_local_path)
        return None

    def engine(self, database: str | None = None) -> SqlServerEngine:
        from vaultflow.engines.sqlserver.engine import SqlServerEngine

        return SqlServerEngine(self.connection(self._database_or_default(database)), self.staging(),
                               data_dir=self.data_dir, log_dir=self.log_dir, compression=self.compression)

    def server_engine(self) -> SqlServerEngine:
        from vaultflow.engines.sqlserver.engine import SqlServerEngine

        """An engine for listing the server's databases (through master)."""
        return SqlServerEngine(self.connection(self.database or "master"), self.staging(), data_dir=self.data_dir,
                               log_dir=self.log_dir, compression=self.compression)


def blob_staging(container_url: str, sas: SecretStr, client_url: str | None = None) -> BlobStaging:
    """Azure Blob staging whose vaultflow side is the storage interface: an AzureBlobStore of
    the container (at `client_url` when vaultflow reaches it elsewhere than SQL Server
    does) under STAGING_PREFIX, with the SAS, wrapped in RetryingStore. Checks the URLs'
    shape offline; connects only when a backup or restore uses it."""
    from vaultflow.engines.sqlserver.staging import STAGING_PREFIX, BlobStaging, check_container_url

    check_container_url(container_url)
    if "?" in (client_url or ""):
        raise InputError("the staging client URL must not hold a query string", "give the SAS separately")
    from vaultflow.storage.azure import container_store  # the azure SDK, only when blob staging is set

    staging = BlobStaging(container_url, sas, container_store(client_url or container_url, sas, STAGING_PREFIX))
    staging.check()
    return staging


class SqliteDatabase(Block):
    """An SQLite database file on the machine that runs the flow."""

    _block_type_name = "vaultflow SQLite Database"
    _block_type_slug = "vaultflow-sqlite-database"
    _description = "Path of an SQLite database file that vaultflow backs up."

    path: str = Field(description="Absolute path of the database file.")
    drill_suites: str | None = Field(
        default=None, description="Directory of expectation suites (JSON/YAML) that restore drills in this "
                                  "file's directory run, besides the default suite.")

    def engine(self, database: str | None = None) -> SqliteEngine:
        from vaultflow.engines.sqlite.engine import SqliteEngine

        return SqliteEngine(self.path)

    def server_engine(self) -> SqliteEngine:
        from vaultflow.engines.sqlite.engine import SqliteEngine

        return SqliteEngine(self.path)


class FileTree(Block):
    """A directory tree (uploads, configuration) on the machine that runs the flow."""

    _block_type_name = "vaultflow File Tree"
    _block_type_slug = "vaultflow-file-tree"
    _description = "Absolute path of a directory that vaultflow backs up as one tar stream (file:///dir)."

    path: str = Field(description="Absolute path of the directory.")

    def engine(self, database: str | None = None) -> FileTreeEngine:
        from vaultflow.engines.files.engine import FileTreeEngine

        """The directory's engine; `database` is ignored (a tree is one "database")."""
        if not self.path.startswith("/"):
            raise InputError(f"FileTree block {self._block_document_name!r} has the relative path {self.path!r}",
                             "set its path to an absolute directory")
        return FileTreeEngine(self.path)
