"""SQLite: a consistent copy through the online backup API, restored as a whole file.

The backup API needs a destination database, so the copy is spooled to a private temp
file (0600, in VAULTFLOW_SPOOL_DIR or the system temp dir) that is streamed into the
repository and deleted; the spool never outlives the dump. Statistics are read from that
copy, so they describe exactly the snapshot stored.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO

from vaultflow.engines.base import (
    DatabaseEngine,
    DumpSession,
    RestoreObserver,
    SqlAlchemyTarget,
    StreamReader,
    StreamSource,
)
from vaultflow.engines.sqlite import stats
from vaultflow.errors import (
    DatabaseNotFound,
    InputError,
    IntegrityError,
    StorageUnwritable,
    TargetNotEmpty,
    ToolFailed,
)
from vaultflow.repository.manifest import SchemaInventory, StreamManifest, TableStats

DUMP_FORMAT = "sqlite3-file"
# One step: the copy runs inside a single read transaction, so concurrent writers (which
# would restart a stepped backup) neither block it forever nor make it inconsistent.
_PAGES_PER_STEP = -1


class SqliteEngine(DatabaseEngine):
    engine = "sqlite"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()

    @property
    def database(self) -> str:
        return self.path.name

    def server_label(self) -> str:
        return str(self.path.parent)

    def with_database(self, database: str) -> SqliteEngine:
        return SqliteEngine(self.path.parent / database)

    def describe(self) -> str:
        return f"SQLite database {self.path}"

    def list_databases(self) -> list[str]:
        return [self.path.name] if self.path.exists() else []

    def versions(self) -> dict[str, str]:
        return {"sqlite": sqlite3.sqlite_version}

    def fingerprint(self) -> str | None:
        """File size, mtime and the header's change counter, plus the WAL file's size and mtime."""
        if not self.path.is_file():
            raise DatabaseNotFound(f"SQLite database {self.path} does not exist",
                                   "check the path in the URL or SqliteDatabase block")
        parts = []
        for path in (self.path, Path(f"{self.path}-wal")):
            try:
                st = path.stat()
            except FileNotFoundError:
                parts.append("-")
                continue
            parts.append(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
        with open(self.path, "rb") as f:
            header = f.read(100)
        parts.append(header[24:32].hex())  # file change counter and size in pages
        return "sqlite:" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    def _open_source(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise DatabaseNotFound(f"SQLite database {self.path} does not exist",
                                   "check the path in the URL or SqliteDatabase block")
        try:
            con = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=30)
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ToolFailed(f"cannot read SQLite database {self.path}: {exc}",
                             "check that it is an SQLite database and readable") from None
        return con

    def table_stats(self, *, like: list[TableStats] | None = None, checksums: bool = True) -> list[TableStats]:
        with closing(self._open_source()) as con:
            return stats.table_stats(con, checksums)

    @contextmanager
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        parent_streams: list[StreamManifest] | None = None,
    ) -> Iterator[DumpSession]:
        if include_tables or exclude_tables:
            raise InputError("SQLite backups copy the whole file; table subsets are not supported",
                             "drop --include-table/--exclude-table for SQLite sources")
        spool_dir = os.environ.get("VAULTFLOW_SPOOL_DIR") or None
        fd, spool = tempfile.mkstemp(prefix="vaultflow-sqlite-", suffix=".db", dir=spool_dir)
        os.close(fd)
        try:
            with closing(self._open_source()) as src, closing(sqlite3.connect(spool)) as dst:
                try:
                    src.backup(dst, pages=_PAGES_PER_STEP)
                except sqlite3.Error as exc:
                    raise ToolFailed(f"SQLite online backup of {self.path} failed: {exc}") from None
                dst.execute("PRAGMA journal_mode=DELETE")
                tables = stats.table_stats(dst, table_checksums)
                inventory = stats.schema_inventory(dst)
            @contextmanager
            def spooled() -> Iterator[IO[bytes]]:
                with open(spool, "rb") as stream:
                    yield stream

            yield DumpSession(sources=[StreamSource("dump", DUMP_FORMAT, spooled)], tables=tables,
                              versions=self.versions(), inventory=inventory)
        finally:
            Path(spool).unlink(missing_ok=True)

    def has_user_objects(self) -> bool:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        with closing(sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)) as con:
            try:
                row = con.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchone()
            except sqlite3.DatabaseError:
                return True  # not a database we understand: never overwrite silently
        return bool(row and row[0])

    # -- restore drills ------------------------------------------------------------------

    def schema_inventory(self) -> SchemaInventory:
        with closing(self._open_source()) as con:
            return stats.schema_inventory(con)

    def database_exists(self) -> bool:
        return self.path.exists()

    def drop_database(self) -> None:
        for path in (self.path, *(Path(f"{self.path}{s}") for s in ("-wal", "-shm", "-journal"))):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise StorageUnwritable(f"cannot remove {path}: {exc.strerror}",
                                        "check the directory's permissions and remove it by hand") from None

    def sqlalchemy_target(self) -> SqlAlchemyTarget:
        return SqlAlchemyTarget(f"sqlite:///{self.path}", schemaless=True)

    def restore(
        self, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
        tables: list[str] | None = None, observer: RestoreObserver | None = None, server_locale: bool = False,
    ) -> None:
        if [s.format for s in streams] != [DUMP_FORMAT]:
            raise InputError(f"a snapshot with {', '.join(s.format for s in streams)} streams cannot be restored "
                             "into SQLite", "restore it into an engine of its own kind")
        if tables:
            raise InputError("SQLite snapshots restore as a whole file", "drop --table for SQLite targets")
        if not replace and self.has_user_objects():
            raise TargetNotEmpty(f"SQLite database {self.path} already has tables",
                                 "restore to a new path, or pass --replace to swap it out")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.vf-", dir=self.path.parent)
        except OSError as exc:
            raise StorageUnwritable(f"cannot write next to {self.path}: {exc.strerror}",
                                    "choose a writable target path") from None
        try:
            with os.fdopen(fd, "wb") as out:
                read(streams[0], out)
                out.flush()
                os.fsync(out.fileno())
            with closing(sqlite3.connect(tmp)) as con:
                verdict = con.execute("PRAGMA quick_check").fetchone()
            if not verdict or verdict[0] != "ok":
                raise IntegrityError(f"restored SQLite file for {self.path} fails quick_check",
                                     "the snapshot is damaged; restore another one")
            os.chmod(tmp, 0o644)
            for suffix in ("-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
