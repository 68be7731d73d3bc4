"""Turn what a user typed (a block name, a URL, a path) into core objects."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from prefect.blocks.core import Block
from pydantic import SecretStr

from vaultflow.catalog.catalog import vaultflow_home
from vaultflow.engines import DatabaseEngine, engine_from_url, engines, is_database_url, server_from_url
from vaultflow.engines.registry import spec, spec_for_scheme
from vaultflow.errors import InputError, RepositoryNotInitialised
from vaultflow.repository import Repository, open_repository
from vaultflow.repository.passphrase import passphrase_from_environment
from vaultflow.storage import ObjectStore, open_store

if TYPE_CHECKING:
    from blocks.repository import StorageSettings

ENGINE_BLOCK_SLUGS = tuple(slug for spec in engines() for slug in spec.block_types)


# The module defining each block type: imported only to load a saved block of that type, so a
# command given URLs and paths never pays for prefect-aws / prefect-azure (seconds of imports).
_BLOCK_MODULES = {"vaultflow-backup-repository": "blocks.repository", "vaultflow-archive-policy": "blocks.archive",
                  **{slug: "blocks.engines" for slug in ENGINE_BLOCK_SLUGS}}


def _load_block(slug: str, name: str) -> Block | None:
    modules = [_BLOCK_MODULES[slug]] if slug in _BLOCK_MODULES else sorted(set(_BLOCK_MODULES.values()))
    for module in modules:
        importlib.import_module(module)  # registers the block class Block.load looks up by slug
    try:
        return cast(Block, Block.load(f"{slug}/{name}"))
    except ValueError:
        return None


def block_label(ref: Block | str | None) -> str | None:
    """What names a parameter in run names, events and messages: a block's saved name, else the text."""
    if isinstance(ref, Block):
        return ref._block_document_name or type(ref).get_block_type_slug()
    return ref


def resolve_engine(ref: str | Block) -> DatabaseEngine:
    """A database URL, a saved PostgresServer/MySQLServer/SqliteDatabase block (as a flow
    parameter gets it from a block picker) or its name.

    `name/database` picks another database on a saved server.
    """
    if isinstance(ref, Block):
        return _engine_block(ref).engine(None)  # type: ignore[attr-defined, no-any-return]
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
        "or give postgresql://user@host:port/db, mysql://user@host:port/db or sqlite:///file.db",
    )


FILE_TREE_SLUG = "vaultflow-file-tree"


def resolve_file_tree(ref: str | Block) -> DatabaseEngine:
    """A file:///dir URL, a saved FileTree block or its name; anything else is refused in
    one line (a backup set's trees and restore targets are directories)."""
    if isinstance(ref, Block):
        if type(ref).get_block_type_slug() != FILE_TREE_SLUG:
            raise InputError(f"a {type(ref).__name__} block is not a file tree",
                             "pick a vaultflow File Tree block, or give file:///dir")
        return _engine_block(ref).engine(None)  # type: ignore[attr-defined, no-any-return]
    if is_database_url(ref):
        engine = engine_from_url(ref)
        if engine.engine != "files":
            raise InputError(f"{engine.describe()} is not a file tree", "give file trees as file:///dir or the name "
                                                                         "of a FileTree block")
        return engine
    block = _load_block(FILE_TREE_SLUG, ref)
    if block is None:
        raise InputError(f"no file:// URL and no saved FileTree block named {ref!r}",
                         "give file:///absolute/dir, or create the block (FileTree(path=...).save(name))")
    return block.engine(None)  # type: ignore[attr-defined, no-any-return]


ENGINE_SLUG_PREFIX = "vaultflow-"


def saved_engine_blocks() -> list[tuple[str, Block]]:
    """(name, block) of every saved block of a vaultflow engine type, found through the API:
    block types whose slug starts with "vaultflow-" and whose class can list a server."""
    from prefect.client.orchestration import get_client

    out: list[tuple[str, Block]] = []
    with get_client(sync_client=True) as client:
        slugs = sorted(t.slug for t in client.read_block_types() if t.slug.startswith(ENGINE_SLUG_PREFIX))
        for slug in slugs:
            for doc in client.read_block_documents_by_type(slug, include_secrets=False):
                if not doc.name or doc.is_anonymous:
                    continue
                block = _load_block(slug, doc.name)
                if block is not None and callable(getattr(block, "server_engine", None)):
                    out.append((doc.name, block))
    return out


