"""MySQL/MariaDB URLs: `mysql://user@host:port/db` (or `mariadb://`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote

from pydantic import SecretStr

from vaultflow.errors import InputError

if TYPE_CHECKING:
    from vaultflow.engines.mysql.engine import MySQLEngine


@dataclass(frozen=True)
class MySQLConnection:
    """Where a MySQL/MariaDB database is; the password travels only as a SecretStr."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    database: str = ""
    password: SecretStr | None = None
    bin_dir: str | None = None
    connect_timeout: int = 10


def engine_from_url(url: str, parts: SplitResult) -> MySQLEngine:
    """The password comes from MYSQL_PWD or a MySQLServer block, never the URL."""
    from vaultflow.engines.mysql.engine import MySQLEngine

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


def quote_identifier(name: str) -> str:
    """A backquoted MySQL identifier (a backquote in the name doubled)."""
    return "`" + name.replace("`", "``") + "`"
