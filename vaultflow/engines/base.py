"""The engine interface: what vaultflow needs from any database server."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO

import blake3

from vaultflow.errors import InputError
from vaultflow.repository.manifest import StreamManifest, TableStats
from vaultflow.repository.repository import ByteSink

GLOBALS_STREAM = "globals"  # name of the stream holding server-wide objects, when backed up

StreamReader = Callable[[StreamManifest, ByteSink], None]
"""Writes the whole plaintext of one stored stream into the sink it is given."""


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
        return TableStats(schema=schema, name=name, rows=self.rows, checksum="copy-b3:" + self._hash.hexdigest())


@dataclass(frozen=True)
class StreamSource:
    """One byte stream of a dump, opened only when it is read.

    `open()` returns a context whose value is the stream; leaving the context after the
    last byte checks that the producer succeeded. `table` is set for a table's rows in
    COPY text format, whose row count and checksum the backup takes from the bytes.
    """

    name: str
    format: str
    open: Callable[[], AbstractContextManager[IO[bytes]]]
    meta: dict[str, str] = field(default_factory=dict)
    table: tuple[str, str] | None = None


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
    def table_stats(self) -> list[TableStats]:
        """Row count and content checksum of every user table, now."""

    @abstractmethod
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        previous: dict[str, str] | None = None,
    ) -> AbstractContextManager[DumpSession]:
        """Start a consistent dump of the database (include/exclude: globs of tables whose
        rows are backed up, where the engine streams tables separately; previous: the
        per-table change counters of a parent, for engines that can skip unchanged tables)."""

    @abstractmethod
    def restore(
        self, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
        tables: list[str] | None = None,
    ) -> None:
        """Load a snapshot's streams into this database.

        The database is created if missing. If it holds user objects and `replace` is
        false, raise TargetNotEmpty before touching anything. The new content becomes
        visible only when the whole stream loaded; on any failure the target is left as it
        was and the partial copy is removed. `no_owner` skips ownership and grants (for a
        server that lacks the source's roles); `jobs` loads that many tables at once;
        `tables` (schema.name) restricts the rows loaded to those tables.
        """

    def globals_source(self, *, passwords: bool = False) -> StreamSource:
        """The server's own objects (roles, users, grants) as a stream named "globals".

        Password hashes only if `passwords`. Engines without such objects refuse.
        """
        raise InputError(f"{self.engine} has no server-wide objects to back up", "drop --globals")

    def restore_globals(self, stream: StreamManifest, read: StreamReader) -> None:
        """Create the roles/users of a globals stream that the server lacks, and their grants."""
        raise InputError(f"{self.engine} has no server-wide objects to restore", "drop --globals")

    def describe(self) -> str:
        return f"{self.engine} database {self.database!r} on {self.server_label()}"


