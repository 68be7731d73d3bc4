"""File tree URLs: `file:///absolute/path/to/dir` (host part empty or `localhost`)."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote

from vaultflow.errors import InputError

if TYPE_CHECKING:
    from vaultflow.engines.files.engine import FileTreeEngine

_HOW = "write it as file:///absolute/path/to/dir"


def engine_from_url(url: str, parts: SplitResult) -> FileTreeEngine:
    """The engine for the directory a file:// URL names; refuses hosts, queries, relative
    paths and the filesystem root (a restore swaps the directory by renaming a sibling)."""
    from vaultflow.engines.files.engine import FileTreeEngine

    if parts.netloc not in ("", "localhost"):
        raise InputError(f"the file URL names host {parts.netloc!r}; file trees are backed up where they are",
                         _HOW + " and run vaultflow on that host")
    if parts.query or parts.fragment:
        raise InputError("the file URL has a query or fragment, which file trees do not take", _HOW)
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise InputError("the file URL has no absolute directory path", _HOW)
    path = posixpath.normpath(path)
    if path in ("/", "//"):
        raise InputError("the file URL names the filesystem root", "name a directory below /, " + _HOW)
    return FileTreeEngine(path)
