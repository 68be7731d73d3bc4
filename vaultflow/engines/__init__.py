"""Database engines behind one interface, and parsing of database URLs."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import SecretStr

from vaultflow.engines.base import DatabaseEngine, DumpSession, StreamReader, StreamSource
from vaultflow.engines.mysql import MySQLConnection, MySQLEngine
from vaultflow.engines.postgres import PostgresConnection, PostgresEngine
from vaultflow.engines.sqlite import SqliteEngine
from vaultflow.errors import InputError

__all__ = [
    "DatabaseEngine",
    "DumpSession",
    "MySQLConnection",
    "MySQLEngine",
    "PostgresConnection",
    "PostgresEngine",
    "SqliteEngine",
    "StreamReader",
    "StreamSource",
    "engine_from_url",
    "is_database_url",
    "server_from_url",
]

URL_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "sqlite")


def is_database_url(text: str) -> bool:
    return "://" in text


def engine_from_url(url: str) -> DatabaseEngine:
    """`postgresql://user@host:port/db[?sslmode=..]`, `mysql://user@host:port/db` (or mariadb://),
    or `sqlite:///path/to/file.db`.

    A password inside the URL is refused: URLs end up in run parameters, logs and shell
    history. Passwords come from a saved block, PGPASSWORD or ~/.pgpass (MySQL: MYSQL_PWD).
    """
    try:
        return _engine_from_url(url)
    except ValueError:  # malformed netloc or port; never echo the URL, it may hold a secret
        raise InputError("the database URL is malformed",
                         "write it as postgresql://user@host:port/db, mysql://user@host:port/db or "
                         "sqlite:///file.db") from None


_ALLOWED_QUERY = {"sslmode"}


def _engine_from_url(url: str) -> DatabaseEngine:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise InputError(
            "the database URL contains a password",
            "remove it and use a saved engine block, PGPASSWORD, ~/.pgpass or MYSQL_PWD instead",
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
    raise InputError(f"unsupported database URL scheme {scheme!r}",
                     "use postgresql://user@host:port/db, mysql://user@host:port/db or sqlite:///path/to/file.db")


def server_from_url(url: str) -> DatabaseEngine:
    """`postgresql://user@host:port` or `mysql://user@host:port` (a database part is allowed):
    an engine for listing the server's databases; pick one with `with_database`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("postgresql", "postgres"):
        default = "postgres"
    elif scheme in ("mysql", "mariadb"):
        default = "mysql"
    else:
        raise InputError(f"{scheme!r} URLs do not name a server whose databases can be listed",
                         "give postgresql://user@host:port or mysql://user@host:port")
    if parts.path.strip("/"):
        return engine_from_url(url)
    return engine_from_url(url.split("?", 1)[0].rstrip("/") + "/" + default + (
        "?" + parts.query if parts.query else ""))
