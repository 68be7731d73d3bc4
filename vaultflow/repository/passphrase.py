"""Where a process without a terminal finds the repository passphrase.

`VAULTFLOW_PASSPHRASE`, or `VAULTFLOW_PASSPHRASE_FILE` naming a file of one line that only its
owner may read (mode 0600 or 0400), so no passphrase sits in postgresql.conf or in the
environment of a server. Errors name the variable or the file, never the passphrase.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from vaultflow.errors import InputError

PASSPHRASE_ENV = "VAULTFLOW_PASSPHRASE"
PASSPHRASE_FILE_ENV = "VAULTFLOW_PASSPHRASE_FILE"
_MAX_FILE = 4096


def passphrase_from_environment(env: Mapping[str, str] | None = None) -> str | None:
    """The passphrase of VAULTFLOW_PASSPHRASE or VAULTFLOW_PASSPHRASE_FILE, None when neither is
    set; InputError when both are, or when the file is unsafe (readable by group or others, not
    a regular file), empty or more than one line."""
    env = os.environ if env is None else env
    value = env.get(PASSPHRASE_ENV) or None
    path = env.get(PASSPHRASE_FILE_ENV) or None
    if path is None:
        return value
    if value is not None:
        raise InputError(f"both {PASSPHRASE_ENV} and {PASSPHRASE_FILE_ENV} are set",
                         "set only one of them")
    return read_passphrase_file(path)


def read_passphrase_file(path: str) -> str:
    """The one line of a passphrase file that only its owner can read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"cannot open passphrase file {path} ({exc.strerror})",
                         f"check {PASSPHRASE_FILE_ENV}, the file's owner and its mode (0600)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"passphrase file {path} is not a regular file", "point it at a file of one line")
        if info.st_mode & 0o077:
            raise InputError(f"passphrase file {path} has mode {stat.S_IMODE(info.st_mode):04o}: group or others "
                             "may read it", f"chmod 600 {path}")
        raw = os.read(fd, _MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(raw) > _MAX_FILE:
        raise InputError(f"passphrase file {path} is longer than {_MAX_FILE} bytes", "put only the passphrase in it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"passphrase file {path} is not UTF-8 text", "put only the passphrase in it") from None
    lines = text.removesuffix("\n").removesuffix("\r").split("\n")
    if len(lines) != 1:
        raise InputError(f"passphrase file {path} has {len(lines)} lines", "put the passphrase on one line")
    if not lines[0]:
        raise InputError(f"passphrase file {path} is empty", "put the passphrase in it, on one line")
    return lines[0]


KEY_ID_ENV = "VAULTFLOW_KEY_ID"
_KEY_ID_CHARS = frozenset("0123456789abcdef")


def key_id_from_environment(env: Mapping[str, str] | None = None) -> str | None:
    """The key id hint of VAULTFLOW_KEY_ID (4 to 32 leading hex digits of a key id, as `vaultflow
    key list` shows them), lowercased; None when unset. With it, opening a version 2 repository
    tries that key alone (one scrypt) instead of every key object. InputError for anything else."""
    env = os.environ if env is None else env
    value = (env.get(KEY_ID_ENV) or "").strip().lower()
    if not value:
        return None
    if not 4 <= len(value) <= 32 or not _KEY_ID_CHARS.issuperset(value):
        raise InputError(f"{KEY_ID_ENV} is not a key id (4 to 32 hex digits)",
                         f"set it to the key's id from: vaultflow key list (or unset {KEY_ID_ENV})")
    return value
