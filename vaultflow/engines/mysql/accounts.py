"""MySQL/MariaDB server-wide objects: users, roles and their grants as SQL, one statement
per line, with password hashes only when asked for."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

import pymysql

from vaultflow.engines.base import GLOBALS_STREAM, StreamReader, StreamSource
from vaultflow.errors import InputError, ToolFailed
from vaultflow.repository.manifest import StreamManifest

if TYPE_CHECKING:
    from vaultflow.engines.mysql.engine import MySQLEngine

_log = logging.getLogger("vaultflow.mysql")

GLOBALS_FORMAT = "mysql-accounts-sql"  # CREATE USER/ROLE and GRANT statements, one per line
SYSTEM_ACCOUNTS = ("mariadb.sys", "mysql.sys", "mysql.session", "mysql.infoschema")


def account_statements(engine: MySQLEngine, *, passwords: bool = False) -> list[str]:
    """CREATE USER/ROLE IF NOT EXISTS and GRANT statements of every account but the
    server's own, from SHOW CREATE USER and SHOW GRANTS; password hashes only if asked."""
    out: list[str] = []
    with engine.connect() as c, c.cursor() as cur:
        try:
            try:
                cur.execute("SELECT User, Host, is_role FROM mysql.user ORDER BY is_role DESC, User, Host")
            except pymysql.MySQLError:  # MySQL: roles are locked accounts
                cur.execute("SELECT User, Host, 'N' FROM mysql.user ORDER BY User, Host")
            accounts = [(str(u), str(h), str(r) == "Y") for u, h, r in cur.fetchall()]
            for user, host, is_role in accounts:
                if user in SYSTEM_ACCOUNTS or (user, host) == ("mysql", "localhost"):
                    continue
                account = f"{_quote_text(user)}@{_quote_text(host)}"
                if is_role:
                    out.append(f"CREATE ROLE IF NOT EXISTS {_quote_text(user)}")
                else:
                    cur.execute(f"SHOW CREATE USER {account}")
                    row = cur.fetchone()
                    create = str(row[0]) if row else f"CREATE USER {account}"
                    out.append(_if_not_exists(create if passwords else strip_authentication(create)))
                cur.execute(f"SHOW GRANTS FOR {_quote_text(user) if is_role else account}")
                out.extend(strip_authentication(str(r[0])) for r in cur.fetchall())
        except pymysql.MySQLError as exc:
            raise engine.map_error(exc, "mysql") from None
    return [statement.replace("\n", " ") for statement in out]  # one statement per line


def globals_source(engine: MySQLEngine, *, passwords: bool = False) -> StreamSource:
    """Users, roles and their grants as SQL, one statement per line."""

    @contextmanager
    def open_accounts() -> Iterator[IO[bytes]]:
        text = "".join(f"{statement};\n" for statement in account_statements(engine, passwords=passwords))
        yield io.BytesIO(text.encode())

    return StreamSource(GLOBALS_STREAM, GLOBALS_FORMAT, open_accounts, meta={"passwords": str(passwords).lower()})


def restore_globals(engine: MySQLEngine, stream: StreamManifest, read: StreamReader) -> None:
    """Run the statements; accounts that exist keep their password, grants are added."""
    if stream.format != GLOBALS_FORMAT:
        raise InputError(f"stream {stream.name!r} holds {stream.format}, not MySQL accounts",
                         "restore globals into a server of the snapshot's engine")
    buffer = io.BytesIO()
    read(stream, buffer)
    with engine.connect() as c, c.cursor() as cur:
        for statement in buffer.getvalue().decode("utf-8").splitlines():
            if not statement.strip():
                continue
            try:
                cur.execute(statement.rstrip().rstrip(";"))
            except pymysql.MySQLError as exc:
                if statement.startswith("GRANT PROXY ON "):  # needs a PROXY grant the restoring user may lack
                    _log.warning("%s: skipped %s (%s)", engine.server_label(), statement.rstrip(";"), exc.args[-1])
                    continue
                raise ToolFailed(f"restoring accounts on {engine.server_label()} failed at "
                                 f"{statement.split(' IDENTIFIED')[0][:160]!r}: "
                                 f"{hide_authentication(str(exc.args[-1]), statement)}",
                                 "fix the account named there, then restore with --globals again") from None


_AUTHENTICATION = re.compile(
    r"\s+IDENTIFIED\s+(?:BY|WITH|VIA)\b(?:'(?:[^'\\]|\\.)*'|[^'])*?"
    r"(?=\s+(?:REQUIRE|WITH\s+(?:MAX_\w+|GRANT\s+OPTION|ADMIN\s+OPTION)|PASSWORD\s+EXPIRE|ACCOUNT|DEFAULT\s+ROLE)\b|$)",
    re.IGNORECASE)


def strip_authentication(statement: str) -> str:
    """The statement without its IDENTIFIED ... clause (password hash, plugin, auth string)."""
    return _AUTHENTICATION.sub("", statement)


_AUTH_LITERAL = re.compile(r"""\b(?:AS|USING|PASSWORD|BY)\s+('(?:[^'\\]|\\.)*'|0x[0-9A-Fa-f]+)""", re.IGNORECASE)


def hide_authentication(message: str, statement: str) -> str:
    """A server's error about `statement` without the statement's password hash or auth string.

    A syntax error quotes the statement from where parsing stopped ("near '...'"), which
    can be inside the IDENTIFIED clause; so that excerpt is dropped, and any literal of the
    clause the message still holds is masked.
    """
    _, identified, clause = statement.partition(" IDENTIFIED")
    if not identified:
        return message
    message = re.sub(r" near '.*' at line \d+", " near the account's authentication clause (not shown)", message,
                     flags=re.DOTALL)
    for literal in _AUTH_LITERAL.findall(clause):
        secret = literal.strip("'")
        if secret:
            message = message.replace(secret, "***")
    return message


def _if_not_exists(create: str) -> str:
    return re.sub(r"^CREATE USER\s+(?!IF NOT EXISTS)", "CREATE USER IF NOT EXISTS ", create, count=1)


def _quote_text(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

