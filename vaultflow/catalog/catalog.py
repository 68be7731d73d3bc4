"""Catalog access: record runs, list them, rebuild from a repository's manifests."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session, SQLModel, col, create_engine, select

from vaultflow.catalog.models import (
    PHYSICAL_KIND,
    AuditEventRecord,
    DatabaseRecord,
    DownloadLinkRecord,
    DrillRecord,
    DrillStatus,
    ServerRecord,
    SnapshotRecord,
    SnapshotStatus,
)
from vaultflow.errors import InputError
from vaultflow.repository.manifest import SnapshotManifest

if TYPE_CHECKING:
    from vaultflow.audit import AuditRecord
    from vaultflow.drill.report import DrillReport


@dataclass
class DatabaseStats:
    engine: str
    server: str
    database: str
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    logical_bytes: int = 0
    stored_bytes: int = 0
    last_run: datetime | None = None
    last_status: str | None = None
    last_success: datetime | None = None
    last_proven_restorable: datetime | None = None  # backup time of the newest snapshot a drill passed
    recovery_seconds: float | None = None  # restore time of that drill
    last_drill: datetime | None = None
    last_drill_status: str | None = None

    @property
    def dedup_ratio(self) -> float | None:
        """Logical bytes per stored byte (compression and deduplication together)."""
        return round(self.logical_bytes / self.stored_bytes, 2) if self.stored_bytes else None

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "dedup_ratio": self.dedup_ratio}


def vaultflow_home() -> Path:
    return Path(os.environ.get("VAULTFLOW_HOME", "~/.vaultflow")).expanduser()


def default_catalog_url() -> str:
    """VAULTFLOW_CATALOG_URL, else an SQLite file in VAULTFLOW_HOME (default ~/.vaultflow)."""
    url = os.environ.get("VAULTFLOW_CATALOG_URL")
    if url:
        return url
    home = vaultflow_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'catalog.db'}"


def catalog_url_for_parameters(url: str | None) -> str | None:
    """`url` if it may be kept where parameters are stored (it carries no password), else
    InputError, whose message does not show it."""
    if not url:
        return url
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return url  # not a URL at all: Catalog says so when it is used
    if password:
        raise InputError("the catalog_url parameter holds a password, and run parameters are stored and shown "
                         "by the orchestrator",
                         "leave catalog_url empty and set VAULTFLOW_CATALOG_URL in the worker's environment "
                         "(or a BackupRepository block's catalog_url)")
    return url


def _now() -> datetime:
    return datetime.now(UTC)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Catalog:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_catalog_url()
        self.engine: Engine = create_engine(self.url)
        _create_tables(self.url, self.engine)

    # -- download links ----------------------------------------------------------------

    def record_download_link(self, *, snapshot_id: str, repository_id: str, location: str, size: int,
                             expires_at: datetime) -> None:
        with Session(self.engine) as s:
            s.add(DownloadLinkRecord(snapshot_id=snapshot_id, repository_id=repository_id, location=location,
                                     size=size, created_at=_now(), expires_at=expires_at))
            s.commit()

    def download_links(self, snapshot_id: str | None = None) -> list[DownloadLinkRecord]:
        with Session(self.engine) as s:
            query = select(DownloadLinkRecord).order_by(col(DownloadLinkRecord.created_at))
            if snapshot_id is not None:
                query = query.where(DownloadLinkRecord.snapshot_id == snapshot_id)
            return list(s.exec(query).all())

    # -- servers and databases -------------------------------------------------------

    def upsert_database(self, engine: str, server: str, database: str) -> str:
        server_id = f"{engine}://{server}"
        db_id = f"{server_id}/{database}"
        now = _now()
        with Session(self.engine) as s:
            _touch(s, ServerRecord, server_id, now, engine=engine, label=server)
            s.flush()
            _touch(s, DatabaseRecord, db_id, now, server_id=server_id, name=database)
            s.commit()
        return db_id

    # -- snapshot runs ---------------------------------------------------------------

    def start_snapshot(
        self, *, snapshot_id: str, chain: str, repository_id: str, repository: str, engine: str,
        server: str, database: str, kind: str, parent: str | None = None,
        flow_run_id: str | None = None, status: SnapshotStatus = SnapshotStatus.RUNNING,
    ) -> SnapshotRecord:
        """Record a backup run: Pending when its run is opened, Running once it dumps."""
        db_id = self.upsert_database(engine, server, database)
        rec = SnapshotRecord(
            id=snapshot_id, repository_id=repository_id, repository=repository, engine=engine,
            server=server, database=database, database_id=db_id, kind=kind, chain=chain,
            parent=parent, status=status, started_at=_now(),
            hostname=socket.gethostname(), pid=os.getpid(), flow_run_id=flow_run_id,
        )
        with Session(self.engine) as s:
            existing = s.get(SnapshotRecord, snapshot_id)
            if existing is not None:  # a retry of the same run
                existing.status = status
                existing.error = None
                existing.pid = os.getpid()
                existing.hostname = socket.gethostname()
                s.add(existing)
                s.commit()
                s.refresh(existing)
                return existing
            s.add(rec)
            s.commit()
            s.refresh(rec)
        return rec

    def finish_snapshot(self, manifest: SnapshotManifest, parent: SnapshotManifest | None = None) -> None:
        with Session(self.engine) as s:
            rec = s.get(SnapshotRecord, manifest.id)
            if rec is None:
                return
            _apply_manifest(rec, manifest, parent)
            s.add(rec)
            s.commit()

    def fail_snapshot(self, snapshot_id: str, error: str) -> None:
        with Session(self.engine) as s:
            rec = s.get(SnapshotRecord, snapshot_id)
            if rec is None or rec.status in (SnapshotStatus.SUCCEEDED, SnapshotStatus.CANCELLED):
                return
            rec.status = SnapshotStatus.FAILED
            rec.error = error[:2000]
            rec.finished_at = _now()
            rec.duration_seconds = (rec.finished_at - _aware(rec.started_at)).total_seconds()
            s.add(rec)
            s.commit()

    def mark_running(self, snapshot_id: str) -> None:
        """The dump of a Pending (or retried) run started."""
        with Session(self.engine) as s:
            rec = s.get(SnapshotRecord, snapshot_id)
            if rec is None or rec.status == SnapshotStatus.SUCCEEDED:
                return
            rec.status, rec.error = SnapshotStatus.RUNNING, None
            rec.pid, rec.hostname = os.getpid(), socket.gethostname()
            s.add(rec)
            s.commit()

    def end_flow_run(self, flow_run_id: str, status: SnapshotStatus, error: str) -> list[SnapshotRecord]:
        """Every Pending or Running row of a flow run gets the final `status` (Cancelled,
        Failed) and `error`; returns those rows. Rows that finished keep their status."""
        ended = []
        with Session(self.engine) as s:
            rows = s.exec(select(SnapshotRecord).where(
                SnapshotRecord.flow_run_id == flow_run_id,
                col(SnapshotRecord.status).in_([SnapshotStatus.RUNNING, SnapshotStatus.PENDING]))).all()
            for rec in rows:
                rec.status, rec.error, rec.finished_at = status, error[:2000], _now()
                rec.duration_seconds = (rec.finished_at - _aware(rec.started_at)).total_seconds()
                s.add(rec)
                ended.append(rec)
            s.commit()
            for rec in ended:
                s.refresh(rec)
                s.expunge(rec)
        return ended

    def mark_interrupted(self) -> int:
        """Runs left Running by a process on this host that no longer exists become Failed."""
        host = socket.gethostname()
        changed = 0
        with Session(self.engine) as s:
            rows = s.exec(select(SnapshotRecord).where(
                col(SnapshotRecord.status).in_([SnapshotStatus.RUNNING, SnapshotStatus.PENDING]),
                SnapshotRecord.hostname == host)).all()
            for rec in rows:
                if not _pid_alive(rec.pid):
                    rec.status = SnapshotStatus.FAILED
                    rec.error = "interrupted: the backup process ended without finishing"
                    s.add(rec)
                    changed += 1
            s.commit()
        return changed

    def snapshots(
        self, *, repository_id: str | None = None, database: str | None = None,
        status: SnapshotStatus | None = None,
    ) -> list[SnapshotRecord]:
        self.mark_interrupted()
        query = select(SnapshotRecord)
        if repository_id:
            query = query.where(SnapshotRecord.repository_id == repository_id)
        if database:
            query = query.where(SnapshotRecord.database == database)
        if status:
            query = query.where(SnapshotRecord.status == status)
        with Session(self.engine) as s:
            return list(s.exec(query.order_by(col(SnapshotRecord.started_at))).all())

    def forget_snapshots(self, snapshot_ids: list[str]) -> None:
        """Drop the rows of snapshots whose manifests prune deleted."""
        with Session(self.engine) as s:
            for sid in snapshot_ids:
                rec = s.get(SnapshotRecord, sid)
                if rec is not None:
                    s.delete(rec)
            s.commit()

    def stats(self, *, repository_id: str | None = None, database: str | None = None) -> list[DatabaseStats]:
        """Per database: runs, outcomes, sizes and the last run, newest database activity first."""
        out: dict[tuple[str, str, str], DatabaseStats] = {}
        for rec in self.snapshots(repository_id=repository_id, database=database):
            key = (rec.engine, rec.server, rec.database)
            st = out.setdefault(key, DatabaseStats(engine=rec.engine, server=rec.server, database=rec.database))
            st.total += 1
            if rec.status == SnapshotStatus.SUCCEEDED:
                st.succeeded += 1
                st.logical_bytes += rec.logical_size or 0
                st.stored_bytes += rec.stored_size or 0
                st.last_success = rec.started_at
            elif rec.status == SnapshotStatus.FAILED:
                st.failed += 1
            st.last_run, st.last_status = rec.started_at, rec.status.value
        for drill in self.drills(repository_id=repository_id, database=database):
            key = (drill.engine, drill.server, drill.database)
            st = out.setdefault(key, DatabaseStats(engine=drill.engine, server=drill.server,
                                                   database=drill.database))
            st.last_drill, st.last_drill_status = drill.started_at, drill.status.value
            if drill.status == DrillStatus.PASSED and (
                    st.last_proven_restorable is None or _aware(drill.snapshot_taken) >= st.last_proven_restorable):
                st.last_proven_restorable = _aware(drill.snapshot_taken)
                st.recovery_seconds = drill.restore_seconds
        return sorted(out.values(), key=lambda st: _aware(st.last_run) if st.last_run else _EPOCH, reverse=True)

    # -- restore drills --------------------------------------------------------------

    def record_drill(self, report: DrillReport, *, repository_id: str, flow_run_id: str | None = None
                     ) -> DrillRecord:
        """Store a finished drill: its verdict, recovery time and every check result."""
        db_id = self.upsert_database(report.engine, report.server, report.database)
        counts = report.counts()
        rec = DrillRecord(
            id=uuid.uuid4().hex, repository_id=repository_id, snapshot_id=report.snapshot_id,
            snapshot_taken=report.snapshot_taken, engine=report.engine, server=report.server,
            database=report.database, database_id=db_id, scratch_server=report.scratch_server,
            scratch_database=report.scratch_database,
            status=DrillStatus.PASSED if report.passed else DrillStatus.FAILED,
            started_at=report.started_at, finished_at=report.finished_at, restore_seconds=report.restore_seconds,
            checks_seconds=report.checks_seconds, checks_passed=counts["passed"], checks_failed=counts["failed"],
            checks_skipped=counts["skipped"], checks=json.dumps([c.model_dump() for c in report.checks]),
            error=report.error[:2000] if report.error else None, flow_run_id=flow_run_id)
        with Session(self.engine) as s:
            s.add(rec)
            s.commit()
            s.refresh(rec)
        return rec

    def drills(self, *, repository_id: str | None = None, database: str | None = None) -> list[DrillRecord]:
        """Drill records, oldest first."""
        query = select(DrillRecord)
        if repository_id:
            query = query.where(DrillRecord.repository_id == repository_id)
        if database:
            query = query.where(DrillRecord.database == database)
        with Session(self.engine) as s:
            return list(s.exec(query.order_by(col(DrillRecord.started_at))).all())

    def proven_snapshots(self, *, repository_id: str) -> set[str]:
        """Ids of the snapshots of this repository that a restore drill passed."""
        query = select(DrillRecord.snapshot_id).where(DrillRecord.repository_id == repository_id,
                                                      DrillRecord.status == DrillStatus.PASSED)
        with Session(self.engine) as s:
            return set(s.exec(query).all())

    def coverage(self, window: timedelta, *, now: datetime | None = None) -> list[dict[str, object]]:
        """Every known database (discovered or backed up) whose newest successful backup
        started before now - window, or that has none: engine, server, database, last_success."""
        now = now or _now()
        last: dict[tuple[str, str, str], datetime] = {}
        for rec in self.snapshots(status=SnapshotStatus.SUCCEEDED):
            key = (rec.engine, rec.server, rec.database)
            started = _aware(rec.started_at)
            if key not in last or started > last[key]:
                last[key] = started
        with Session(self.engine) as s:
            known = {(srv.engine, srv.label, db.name)
                     for db, srv in s.exec(select(DatabaseRecord, ServerRecord)
                                           .where(DatabaseRecord.server_id == ServerRecord.id)).all()}
        gaps: list[dict[str, object]] = []
        for engine, server, database in sorted(known | set(last)):
            newest = last.get((engine, server, database))
            if newest is None or newest < now - window:
                gaps.append({"engine": engine, "server": server, "database": database,
                             "last_success": newest.isoformat(timespec="seconds") if newest else None})
        return gaps

    def index_audit(self, entries: list[AuditRecord], *, repository_id: str) -> int:
        """Add (or refresh) index rows for audit records of the repository."""
        with Session(self.engine) as s:
            for e in entries:
                s.merge(AuditEventRecord(id=e.id, repository_id=repository_id, at=e.at, action=e.action,
                                         outcome=e.outcome, actor=e.actor.label(), flow_run_id=e.actor.flow_run,
                                         object=e.object, database=e.database, detail=e.detail, role=e.role))
            s.commit()
        return len(entries)

    def audit_events(self, *, repository_id: str | None = None, since: datetime | None = None,
                     action: str | None = None, database: str | None = None, actor: str | None = None
                     ) -> list[AuditEventRecord]:
        """Audit index rows, oldest first; `database` and `actor` match as substrings."""
        query = select(AuditEventRecord)
        if repository_id:
            query = query.where(AuditEventRecord.repository_id == repository_id)
        if since is not None:
            query = query.where(AuditEventRecord.at >= since)
        if action:
            query = query.where(AuditEventRecord.action == action)
        if database:
            query = query.where(col(AuditEventRecord.database).contains(database))
        if actor:
            query = query.where(col(AuditEventRecord.actor).contains(actor))
        with Session(self.engine) as s:
            return list(s.exec(query.order_by(col(AuditEventRecord.at), col(AuditEventRecord.id))).all())

    def rebuild(self, manifests: list[SnapshotManifest], *, repository_id: str, repository: str) -> int:
        """Make the repository's Succeeded rows equal its manifests; keep failed-run history."""
        ids = {m.id for m in manifests}
        with Session(self.engine) as s:
            for rec in s.exec(select(SnapshotRecord).where(
                    SnapshotRecord.repository_id == repository_id,
                    SnapshotRecord.status == SnapshotStatus.SUCCEEDED)).all():
                if rec.id not in ids:
                    s.delete(rec)
            s.commit()
        by_id = {m.id: m for m in manifests}
        for m in manifests:
            db_id = self.upsert_database(m.engine, m.server, m.database)
            with Session(self.engine) as s:
                rec = s.get(SnapshotRecord, m.id) or SnapshotRecord(
                    id=m.id, repository_id=repository_id, repository=repository, engine=m.engine,
                    server=m.server, database=m.database, chain=m.chain, started_at=m.started_at,
                    hostname=m.hostname, pid=0)
                rec.database_id = db_id
                rec.repository = repository
                _apply_manifest(rec, m, by_id.get(m.parent or ""))
                s.add(rec)
                s.commit()
        return len(manifests)


