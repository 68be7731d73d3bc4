"""The engine interface: what vaultflow needs from any database server."""

from __future__ import annotations

import fnmatch
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import IO, Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar, runtime_checkable

import blake3

from vaultflow.errors import ToolFailed, VaultflowError
from vaultflow.repository.manifest import BinlogPosition, SchemaInventory, StreamManifest, TableStats
from vaultflow.repository.repository import ByteSink

GLOBALS_STREAM = "globals"  # name of the stream holding server-wide objects, when backed up

StreamReader = Callable[[StreamManifest, ByteSink], None]
"""Writes the whole plaintext of one stored stream into the sink it is given."""


COPY_CHECKSUM = "copy-b3"  # RowTap's checksums: "copy-b3:<BLAKE3 hex of the rows>"


class RowTap:
    """Row count and BLAKE3 of a table's COPY text, fed block by block.

    COPY text escapes newlines inside values, so every row ends with exactly one newline.
    """

    def __init__(self) -> None:
        self._hash = blake3.blake3()
        self.rows = 0

    def __call__(self, block: bytes) -> None:
        self._hash.update(block)
        self.rows += block.count(b"\n")

    def stats(self, schema: str, name: str) -> TableStats:
        return TableStats(schema=schema, name=name, rows=self.rows,
                          checksum=f"{COPY_CHECKSUM}:{self._hash.hexdigest()}")


def table_glob_match(pattern: str, schema: str, name: str) -> bool:
    """--include-table/--exclude-table: `schema.table` (PostgreSQL) or `database.table`
    (MySQL) when the pattern has a dot, else the bare table name."""
    return fnmatch.fnmatchcase(f"{schema}.{name}" if "." in pattern else name, pattern)


@dataclass(frozen=True)
class BuiltPatch:
    """A patch an engine built on a parent's stream: `patch` is stored before the base's
    chunks (the stream reads as `patch || base`); `rows` and `checksum` are the statistics
    of the patched rows, as a RowTap over a whole read of them would give."""

    patch: bytes
    rows: int
    checksum: str
    base_rows: int  # rows of the base
    splices: int  # edits the patch makes on the base


class PatchOffer(Protocol):
    """An engine's offer to store a changed stream as a patch on the parent's stream of it
    (PostgreSQL's segment patches, postgres/patches.py)."""

    @property
    def meta(self) -> dict[str, str]:
        """Meta that overrides the source's in the patched stream."""
        ...

    def base_stream(self) -> StreamManifest | None:
        """The part of the parent's stream the patch applies to, as a stream of its own;
        None when it cannot be a base."""
        ...

    def patched(self, base: bytes | bytearray) -> BuiltPatch | None:
        """The patch on `base` (the base stream's bytes), or None: read the source whole."""
        ...


@dataclass(frozen=True)
class StreamSource:
    """One byte stream of a dump, opened only when it is read.

    `open()` returns a context whose value is the stream; leaving the context after the
    last byte checks that the producer succeeded. `table` is set for a table's rows in
    COPY text format, whose row count and checksum the backup takes from the bytes (a
    RowTap); its meta then names it ("schema", "table"), and a table stored as several
    streams numbers them ("segment"), each stream keeping its own statistics.
    `tap`, if set, is shown every byte of the stream in order, in blocks, before the
    context is left (the engine takes statistics from it). `patch`, if set, offers to
    store the stream as a patch on a parent's stream (PatchOffer); `open()`
    is used when the patch cannot be built.
    """

    name: str
    format: str
    open: Callable[[], AbstractContextManager[IO[bytes]]]
    meta: dict[str, str] = field(default_factory=dict)
    table: tuple[str, str] | None = None
    tap: Callable[[bytes], None] | None = None
    patch: PatchOffer | None = None  # store as a patch on the parent's stream when that works


@dataclass
class DumpSession:
    """An open, consistent dump: read every source, then leave the context.

    All sources see one snapshot of the database. `tables` holds statistics the engine
    took itself (SQLite); table sources get theirs from their bytes.
    """

    sources: list[StreamSource]
    tables: list[TableStats] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)  # schema.table carried over from the parent
    carried: list[str] = field(default_factory=list)  # names of single parent streams carried over
    inventory: SchemaInventory | None = None  # the schema objects as of the dump's snapshot
    unreadable: list[str] = field(default_factory=list)  # entries left out, permission denied (files)
    binlog: BinlogPosition | None = None  # set once the sources were read (MySQL/MariaDB, log_bin on)


