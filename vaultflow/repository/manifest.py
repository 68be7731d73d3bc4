"""The snapshot manifest: everything needed to restore a snapshot, and nothing secret."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal, Protocol

import blake3 as blake3_hash
from pydantic import BaseModel, ConfigDict, Field, model_validator

SnapshotKind = Literal["full", "incremental", "differential"]


class ChunkRef(BaseModel):
    """One chunk of a stream, in stream order: plaintext size and stored object size."""

    model_config = ConfigDict(frozen=True)

    id: str
    size: int
    stored: int


class StreamHasher(Protocol):
    def update(self, data: bytes, /) -> object: ...
    def hexdigest(self) -> str: ...


def new_stream_hasher() -> StreamHasher:
    """The digest new streams record: BLAKE3 (several times faster than SHA-256 here)."""
    return blake3_hash.blake3()


class StreamManifest(BaseModel):
    """One named byte stream of a snapshot (a dump, later a table's data).

    The digest of the whole plaintext is `blake3` in streams written since it replaced
    `sha256`; streams written before carry `sha256`. Readers verify whichever is there.
    """

    name: str
    format: str = Field(description="how the bytes are to be read, e.g. pg_dump-custom, sqlite3-file")
    size: int
    blake3: str | None = None
    sha256: str | None = None
    chunks: list[ChunkRef]
    meta: dict[str, str] = Field(default_factory=dict, description="engine-specific, e.g. table and columns")

    @model_validator(mode="after")
    def _has_a_digest(self) -> StreamManifest:
        if self.blake3 is None and self.sha256 is None:
            raise ValueError(f"stream {self.name!r} records no digest (blake3 or sha256)")
        return self

    def hasher(self) -> StreamHasher:
        """A fresh hasher of the kind this stream's digest was taken with."""
        return blake3_hash.blake3() if self.blake3 is not None else hashlib.sha256()

    @property
    def digest(self) -> str:
        return self.blake3 if self.blake3 is not None else str(self.sha256)


class TableStats(BaseModel):
    """Row count and an order-independent content checksum of one table at backup time."""

    table_schema: str = Field(alias="schema")
    name: str
    rows: int
    checksum: str | None = None

    model_config = ConfigDict(populate_by_name=True)

    @property
    def qualified(self) -> str:
        return f"{self.table_schema}.{self.name}" if self.table_schema else self.name


class ColumnProfile(BaseModel):
    """One column as the source declared it: name, SQL type and whether NULL is allowed."""

    name: str
    type: str = ""
    nullable: bool = True


class TableProfile(BaseModel):
    """The shape of one table at backup time, from which a drill's default expectations come."""

    table_schema: str = Field(alias="schema")
    name: str
    columns: list[ColumnProfile]
    unique_keys: list[list[str]] = Field(default_factory=list,
                                         description="primary key and full unique indexes, as column lists")

    model_config = ConfigDict(populate_by_name=True)

    @property
    def qualified(self) -> str:
        return f"{self.table_schema}.{self.name}" if self.table_schema else self.name


SCHEMA_OBJECT_KINDS = ("tables", "views", "indexes", "constraints", "sequences")


class SchemaInventory(BaseModel):
    """The user schema objects of a database, by kind, as sorted qualified names.

    Optional in a manifest (snapshots before restore drills have none); a restore drill
    compares a restored copy against it.
    """

    tables: list[str] = Field(default_factory=list)
    views: list[str] = Field(default_factory=list, description="views and materialized views")
    indexes: list[str] = Field(default_factory=list)
    constraints: list[str] = Field(default_factory=list, description="<table>.<name> (<kind>)")
    sequences: list[str] = Field(default_factory=list)
    profiles: list[TableProfile] = Field(default_factory=list)

    def objects(self, kind: str) -> list[str]:
        return list(getattr(self, kind))

    def profile(self, qualified: str) -> TableProfile | None:
        for p in self.profiles:
            if p.qualified == qualified:
                return p
        return None


SKIPPED_PATHS_KEPT = 1000  # paths a manifest lists of the entries a backup left out


class SkippedEntries(BaseModel):
    """Entries a backup was told to leave out because it could not read them (files:
    --skip-unreadable): how many, and the first SKIPPED_PATHS_KEPT of their paths."""

    count: int
    paths: list[str]


class BaseBackupInfo(BaseModel):
    """What a physical base backup of a PostgreSQL cluster needs for point-in-time recovery
    (docs/engines/postgresql.md): the WAL range that makes it consistent and when it ran.

    `stop_time` is the server's clock: the STOP TIME of the backup history file the server
    archived, rounded up to the next second as the file has whole seconds (`stop_time_source`
    "backup-history"), or, when the backup was told not to wait for
    the archive, the server's now() once pg_basebackup ended ("server-clock-after"), which is
    later than the real stop. Restores choose the newest base backup that stopped before a target.
    """

    system_identifier: int
    timeline: int
    start_lsn: str
    stop_lsn: str
    start_time: datetime
    stop_time: datetime
    stop_time_source: Literal["backup-history", "server-clock-after"] = "backup-history"
    server_version: str
    wal_segment_size: int
    backup_label: str
    backup_manifest: bool = Field(description="the tar holds pg_basebackup's backup_manifest")
    history_file: str | None = Field(default=None, description="name of the archived .backup history file")


class BinlogPosition(BaseModel):
    """Where a MySQL/MariaDB snapshot stands in the server's binary log, taken inside the dump's
    transaction snapshot: replaying the binlog from (file, position), or from the GTID
    position, applies every change made after the snapshot exactly once."""

    file: str
    position: int
    gtid: str | None = None


class SnapshotManifest(BaseModel):
    """Written as the last object of a backup; its presence is what makes a snapshot exist."""

    version: int = 1
    id: str
    chain: str
    parent: str | None = None
    kind: SnapshotKind = "full"
    engine: str
    server: str = Field(description="host:port or file path of the source, never credentials")
    database: str
    started_at: datetime
    finished_at: datetime
    hostname: str
    vaultflow_version: str
    tool_versions: dict[str, str] = Field(default_factory=dict)
    streams: list[StreamManifest]
    tables: list[TableStats] = Field(default_factory=list)
    fingerprint: str | None = Field(default=None, description="the engine's change fingerprint at backup time")
    table_filter: list[str] = Field(default_factory=list, description="include:/exclude: table globs of the run")
    reused_from: str | None = Field(default=None, description="set when nothing changed since this snapshot, "
                                                            "so its streams were carried over without a dump")
    schema_inventory: SchemaInventory | None = Field(
        default=None, description="user schema objects at backup time; absent in older manifests")
    skipped: SkippedEntries | None = Field(
        default=None, description="entries left out as unreadable (files, --skip-unreadable); None: none")
    binlog: BinlogPosition | None = Field(
        default=None, description="MySQL/MariaDB with log_bin on: the snapshot's binlog coordinates")
    set_members: list[str] = Field(
        default_factory=list, description="ids of the snapshots of one backup run of a database and its file "
                                          "trees: the database's first, then each tree's in the order given; "
                                          "empty for a snapshot taken alone")
    base_backup: BaseBackupInfo | None = Field(
        default=None, description="set on a physical base backup of a whole PostgreSQL cluster (one stream "
                                  "in format postgres-basebackup-tar); None on logical snapshots")

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def logical_size(self) -> int:
        return sum(s.size for s in self.streams)

    @property
    def stored_size(self) -> int:
        """Bytes of the distinct chunk objects this snapshot references."""
        seen: dict[str, int] = {}
        for stream in self.streams:
            for c in stream.chunks:
                seen[c.id] = c.stored
        return sum(seen.values())

    def added_size(self, parent: SnapshotManifest | None) -> int:
        """Stored bytes this snapshot added to the repository: its chunks the parent lacks."""
        if self.reused_from:
            return 0
        have = {c.id for s in parent.streams for c in s.chunks} if parent else set()
        added = {c.id: c.stored for s in self.streams for c in s.chunks if c.id not in have}
        return sum(added.values())

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def stream(self, name: str) -> StreamManifest:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)