def resolve_server(ref: str) -> DatabaseEngine:
    """A server URL (postgresql://user@host:port, mysql://user@host:port) or an engine block name."""
    if is_database_url(ref):
        return server_from_url(ref)
    for slug in ENGINE_BLOCK_SLUGS:
        block = _load_block(slug, ref)
        if block is not None:
            return block.server_engine()  # type: ignore[attr-defined, no-any-return]
    raise InputError(
        f"no server URL and no saved engine block named {ref!r}",
        "give postgresql://user@host:port or mysql://user@host:port, or the name of a saved "
        "PostgresServer/MySQLServer block",
    )


def database_ref(server_ref: str, database: str) -> str:
    """What resolve_engine takes for one database of a server given as URL or block name."""
    if not is_database_url(server_ref):
        return f"{server_ref}/{database}"
    base, _, query = server_ref.partition("?")
    head, sep, path = base.partition("://")
    netloc = path.split("/", 1)[0]
    return f"{head}{sep}{netloc}/{database}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class ScratchServer:
    """Where restore drills create their scratch databases, and the suites configured there."""

    engine: DatabaseEngine
    suites_dir: str | None = None


def _engine_block(block: Block) -> Block:
    if not callable(getattr(block, "engine", None)):
        raise InputError(f"a {type(block).__name__} block is not a database server or file",
                         "pick a vaultflow PostgreSQL Server, MySQL Server, SQL Server or SQLite Database block")
    return block


def resolve_scratch(ref: str | Block | None, source_engine: str) -> ScratchServer:
    """A server URL (a database in it is ignored: drills name their own), or the name of a
    saved engine block. Without `ref`, SQLite snapshots drill in $VAULTFLOW_HOME/drills;
    other engines need a server named."""
    if not ref:
        if source_engine == "sqlite":  # a file engine drills beside the catalog, needing no server
            return ScratchServer(_sqlite_file(vaultflow_home() / "drills" / "scratch.db"))
        raise InputError(f"no scratch server given for a {source_engine} drill",
                         f"pass --scratch {source_engine}=TARGET (or --scratch TARGET) with an engine block name "
                         "or a server URL such as postgresql://postgres@scratch-host:5432")
    if isinstance(ref, Block):
        return _scratch_of(_engine_block(ref))
    if is_database_url(ref):
        return ScratchServer(scratch_from_url(ref))
    name = ref.partition("/")[0]
    for slug in ENGINE_BLOCK_SLUGS:
        block = _load_block(slug, name)
        if block is not None:
            return _scratch_of(block)
    raise InputError(f"no server URL and no saved engine block named {name!r} for drills",
                     "give postgresql://user@host:port or sqlite:///directory/, or create the block")


def _scratch_of(block: Block) -> ScratchServer:
    engine = block.engine(getattr(block, "database", None) or "postgres")  # type: ignore[attr-defined]
    return ScratchServer(engine, getattr(block, "drill_suites", None))


def scratch_engine_name(ref: str | Block) -> str:
    """The engine of a scratch server given as URL (by its scheme), block or block name (loaded)."""
    if isinstance(ref, Block):
        return _scratch_of(_engine_block(ref)).engine.engine
    if is_database_url(ref):
        return spec_for_scheme(ref.partition("://")[0]).name
    return resolve_scratch(ref, "").engine.engine


def scratch_for_engine(source_engine: str, scratch: str | Block | None, scratch_per_engine: Mapping[str, str]
                       ) -> str | Block | None:
    """The scratch a drill of a `source_engine` snapshot uses: its entry in `scratch_per_engine`,
    else `scratch`; a `scratch` of another engine is not used for SQLite snapshots (they drill
    in $VAULTFLOW_HOME/drills, None) and is kept for others (the drill then names the mismatch).
    Unknown engine names in `scratch_per_engine` are refused."""
    for name in scratch_per_engine:
        spec(name)
    if source_engine in scratch_per_engine:
        return scratch_per_engine[source_engine]
    if scratch and source_engine == "sqlite" and scratch_engine_name(scratch) != "sqlite":
        return None
    return scratch


