"""The catalog's `archive_batches` table: an index of batch records, rebuildable from the repository."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from vaultflow.archive.batches import BatchRecord
from vaultflow.catalog import default_catalog_url


class ArchiveBatchRow(SQLModel, table=True):
    """One archive batch; mirrors the newest sealed record `archives/<policy>/<batch>/batch.<seq>`."""

    __tablename__ = "archive_batches"

    id: str = Field(primary_key=True)
    repository_id: str = Field(index=True)
    policy: str = Field(index=True)
    status: str
    engine: str
    server: str
    database: str
    table_name: str
    age_column: str
    rows: int
    parquet_bytes: int
    stored_bytes: int
    age_min: str | None = None
    age_max: str | None = None
    key_min: str | None = None
    key_max: str | None = None
    checksum: str
    created_at: datetime
    deleted_at: datetime | None = None
    purged_at: datetime | None = None
    restores: int = 0


class ArchiveCatalog:
    def __init__(self, url: str | None = None) -> None:
        self.engine: Engine = create_engine(url or default_catalog_url())
        SQLModel.metadata.create_all(self.engine, tables=[ArchiveBatchRow.__table__])  # type: ignore[attr-defined]

    def record(self, rec: BatchRecord, repository_id: str) -> None:
        with Session(self.engine) as s:
            row = s.get(ArchiveBatchRow, rec.id) or ArchiveBatchRow(
                id=rec.id, repository_id=repository_id, policy=rec.policy, status=rec.status.value,
                engine=rec.engine, server=rec.server, database=rec.database, table_name=rec.table,
                age_column=rec.age_column, rows=rec.rows, parquet_bytes=rec.parquet_bytes,
                stored_bytes=rec.stored_bytes, checksum=rec.checksum, created_at=rec.created_at)
            row.status = rec.status.value
            row.rows = rec.rows
            row.age_min, row.age_max = rec.age_min, rec.age_max
            row.key_min = json.dumps(rec.key_min) if rec.key_min is not None else None
            row.key_max = json.dumps(rec.key_max) if rec.key_max is not None else None
            row.deleted_at, row.purged_at = rec.deleted_at, rec.purged_at
            row.restores = len(rec.restores)
            s.add(row)
            s.commit()

    def batches(self, *, repository_id: str | None = None, policy: str | None = None) -> list[ArchiveBatchRow]:
        query = select(ArchiveBatchRow)
        if repository_id:
            query = query.where(ArchiveBatchRow.repository_id == repository_id)
        if policy:
            query = query.where(ArchiveBatchRow.policy == policy)
        with Session(self.engine) as s:
            return list(s.exec(query.order_by(col(ArchiveBatchRow.created_at))).all())

    def rebuild(self, records: list[BatchRecord], repository_id: str) -> int:
        """Make this repository's rows equal its batch records."""
        ids = {r.id for r in records}
        with Session(self.engine) as s:
            for row in s.exec(select(ArchiveBatchRow).where(ArchiveBatchRow.repository_id == repository_id)).all():
                if row.id not in ids:
                    s.delete(row)
            s.commit()
        for rec in records:
            self.record(rec, repository_id)
        return len(records)
