"""Database engines behind one interface, and parsing of database URLs."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import SecretStr

from vaultflow.engines.base import DatabaseEngine, DumpSession, StreamReader, StreamSource
from vaultflow.engines.mysql import MySQLConnection, MySQLEngine
from vaultflow.engines.postgres import PostgresConnection, PostgresEngine
from vaultflow.engines.sqlite import SqliteEngine
from vaultflow.engines.sqlserver import DiskStaging, SqlServerConnection, SqlServerEngine
from vaultflow.errors import InputError

__all__ = [
    "DatabaseEngine",
    "DumpSession",
    "MySQLConnection",
    "MySQLEngine",
    "PostgresConnection",
    "PostgresEngine",
    "SqlServerConnection",
    "SqlServerEngine",
    "SqliteEngine",
    "StreamReader",
    "StreamSource",
    "engine_from_url",
    "is_database_url",
    "server_from_url",
]

URL_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "sqlite", "mssql", "sqlserver")


def is_database_url(text: str) -> bool:
    return "://" in text


def engine_from_url(url: str) -> DatabaseEngine:
    """`postgresql://user@host:port/db[?sslmode=..]`, `mysql://user@host:port/db` (or mariadb://),
    `mssql://user@host:port/db[?server_path=..&local_path=..]` (or sqlserver://), or
    `sqlite:///path/to/file.db`.

    A password inside the URL is refused: URLs end up in run parameters, logs and shell
    history. Passwords come from a saved block, PGPASSWORD or ~/.pgpass (MySQL: MYSQL_PWD,
    SQL Server: SQLCMDPASSWORD). A SQL Server URL can name a staging directory (disk
    staging); Azure Blob staging, whose SAS is a secret, needs a SqlServer block.
    """
    try:
        return _engine_from_url(url)
    except ValueError:  # malformed netloc or port; never echo the URL, it may hold a secret
        raise InputError("the database URL is malformed",
                         "write it as postgresql://user@host:port/db, mysql://user@host:port/db, "
                         "mssql://user@host:port/db or sqlite:///file.db") from None


_ALLOWED_QUERY = {"sslmode"}
_SQLSERVER_QUERY = {"server_path", "local_path", "trust_server_certificate", "encrypt"}


def _engine_from_url(url: str) -> DatabaseEngine:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise InputError(
            "the database URL contains a password",
            "remove it and use a saved engine block, PGPASSWORD, ~/.pgpass, MYSQL_PWD or SQLCMDPASSWORD instead",
        )
    if scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path or path == "/":
            raise InputError("the SQLite URL has a host part or no file path",
                             "write it as sqlite:///relative.db or sqlite:////absolute/path.db")
        return SqliteEngine(path[1:])  # sqlite:///rel.db, sqlite:////abs.db (SQLAlchemy style)
    if scheme in ("postgresql", "postgres"):
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - _ALLOWED_QUERY)
        if unknown:
            raise InputError(f"unsupported URL parameter(s) {', '.join(unknown)}",
                             "only sslmode is accepted; put other settings in a PostgresServer block")
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise InputError(f"PostgreSQL URL for {parts.hostname} names no database",
                             "append /DBNAME to the URL")
        return PostgresEngine(PostgresConnection(
            host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
            user=unquote(parts.username) if parts.username else "postgres", database=database,
            sslmode=query.get("sslmode", [None])[0],
        ))
    if scheme in ("mysql", "mariadb"):
        env_password = os.environ.get("MYSQL_PWD")
        if parts.query:
            raise InputError("MySQL URLs take no parameters", "put other settings in a MySQLServer block")
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise InputError(f"MySQL URL for {parts.hostname} names no database", "append /DBNAME to the URL")
        return MySQLEngine(MySQLConnection(
            host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
            user=unquote(parts.username) if parts.username else "root", database=database,
            password=SecretStr(env_password) if env_password else None,
        ))
    if scheme in ("mssql", "sqlserver"):
        return _sqlserver_from_url(parts.hostname, parts.port, parts.username, parts.path, parts.query)
    raise InputError(f"unsupported database URL scheme {scheme!r}",
                     "use postgresql://user@host:port/db, mysql://user@host:port/db, mssql://user@host:port/db or "
                     "sqlite:///path/to/file.db")


def _yes_no(name: str, values: list[str]) -> bool:
    value = values[-1].lower()
    if value not in ("yes", "no", "true", "false"):
        raise InputError(f"SQL Server URL parameter {name}={values[-1]!r} is not yes or no", f"write {name}=yes or "
                         f"{name}=no")
    return value in ("yes", "true")


def _sqlserver_from_url(host: str | None, port: int | None, user: str | None, path: str, query_text: str
                        ) -> DatabaseEngine:
    """mssql://user@host:port/db: SQL login `user` (password from SQLCMDPASSWORD), disk staging
    from `server_path` and `local_path`, TLS settings from `encrypt`/`trust_server_certificate`."""
    query = parse_qs(query_text)
    unknown = sorted(set(query) - _SQLSERVER_QUERY)
    if unknown:
        raise InputError(f"unsupported SQL Server URL parameter(s) {', '.join(unknown)}",
                         f"only {', '.join(sorted(_SQLSERVER_QUERY))} are accepted; put other settings (Azure Blob "
                         "staging) in a SqlServer block")
    database = unquote(path.lstrip("/"))
    if not database:
        raise InputError(f"SQL Server URL for {host} names no database", "append /DBNAME to the URL")
    staging = None
    if "server_path" in query or "local_path" in query:
        staging = DiskStaging(server_path=query.get("server_path", [""])[-1],
                              local_path=query.get("local_path", [""])[-1])
        if not staging.server_path or not staging.local_path:
            raise InputError("disk staging for SQL Server needs both server_path and local_path",
                             "add the directory as the SQL Server host sees it and as vaultflow sees it to the URL")
    env_password = os.environ.get("SQLCMDPASSWORD")
    conn = SqlServerConnection(
        host=host or "127.0.0.1", port=port or 1433, user=unquote(user) if user else "sa", database=database,
        password=SecretStr(env_password) if env_password else None,
        encrypt=_yes_no("encrypt", query["encrypt"]) if "encrypt" in query else True,
        trust_server_certificate=(_yes_no("trust_server_certificate", query["trust_server_certificate"])
                                  if "trust_server_certificate" in query else False),
    )
    return SqlServerEngine(conn, staging)


def server_from_url(url: str) -> DatabaseEngine:
    """`postgresql://user@host:port` or `mysql://user@host:port` (a database part is allowed):
    an engine for listing the server's databases; pick one with `with_database`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("postgresql", "postgres"):
        default = "postgres"
    elif scheme in ("mysql", "mariadb"):
        default = "mysql"
    elif scheme in ("mssql", "sqlserver"):
        default = "master"
    else:
        raise InputError(f"{scheme!r} URLs do not name a server whose databases can be listed",
                         "give postgresql://user@host:port, mysql://user@host:port or mssql://user@host:port")
    if parts.path.strip("/"):
        return engine_from_url(url)
    return engine_from_url(url.split("?", 1)[0].rstrip("/") + "/" + default + (
        "?" + parts.query if parts.query else ""))