class RestoreObserver:
    """Hears from a restore while it runs, from the restore's loader threads. The defaults
    do nothing; a drill uses them to read tables back while the restore goes on."""

    def table_loaded(self, loaded: DatabaseEngine, table: str, streams: list[StreamManifest]) -> None:
        """`table` (schema.name) holds its rows, committed in `loaded`'s database: `streams`
        loaded in this order by one session at a time, into the new, empty table. Indexes
        and constraints may still be missing. Must not block the restore."""

    def finishing(self, failed: bool) -> None:
        """The restore is about to rename (or, `failed`, drop) the database it loaded into:
        return once every connection to it that the observer opened is closed."""


@dataclass(frozen=True)
class SqlAlchemyTarget:
    """How a SQL client (Great Expectations) reaches a database: a URL without password,
    plus `create_engine` keyword arguments that may carry it (never logged)."""

    url: str
    engine_kwargs: dict[str, object] = field(default_factory=dict)
    schemaless: bool = False  # tables are named without their schema (SQLite's "main")


class DatabaseEngine(ABC):
    """One database on one server (or one SQLite file).

    Engines connect only when a method needs it. Every failure raises a VaultflowError
    subclass whose message names the server and database and never a password.
    """

    engine: str

    @property
    @abstractmethod
    def database(self) -> str:
        """The database's name (for SQLite, the file name)."""

    @abstractmethod
    def server_label(self) -> str:
        """host:port or path; safe to log and store."""

    @abstractmethod
    def with_database(self, database: str) -> DatabaseEngine:
        """The same server, another database."""

    @abstractmethod
    def list_databases(self) -> list[str]:
        """Every user database on the server."""

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Server and client-tool versions; raises if the tools cannot dump this server."""

    @abstractmethod
    def fingerprint(self) -> str | None:
        """A cheap value that changes whenever the database's content may have changed.

        Equal fingerprints must mean unchanged content (an incremental then skips the dump);
        unequal ones may be false alarms. None: the engine cannot tell.
        """

    @abstractmethod
    def table_stats(self, *, like: list[TableStats] | None = None) -> list[TableStats]:
        """Row count and content checksum of every user table, now.

        `like`: statistics recorded by a snapshot; where a table's checksum there was taken
        per key range (PostgreSQL segments), this one is taken the same way, so the two compare.
        """

    @abstractmethod
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        parent_streams: list[StreamManifest] | None = None,
    ) -> AbstractContextManager[DumpSession]:
        """Start a consistent dump of the database (include/exclude: globs of tables whose
        rows are backed up, where the engine streams tables separately; parent_streams: the
        streams of the parent snapshot, for engines that can tell which tables or key ranges
        did not change and carry those streams over instead of reading them)."""

    @abstractmethod
    def restore(
        self, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
        tables: list[str] | None = None, observer: RestoreObserver | None = None, server_locale: bool = False,
    ) -> None:
        """Load a snapshot's streams into this database.

        The database is created if missing. If it holds user objects and `replace` is
        false, raise TargetNotEmpty before touching anything. The new content becomes
        visible only when the whole stream loaded; on any failure the target is left as it
        was and the partial copy is removed. `no_owner` skips ownership and grants (for a
        server that lacks the source's roles); `jobs` loads that many tables at once;
        `tables` (schema.name) restricts the rows loaded to those tables; `observer` hears
        of each table as its rows are in (engines that load table by table). A database the
        restore creates gets the snapshot's encoding and locale (character set and
        collation), or with `server_locale` the server's defaults.
        """

    def combined_table_stats(self, streams: list[StreamManifest]) -> list[TableStats]:
        """Statistics of the tables stored as several streams (key-range segments), combined
        from the statistics each stream's meta records. Default: none (every table is one
        stream, whose statistics the backup took from its bytes)."""
        return []

    def check_configuration(self, action: Literal["backup", "restore"]) -> None:
        """Refuse, without connecting, a configuration that cannot `action` at all (so a CLI
        fails in one line before it starts a flow run). Default: nothing to check."""

    # -- restore drills ------------------------------------------------------------------
    # Optional capabilities with safe defaults, so an engine without them still backs up
    # and restores; a drill reports what it could not check.

    def table_stats_parallel(self, jobs: int, *, like: list[TableStats] | None = None,
                             tables: list[str] | None = None) -> list[TableStats]:
        """table_stats(), reading up to `jobs` tables at once where the engine can; `tables`
        (schema.name, as this engine names them) reads only those."""
        stats = self.table_stats(like=like)
        if tables is None:
            return stats
        wanted = set(tables)
        return [t for t in stats if t.qualified in wanted]

    def loaded_table_stats(self, table: str, streams: list[StreamManifest]) -> TableStats | None:
        """Statistics of `table` just after a restore loaded it from `streams` in that order
        (see RestoreObserver.table_loaded), read the cheapest way such a table allows, or
        None where the engine has no such way. Equal to the snapshot's statistics when the
        rows are right; a difference is not yet proof: read the table again with
        table_stats_parallel before calling it damaged."""
        return None

    def schema_inventory(self) -> SchemaInventory | None:
        """The user schema objects (tables, views, indexes, constraints, sequences) and the
        tables' column profiles, now; None if the engine cannot list them."""
        return None

    def check_restore_target(self, replace: bool) -> None:
        """Raise TargetNotEmpty if a restore without `replace` would refuse this target, so
        a caller restoring several snapshots can refuse before touching any. The default
        checks nothing: `restore` itself refuses before it writes."""

    def database_exists(self) -> bool:
        """Whether this database exists on the server (connects)."""
        return self.database in self.list_databases()

    def sqlalchemy_target(self) -> SqlAlchemyTarget | None:
        """SQLAlchemy access to this database for expectation suites; None if unsupported."""
        return None

    def describe(self) -> str:
        return f"{self.engine} database {self.database!r} on {self.server_label()}"




