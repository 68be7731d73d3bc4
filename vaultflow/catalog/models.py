"""Catalog tables (sqlmodel). Nothing here is authoritative: manifests in storage are."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel


class SnapshotStatus(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class ServerRecord(SQLModel, table=True):
    __tablename__ = "servers"

    id: str = Field(primary_key=True, description="engine://host:port or sqlite://dir")
    engine: str
    label: str
    first_seen: datetime
    last_seen: datetime


class DatabaseRecord(SQLModel, table=True):
    __tablename__ = "databases"

    id: str = Field(primary_key=True, description="server id + '/' + name")
    server_id: str = Field(foreign_key="servers.id", index=True)
    name: str
    first_seen: datetime
    last_seen: datetime


PHYSICAL_KIND = "physical"
"""A base backup's `kind` in the catalog; its manifest's kind (full or incremental) says only its chain."""


class SnapshotRecord(SQLModel, table=True):
    """One backup run; Succeeded rows mirror a manifest in the repository."""

    __tablename__ = "snapshots"

    id: str = Field(primary_key=True)
    repository_id: str = Field(index=True)
    repository: str
    engine: str
    server: str
    database: str = Field(index=True)
    database_id: str | None = Field(default=None, foreign_key="databases.id", index=True)
    kind: str = "full"
    chain: str
    parent: str | None = None
    status: SnapshotStatus = SnapshotStatus.PENDING
    started_at: datetime
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    logical_size: int | None = None
    stored_size: int | None = None
    error: str | None = None
    hostname: str
    pid: int
    flow_run_id: str | None = None

    @property
    def short_id(self) -> str:
        return self.id[:8]


class DrillStatus(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"


class DrillRecord(SQLModel, table=True):
    """One restore drill of one snapshot. Drills live only here (the repository does not
    record them), like the history of failed backup runs."""

    __tablename__ = "drills"

    id: str = Field(primary_key=True)
    repository_id: str = Field(index=True)
    snapshot_id: str = Field(index=True)
    snapshot_taken: datetime
    engine: str
    server: str
    database: str = Field(index=True)
    database_id: str | None = Field(default=None, foreign_key="databases.id", index=True)
    scratch_server: str
    scratch_database: str
    status: DrillStatus
    started_at: datetime
    finished_at: datetime | None = None
    restore_seconds: float | None = Field(default=None, description="measured recovery time")
    checks_seconds: float | None = None
    checks_passed: int = 0
    checks_failed: int = 0
    checks_skipped: int = 0
    checks: str = Field(default="[]", description="JSON list of every check result")
    error: str | None = None
    flow_run_id: str | None = None
class DownloadLinkRecord(SQLModel, table=True):
    """A download link handed out by `vaultflow export --url`: where and until when, never the
    link itself (its signature is a bearer credential)."""

    __tablename__ = "download_links"

    id: int | None = Field(default=None, primary_key=True)
    snapshot_id: str = Field(index=True)
    repository_id: str = Field(index=True)
    location: str = Field(description="the exported object, e.g. s3://bucket/prefix/exports/<id>.sql")
    size: int
    created_at: datetime
    expires_at: datetime


class AuditEventRecord(SQLModel, table=True):
    """An index row of one audit record of the repository (vaultflow/audit.py); the record
    in the repository is authoritative and `catalog rebuild` brings these rows back."""

    __tablename__ = "audit_events"

    id: str = Field(primary_key=True)
    repository_id: str = Field(index=True)
    at: datetime = Field(index=True)
    action: str = Field(index=True)
    outcome: str
    actor: str = Field(index=True, description="user@host, and the deployment or flow run")
    flow_run_id: str | None = None
    object: str = ""
    database: str | None = Field(default=None, index=True)
    detail: str = ""
    role: str | None = None
