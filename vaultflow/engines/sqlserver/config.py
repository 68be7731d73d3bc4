"""SQL Server connection settings: `SqlServerConnection`, the ODBC connection string, and
URLs `mssql://user@host:port/db[?server_path=..&local_path=..]` (or `sqlserver://`).

NEVER RUN AGAINST A REAL SERVER: the strings are tested, no SQL Server ever read them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qs, unquote

from pydantic import SecretStr

from vaultflow.errors import InputError

if TYPE_CHECKING:
    from vaultflow.engines.sqlserver.engine import SqlServerEngine

DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"
_QUERY = {"server_path", "local_path", "trust_server_certificate", "encrypt"}


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



def _yes_no(name: str, values: list[str]) -> bool:
    value = values[-1].lower()
    if value not in ("yes", "no", "true", "false"):
        raise InputError(f"SQL Server URL parameter {name}={values[-1]!r} is not yes or no",
                         f"write {name}=yes or {name}=no")
    return value in ("yes", "true")


def engine_from_url(url: str, parts: SplitResult) -> SqlServerEngine:
    """SQL login `user` (password from SQLCMDPASSWORD), disk staging from `server_path` and
    `local_path`, TLS settings from `encrypt`/`trust_server_certificate`. Azure Blob staging,
    whose SAS is a secret, needs a SqlServer block."""
    from vaultflow.engines.sqlserver.engine import SqlServerEngine
    from vaultflow.engines.sqlserver.staging import DiskStaging

    query = parse_qs(parts.query)
    unknown = sorted(set(query) - _QUERY)
    if unknown:
        raise InputError(f"unsupported SQL Server URL parameter(s) {', '.join(unknown)}",
                         f"only {', '.join(sorted(_QUERY))} are accepted; put other settings (Azure Blob "
                         "staging) in a SqlServer block")
    host = parts.hostname
    database = unquote(parts.path.lstrip("/"))
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
        host=host or "127.0.0.1", port=parts.port or 1433,
        user=unquote(parts.username) if parts.username else "sa", database=database,
        password=SecretStr(env_password) if env_password else None,
        encrypt=_yes_no("encrypt", query["encrypt"]) if "encrypt" in query else True,
        trust_server_certificate=(_yes_no("trust_server_certificate", query["trust_server_certificate"])
                                  if "trust_server_certificate" in query else False),
    )
    return SqlServerEngine(conn, staging)