@runtime_checkable
class DroppableDatabase(Protocol):
    """An engine that can host restore drills (Capabilities.drills): it drops its database."""

    def drop_database(self) -> None:
        """Remove this database and everything in it; no error if it does not exist.
        Used only on scratch databases that a drill created itself."""


@runtime_checkable
class ServerWideObjects(Protocol):
    """An engine with server-wide objects (Capabilities.globals): roles, users, grants."""

    def globals_source(self, *, passwords: bool = False) -> StreamSource:
        """The server's roles/users and grants as a stream named "globals"; password hashes
        only if `passwords`."""

    def restore_globals(self, stream: StreamManifest, read: StreamReader) -> None:
        """Create the roles/users of a globals stream that the server lacks, and their grants."""


def server_wide_objects(engine: DatabaseEngine) -> ServerWideObjects:
    """`engine` as ServerWideObjects. Callers first refuse an engine whose spec lacks
    `globals` (one line for the user); the conformance suite checks spec and class agree."""
    assert isinstance(engine, ServerWideObjects), f"{engine.engine} declares globals but has none"
    return engine


def droppable(engine: DatabaseEngine) -> DroppableDatabase:
    """`engine` as DroppableDatabase, after its spec's `drills` was required."""
    assert isinstance(engine, DroppableDatabase), f"{engine.engine} declares drills but cannot drop a database"
    return engine


class ServerConnection(Protocol):
    """Where a database on a networked server is: a frozen dataclass (so `replace` works)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def database(self) -> str: ...

    @property
    def bin_dir(self) -> str | None: ...


ConnT = TypeVar("ConnT", bound=ServerConnection)


class ServerEngine(DatabaseEngine, Generic[ConnT]):
    """A DatabaseEngine for one database on a host:port server, reached with client tools.

    Holds the identity every server engine shares: the connection settings `conn`, the
    database, the server label, another database on the same server, and where the client
    tools are (`bin_dir`, else PATH; `tool_fix` says how to install them).
    """

    tool_fix: ClassVar[str]

    def __init__(self, conn: ConnT) -> None:
        self.conn = conn

    @property
    def database(self) -> str:
        return self.conn.database

    def server_label(self) -> str:
        return f"{self.conn.host}:{self.conn.port}"

    def with_database(self, database: str) -> Self:
        return type(self)(replace(self.conn, database=database))

    def _tool(self, *names: str) -> str:
        """The path of the first of `names` found in bin_dir (or on PATH, without one)."""
        for name in names:
            if self.conn.bin_dir:
                path = os.path.join(self.conn.bin_dir, name)
                if os.access(path, os.X_OK):
                    return path
            else:
                found = shutil.which(name)
                if found:
                    return found
        where = f" in {self.conn.bin_dir}" if self.conn.bin_dir else " on PATH"
        which = names[0] if len(names) == 1 else "neither " + " nor ".join(names)
        raise ToolFailed(f"{which} not found{where}", self.tool_fix)

    @abstractmethod
    def map_error(self, exc: BaseException, database: str) -> VaultflowError:
        """The VaultflowError for a driver's or a tool's error about `database`; its message
        names the server and never a password."""

    def _tool_error(self, tool: str, line: str) -> VaultflowError:
        """The error for a client tool that failed with `line` as its last stderr line:
        what map_error recognizes, else ToolFailed quoting the line."""
        mapped = self.map_error(RuntimeError(line), self.conn.database)
        if type(mapped) is not VaultflowError:
            return mapped
        return ToolFailed(f"{tool} failed for {self.describe()}: {line[:300]}")
