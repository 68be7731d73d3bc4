"""Database engines behind one interface, and parsing of database URLs."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from vaultflow.engines.base import DatabaseEngine, DumpSession, StreamWriter
from vaultflow.engines.postgres import PostgresConnection, PostgresEngine
from vaultflow.engines.sqlite import SqliteEngine
from vaultflow.errors import InputError

__all__ = [
    "DatabaseEngine",
    "DumpSession",
    "PostgresConnection",
    "PostgresEngine",
    "SqliteEngine",
    "StreamWriter",
    "engine_from_url",
    "is_database_url",
]

URL_SCHEMES = ("postgresql", "postgres", "sqlite")


def is_database_url(text: str) -> bool:
    return "://" in text


def engine_from_url(url: str) -> DatabaseEngine:
    """`postgresql://user@host:port/db[?sslmode=..]` or `sqlite:///path/to/file.db`.

    A password inside the URL is refused: URLs end up in run parameters, logs and shell
    history. Passwords come from a saved block, PGPASSWORD or ~/.pgpass.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path or path == "/":
            raise InputError(f"SQLite URL {url!r} has no file path",
                             "write it as sqlite:///relative.db or sqlite:////absolute/path.db")
        return SqliteEngine(path[1:])  # sqlite:///rel.db, sqlite:////abs.db (SQLAlchemy style)
    if scheme in ("postgresql", "postgres"):
        if parts.password is not None:
            raise InputError(
                "the database URL contains a password",
                "remove it and use a PostgresServer block, PGPASSWORD or ~/.pgpass instead",
            )
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise InputError(f"PostgreSQL URL for {parts.hostname} names no database",
                             "append /DBNAME to the URL")
        query = parse_qs(parts.query)
        try:
            port = parts.port or 5432
        except ValueError:
            raise InputError(f"the port in {parts.netloc!r} is not a number", "fix the URL") from None
        return PostgresEngine(PostgresConnection(
            host=parts.hostname or "127.0.0.1", port=port,
            user=unquote(parts.username) if parts.username else "postgres", database=database,
            sslmode=query.get("sslmode", [None])[0],
        ))
    raise InputError(f"unsupported database URL scheme {scheme!r}",
                     "use postgresql://user@host:port/db or sqlite:///path/to/file.db")
