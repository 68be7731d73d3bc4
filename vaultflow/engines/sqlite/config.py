"""SQLite URLs: `sqlite:///relative.db` or `sqlite:////absolute/path.db` (SQLAlchemy style)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote

from vaultflow.errors import InputError

if TYPE_CHECKING:
    from vaultflow.engines.sqlite.engine import SqliteEngine


def engine_from_url(url: str, parts: SplitResult) -> SqliteEngine:
    from vaultflow.engines.sqlite.engine import SqliteEngine

    path = unquote(parts.path)
    if parts.netloc or not path or path == "/":
        raise InputError("the SQLite URL has a host part or no file path",
                         "write it as sqlite:///relative.db or sqlite:////absolute/path.db")
    return SqliteEngine(path[1:])
