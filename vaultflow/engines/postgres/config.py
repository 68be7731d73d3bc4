"""PostgreSQL URLs: `postgresql://user@host:port/db[?sslmode=...]`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qs, unquote

from pydantic import SecretStr

from vaultflow.errors import InputError

if TYPE_CHECKING:
    from vaultflow.engines.postgres.engine import PostgresEngine

_ALLOWED_QUERY = {"sslmode"}


@dataclass(frozen=True)
class PostgresConnection:
    """Where a PostgreSQL database is; the password travels only as a SecretStr."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    database: str = "postgres"
    password: SecretStr | None = None
    sslmode: str | None = None
    bin_dir: str | None = None
    maintenance_database: str = "postgres"
    connect_timeout: int = 10


def engine_from_url(url: str, parts: SplitResult) -> PostgresEngine:
    """The password comes from PGPASSWORD, ~/.pgpass or a PostgresServer block, never the URL."""
    from vaultflow.engines.postgres.engine import PostgresEngine

    query = parse_qs(parts.query)
    unknown = sorted(set(query) - _ALLOWED_QUERY)
    if unknown:
        raise InputError(f"unsupported URL parameter(s) {', '.join(unknown)}",
                         "only sslmode is accepted; put other settings in a PostgresServer block")
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise InputError(f"PostgreSQL URL for {parts.hostname} names no database", "append /DBNAME to the URL")
    return PostgresEngine(PostgresConnection(
        host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
        user=unquote(parts.username) if parts.username else "postgres", database=database,
        sslmode=query.get("sslmode", [None])[0],
    ))
