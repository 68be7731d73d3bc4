"""The engine interface: what vaultflow needs from any database server."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO

from vaultflow.repository.manifest import TableStats
from vaultflow.repository.repository import ByteSink

StreamWriter = Callable[[ByteSink], None]
"""Writes a whole stream's bytes into the sink it is given."""


@dataclass
class DumpSession:
    """An open dump: read `stream` to its end, then leave the context.

    `tables` holds per-table statistics taken in the same consistent snapshot as the dump;
    it is complete once the context has exited without error.
    """

    stream: IO[bytes]
    stream_name: str
    format: str
    tables: list[TableStats] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


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
        self, *, table_checksums: bool = True, timeout: float | None = None
    ) -> AbstractContextManager[DumpSession]:
        """Start a consistent dump of the database."""

    @abstractmethod
    def restore(
        self, fmt: str, write_stream: StreamWriter, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False,
    ) -> None:
        """Load a dump of format `fmt` into this database.

        The database is created if missing. If it holds user objects and `replace` is
        false, raise TargetNotEmpty before touching anything. The new content becomes
        visible only when the whole stream loaded; on any failure the target is left as it
        was and the partial copy is removed. `no_owner` skips ownership and grants (for a
        server that lacks the source's roles).
        """

    def describe(self) -> str:
        return f"{self.engine} database {self.database!r} on {self.server_label()}"