_create_lock = threading.Lock()


def _create_tables(url: str, engine: Engine) -> None:
    """Create missing tables. Catalogs opened at the same moment race on CREATE TABLE:
    threads of this process (parallel fleet tasks) take turns; another process's win shows
    as "already exists", and the check runs again."""
    with _create_lock:
        for attempt in range(3):
            try:
                SQLModel.metadata.create_all(engine)
                _add_enum_values(engine)
                return
            except OperationalError as exc:
                if "already exists" not in str(exc) or attempt == 2:
                    raise


def _add_enum_values(engine: Engine) -> None:
    """PostgreSQL catalogs store statuses as a native enum type: catalogs created before a
    status existed get it added (SQLite stores the names as text)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        for member in SnapshotStatus:
            conn.exec_driver_sql(f"ALTER TYPE snapshotstatus ADD VALUE IF NOT EXISTS '{member.name}'")


def _touch(s: Session, model: type[ServerRecord] | type[DatabaseRecord], key: str, now: datetime,
           **fields: str) -> None:
    """Insert the row, or move its last_seen to now."""
    rec = s.get(model, key)
    if rec is None:
        s.add(model(id=key, first_seen=now, last_seen=now, **fields))
    else:
        rec.last_seen = now
        s.add(rec)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _apply_manifest(rec: SnapshotRecord, m: SnapshotManifest, parent: SnapshotManifest | None) -> None:
    rec.status = SnapshotStatus.SUCCEEDED
    rec.error = None
    rec.kind = PHYSICAL_KIND if m.base_backup is not None else m.kind
    rec.chain = m.chain
    rec.parent = m.parent
    rec.started_at = m.started_at
    rec.finished_at = m.finished_at
    rec.duration_seconds = m.duration_seconds
    rec.logical_size = m.logical_size
    rec.stored_size = m.added_size(parent)
