"""PITR marks of every engine: a named restore point and the table statistics at it, stored once,
sealed, for a later PITR drill to restore to and compare with.

    marks/<source>/<name>    sealed JSON, AAD = "mark:" + <key>

`<source>` is what the engine's log is archived under: a PostgreSQL cluster's system identifier
(engines/postgres/pitr_mark.py), a MySQL/MariaDB server's host-port (engines/mysql/binlog_mark.py).
"""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel

from vaultflow.errors import InputError, IntegrityError, VaultflowError
from vaultflow.repository.crypto import SealError
from vaultflow.repository.repository import Repository

MARK_PREFIX = "marks/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
Mark = TypeVar("Mark", bound=BaseModel)


class MarkFailed(VaultflowError):
    """The mark could not be made exact (a lock timed out, a table appeared while marking), or its log
    did not reach the repository in time; exit 1."""


def check_mark_name(name: str) -> str:
    """A restore point name that is also a key: letters, digits, `.`, `_`, `-`, at most 63 bytes."""
    if not _NAME.match(name):
        raise InputError(f"mark name {name!r} is not 1-63 letters, digits, '.', '_' or '-' (starting with a "
                         "letter or digit)", "e.g. --name nightly-2026-12-04")
    return name


def mark_key(source: str, name: str) -> str:
    return f"{MARK_PREFIX}{source}/{name}"


def _aad(key: str) -> bytes:
    return b"mark:" + key.encode()


def refuse_taken(repo: Repository, source: str, name: str, owner: str) -> None:
    """InputError when `owner` (e.g. "cluster 7123...") already has a mark named `name`."""
    if repo.store.stat(mark_key(source, name)) is not None:
        raise InputError(f"{owner} already has a mark named {name!r}",
                         "choose another --name (vaultflow pitr marks lists them)")


def save_sealed_mark(repo: Repository, source: str, name: str, mark: BaseModel, owner: str) -> None:
    """Write the mark once (synced put); a taken name is refused."""
    refuse_taken(repo, source, name, owner)
    key = mark_key(source, name)
    repo.store.put(key, repo.sealer.seal(mark.model_dump_json(by_alias=True).encode(), _aad(key)), sync=True)


def load_sealed_mark(repo: Repository, source: str, name: str, model: type[Mark], owner: str, make: str) -> Mark:
    """The named mark; InputError (one line) when there is none of that name (`make`: the command
    that makes one)."""
    key = mark_key(source, check_mark_name(name))
    if repo.store.stat(key) is None:
        raise InputError(f"{owner} has no mark named {name!r} in the repository at {repo.store.describe()}",
                         f"vaultflow pitr marks lists them; {make} makes one")
    return read_sealed_mark(repo, key, model)


def read_sealed_mark(repo: Repository, key: str, model: type[Mark]) -> Mark:
    try:
        payload = repo.sealer.open(repo.store.get(key), _aad(key))
    except SealError:
        raise IntegrityError(f"mark {key} is damaged or was altered", "make a new mark") from None
    return model.model_validate_json(payload)


def sealed_marks(repo: Repository, source: str, model: type[Mark]) -> list[Mark]:
    """Every mark stored under `source`, in key order."""
    return [read_sealed_mark(repo, info.key, model) for info in repo.store.list(f"{MARK_PREFIX}{source}/")]