def _sqlite_file(path: str | os.PathLike[str]) -> DatabaseEngine:
    """The SQLite engine for a file path (no URL round trip: a path may hold '?' or '#')."""
    return spec("sqlite").load()(path)  # type: ignore[call-arg]


def scratch_from_url(url: str) -> DatabaseEngine:
    """A server URL whose database part may be left out; refuses passwords like any URL."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if path.endswith("/") or os.path.isdir(path):
            return _sqlite_file(os.path.join(path, "scratch.db"))
        return engine_from_url(url)
    host, _, database = rest.partition("/")
    # Any database that exists serves as the server's handle; drills name their own.
    default = spec_for_scheme(scheme).server_database or ""
    return engine_from_url(f"{scheme}://{host}/{database or default}")


@dataclass(frozen=True)
class RepositoryRef:
    """A repository as the user named it: `location` (a path or URL, for messages too),
    the object-storage settings a block gave (else the location is opened), the block's name."""

    location: str
    passphrase: SecretStr | None
    catalog_url: str | None = field(default=None, repr=False)  # may hold a password
    storage: StorageSettings | None = None
    block_name: str | None = None

    def store(self) -> ObjectStore:
        """The store the repository lives in (connects on first use)."""
        return self.storage.open() if self.storage is not None else open_store(self.location)

    def open(self) -> Repository:
        """Open the repository with this reference's passphrase (connects to storage)."""
        try:
            return open_repository(self.store(), self.passphrase.get_secret_value() if self.passphrase else None)
        except RepositoryNotInitialised as exc:
            if self.block_name is None:
                raise
            raise RepositoryNotInitialised(
                f"{exc.what} (BackupRepository block {self.block_name!r})",
                f"create one with: vaultflow init --repo {self.block_name}") from None


def is_location(ref: str) -> bool:
    return "/" in ref or "://" in ref or ref.startswith((".", "~"))


def resolve_repository(ref: str | Block | None) -> RepositoryRef:
    """A path or URL (passphrase from VAULTFLOW_PASSPHRASE or VAULTFLOW_PASSPHRASE_FILE), a BackupRepository block (as a
    flow parameter gets it from a block picker) or its name.

    Without `ref`, VAULTFLOW_REPO is used.
    """
    if isinstance(ref, Block):
        return _repository_of(ref, ref._block_document_name)
    ref = ref or os.environ.get("VAULTFLOW_REPO")
    if not ref:
        raise InputError("no repository given", "pass --repo PATH or set VAULTFLOW_REPO")
    if is_location(ref):
        env = passphrase_from_environment()
        return RepositoryRef(ref, SecretStr(env) if env else None, os.environ.get("VAULTFLOW_CATALOG_URL"))
    block = _load_block("vaultflow-backup-repository", ref)
    if block is None:
        raise InputError(
            f"no BackupRepository block named {ref!r}",
            f"create it: `prefect block register -m blocks`, then Prefect UI > Blocks > + > vaultflow Backup "
            f"Repository named {ref!r} (in Python: BackupRepository(...).save({ref!r})); or give a path such as ./repo",
        )
    return _repository_of(block, ref)


def _repository_of(block: Block, name: str | None) -> RepositoryRef:
    from blocks.repository import BackupRepository

    if not isinstance(block, BackupRepository):
        raise InputError(f"a {type(block).__name__} block is not a repository",
                         "pick a vaultflow Backup Repository block, or give its name or a path")
    settings = block.storage_settings()
    location = settings.location() if settings is not None else str(block.location)
    catalog_url = block.catalog_url.get_secret_value() if block.catalog_url else None
    return RepositoryRef(location, block.passphrase, catalog_url, settings, block_name=name)
