"""Turn what a user typed (a block name, a URL, a path) into core objects."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

from prefect.blocks.core import Block
from pydantic import SecretStr

from vaultflow.engines import DatabaseEngine, engine_from_url, is_database_url
from vaultflow.errors import InputError
from vaultflow.repository import Repository, open_repository

ENGINE_BLOCK_SLUGS = ("vaultflow-postgres-server", "vaultflow-sqlite-database")


def _load_block(slug: str, name: str) -> Block | None:
    try:
        return cast(Block, Block.load(f"{slug}/{name}"))
    except ValueError:
        return None


def resolve_engine(ref: str) -> DatabaseEngine:
    """A database URL, or the name of a saved PostgresServer/SqliteDatabase block.

    `name/database` picks another database on a saved server.
    """
    if is_database_url(ref):
        return engine_from_url(ref)
    name, _, database = ref.partition("/")
    for slug in ENGINE_BLOCK_SLUGS:
        block = _load_block(slug, name)
        if block is not None:
            return block.engine(database or None)  # type: ignore[attr-defined, no-any-return]
    raise InputError(
        f"no database URL and no saved engine block named {name!r}",
        f"create it: `prefect block register -m blocks`, then Prefect UI > Blocks > + > vaultflow PostgreSQL "
        f"Server (or SQLite Database) named {name!r} (in Python: PostgresServer(...).save({name!r})); "
        "or give postgresql://user@host:port/db or sqlite:///file.db",
    )


@dataclass(frozen=True)
class RepositoryRef:
    location: str
    passphrase: SecretStr | None
    catalog_url: str | None = None

    def open(self) -> Repository:
        """Open the repository with this reference's passphrase (connects to storage)."""
        return open_repository(self.location, self.passphrase.get_secret_value() if self.passphrase else None)


def is_location(ref: str) -> bool:
    return "/" in ref or "://" in ref or ref.startswith((".", "~"))


def resolve_repository(ref: str | None) -> RepositoryRef:
    """A path or URL (passphrase from VAULTFLOW_PASSPHRASE), or a BackupRepository block name.

    Without `ref`, VAULTFLOW_REPO is used.
    """
    ref = ref or os.environ.get("VAULTFLOW_REPO")
    if not ref:
        raise InputError("no repository given", "pass --repo PATH or set VAULTFLOW_REPO")
    if is_location(ref):
        env = os.environ.get("VAULTFLOW_PASSPHRASE")
        return RepositoryRef(ref, SecretStr(env) if env else None, os.environ.get("VAULTFLOW_CATALOG_URL"))
    block = _load_block("vaultflow-backup-repository", ref)
    if block is None:
        raise InputError(
            f"no BackupRepository block named {ref!r}",
            f"create it: `prefect block register -m blocks`, then Prefect UI > Blocks > + > vaultflow Backup "
            f"Repository named {ref!r} (in Python: BackupRepository(...).save({ref!r})); or give a path such as ./repo",
        )
    return RepositoryRef(block.location, block.passphrase, block.catalog_url)  # type: ignore[attr-defined]
