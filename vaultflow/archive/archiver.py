"""Archival: copy aged rows to Parquet in the repository, verify, then delete them; put them back; purge.

Protocol per batch (docs/design.md, Archival): in one source transaction,
  1. select the next `batch_size` aged rows in key order and lock them (FOR UPDATE; SQLite:
     BEGIN IMMEDIATE), so they cannot change until the transaction ends;
  2. write them as one sealed Parquet object and read it back: same row count and checksum;
  3. write the batch record with status `verified`;
  4. delete exactly those keys and commit;
then rewrite the record as `archived`. A crash before 3 leaves an orphan object and the rows
in the source (the transaction dies with the process); a crash after 3 leaves a `verified`
record, which the next run over the same table reconciles *before* selecting anything:
rows still in the source and unchanged are deleted, changed ones stay and are excluded
from the batch, missing ones were deleted already. So every row ends up exactly once in
the source or in an archived batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from vaultflow.archive.batches import (
    BatchRecord,
    BatchStatus,
    Restore,
    batch_time,
    get_rows,
    list_batches,
    new_batch_id,
    policy_slug,
    put_record,
    put_rows,
    rows_key,
)
from vaultflow.archive.catalog import ArchiveCatalog
from vaultflow.archive.parquet import (
    RowHasher,
    age_bounds,
    columns_of,
    normalised_key,
    parquet_rows,
    parquet_table,
    rows_to_parquet,
)
from vaultflow.archive.sources import (
    ArchiveSource,
    Column,
    Row,
    SourceConnection,
    TableShape,
)
from vaultflow.audit import audited
from vaultflow.errors import InputError, IntegrityError
from vaultflow.repository import Repository

Fault = Callable[[str], None]
"""Test hook called at "written" (object stored), "verified" (record written) and "deleting"
(DELETE run, not committed)."""

KEYS_PER_STATEMENT = 500


def _no_fault(point: str) -> None:
    return None


@dataclass(frozen=True)
class ArchiveSpec:
    """What to archive: rows of `table` whose `age_column` is older than `cutoff`."""

    table: str
    age_column: str
    cutoff: datetime
    policy: str | None = None
    batch_size: int = 10_000
    where: str | None = None
    key_columns: list[str] = field(default_factory=list)
    max_batches: int | None = None


@dataclass
class ArchiveReport:
    policy: str
    engine: str
    server: str
    database: str
    table: str
    cutoff: datetime
    dry_run: bool = False
    batches: list[BatchRecord] = field(default_factory=list)
    rows: int = 0
    stored_bytes: int = 0
    source_bytes: int = 0
    reconciled: int = 0
    kept_changed: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy, "engine": self.engine, "server": self.server, "database": self.database,
            "table": self.table, "cutoff": self.cutoff.isoformat(), "dry_run": self.dry_run,
            "batches": [b.id for b in self.batches], "rows": self.rows, "stored_bytes": self.stored_bytes,
            "source_bytes": self.source_bytes, "reconciled": self.reconciled, "kept_changed": self.kept_changed,
        }


_DURATION = re.compile(r"^\s*(-?\d+)\s*([dhmw]?)\s*$")


def parse_age(text: str) -> timedelta:
    """`90d`, `36h`, `30m`, `2w` or a number of days; InputError otherwise."""
    m = _DURATION.match(text or "")
    if not m:
        raise InputError(f"age {text!r} is not a duration", "write it like 90d, 36h, 30m or 2w")
    n, unit = int(m.group(1)), m.group(2) or "d"
    return {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n), "w": timedelta(weeks=n)}[unit]


def cutoff_from(older_than: timedelta | None = None, before: datetime | None = None,
                now: datetime | None = None) -> datetime:
    """The cutoff instant; refuses one in the future (it would archive rows that are not aged)."""
    now = now or datetime.now(UTC)
    if before is not None:
        cutoff = before if before.tzinfo else before.replace(tzinfo=UTC)
    elif older_than is not None:
        cutoff = now - older_than
    else:
        raise InputError("no cutoff given", "pass an age such as --older-than 90d")
    if cutoff > now:
        raise InputError(f"the cutoff {cutoff.isoformat(timespec='seconds')} is in the future",
                         "give a positive age (--older-than 90d) or a past date")
    return cutoff


def default_policy(source: ArchiveSource, table: str) -> str:
    return policy_slug(f"{source.database}.{table}")


def prepare_table(source: ArchiveSource, conn: SourceConnection, spec: ArchiveSpec) -> tuple[TableShape, Column]:
    """Check the table, the age column, the key and the cutoff; InputError naming what is wrong."""
    if spec.cutoff > datetime.now(UTC):
        raise InputError(f"the cutoff {spec.cutoff.isoformat(timespec='seconds')} is in the future",
                         "give a positive age (--older-than 90d) or a past date")
    if spec.batch_size < 1:
        raise InputError(f"batch size {spec.batch_size} is not positive", "give --batch-size 1 or more")
    where = f"table {spec.table!r} in {source.describe_target()}"
    shape = source.describe(conn, spec.table)
    if shape is None:
        raise InputError(f"{where} does not exist", "check the table name (schema.table for PostgreSQL)")
    age = shape.column(spec.age_column)
    if age is None:
        raise InputError(f"{where} has no column {spec.age_column!r}",
                         f"choose one of: {', '.join(c.name for c in shape.columns)[:300]}")
    if not source.is_age_column(age):
        raise InputError(f"column {spec.age_column!r} of {where} is {age.source_type or 'untyped'}, "
                         "not a date or timestamp", "choose a date/time column as the age column")
    if spec.key_columns:
        missing = [k for k in spec.key_columns if shape.column(k) is None]
        if missing:
            raise InputError(f"{where} has no column {missing[0]!r} (declared unique key)", "fix the key columns")
        if sorted(spec.key_columns) not in [sorted(u) for u in source.unique_keys(conn, shape)]:
            raise InputError(f"columns {', '.join(spec.key_columns)} of {where} are not a unique key",
                             "declare the columns of a primary key or unique index")
        shape = TableShape(shape.schema, shape.name, shape.columns, list(spec.key_columns))
    elif not shape.key:
        raise InputError(f"{where} has no primary key, so archived rows cannot be deleted exactly",
                         "add a primary key, or declare a unique key (--key COLUMN)")
    return shape, age


def _where(source: ArchiveSource, spec: ArchiveSpec, age: Column) -> str:
    conds = [source.age_condition(age)]
    if spec.where:
        conds.append(f"({spec.where.replace('%', '%%') if source.placeholder == '%s' else spec.where})")
    return " AND ".join(conds)


def _select_sql(source: ArchiveSource, shape: TableShape, where: str, after: bool, limit: int) -> str:
    cols = ", ".join(source.select_expr(c) for c in shape.columns)
    if after:
        where = f"{where} AND {source.key_condition(shape.key)}"
    order = ", ".join(source.quote(k) for k in shape.key)
    return (f"SELECT {cols} FROM {source.qualified(shape)} WHERE {where} ORDER BY {order} "
            f"LIMIT {int(limit)}{source.lock_clause}")


def _fetch(source: ArchiveSource, shape: TableShape, raw: list[Row]) -> list[Row]:
    convert = [(i, c) for i, c in enumerate(shape.columns) if source.converts(c)]
    if not convert:
        return raw
    out = []
    for r in raw:
        row = list(r)
        for i, c in convert:
            row[i] = source.fetch_value(c, row[i])
        out.append(tuple(row))
    return out


def _key_params(source: ArchiveSource, shape: TableShape, keys: Sequence[Row]) -> list[Any]:
    kcols = [shape.column(k) for k in shape.key]
    return [source.store_value(c, v) for key in keys for c, v in zip(kcols, key, strict=True) if c is not None]


def _delete_keys(source: ArchiveSource, conn: SourceConnection, shape: TableShape, keys: Sequence[Row]) -> int:
    deleted = 0
    for i in range(0, len(keys), KEYS_PER_STATEMENT):
        part = keys[i:i + KEYS_PER_STATEMENT]
        deleted += conn.execute(f"DELETE FROM {source.qualified(shape)} WHERE {source.key_in(shape.key, len(part))}",
                                _key_params(source, shape, part))
    return deleted


def _select_keys(source: ArchiveSource, conn: SourceConnection, shape: TableShape, keys: Sequence[Row]) -> list[Row]:
    """The current rows with these keys, locked."""
    cols = ", ".join(source.select_expr(c) for c in shape.columns)
    out: list[Row] = []
    for i in range(0, len(keys), KEYS_PER_STATEMENT):
        part = keys[i:i + KEYS_PER_STATEMENT]
        out += conn.query(f"SELECT {cols} FROM {source.qualified(shape)} WHERE "
                          f"{source.key_in(shape.key, len(part))}{source.lock_clause}",
                          _key_params(source, shape, part))
    return _fetch(source, shape, out)


def archive_table(
    repo: Repository, source: ArchiveSource, spec: ArchiveSpec, *, dry_run: bool = False,
    catalog: ArchiveCatalog | None = None, fault: Fault | None = None,
) -> ArchiveReport:
    """Archive `spec.table`'s aged rows in batches; see the module docstring for the protocol.
    A run (not a dry run) leaves one audit record."""
    if dry_run:
        return _archive_table(repo, source, spec, dry_run=True, catalog=catalog, fault=fault)
    with audited(repo, "archive", object=spec.table, database=source.database) as note:
        report = _archive_table(repo, source, spec, dry_run=False, catalog=catalog, fault=fault)
        note.detail = (f"{report.rows} row(s) in {len(report.batches)} batch(es) older than {spec.cutoff:%Y-%m-%d}, "
                       f"policy {report.policy}")
    return report


def _archive_table(repo: Repository, source: ArchiveSource, spec: ArchiveSpec, *, dry_run: bool,
                   catalog: ArchiveCatalog | None, fault: Fault | None) -> ArchiveReport:
    fault = fault or _no_fault
    policy = policy_slug(spec.policy) if spec.policy else default_policy(source, spec.table)
    report = ArchiveReport(policy=policy, engine=source.engine, server=source.server_label(),
                           database=source.database, table=spec.table, cutoff=spec.cutoff, dry_run=dry_run)
    conn = source.connect()
    try:
        shape, age = prepare_table(source, conn, spec)
        where = _where(source, spec, age)
        cutoff = source.cutoff_param(age, spec.cutoff)
        if dry_run:
            count, size = conn.query(source.estimate_bytes_sql(shape, where), [cutoff])[0]
            conn.rollback()
            report.rows, report.source_bytes = int(count), int(size or 0)
            return report
        pending = [r for r in list_batches(repo)[0]
                   if r.status == BatchStatus.VERIFIED and _same_table(r, source, shape)]
        for rec in pending:
            report.kept_changed += reconcile_batch(repo, source, conn, shape, rec, catalog)
            report.reconciled += 1
        last_key: Row | None = None
        kpos = shape.key_positions()
        while spec.max_batches is None or len(report.batches) < spec.max_batches:
            conn.begin()
            params: list[Any] = [cutoff]
            if last_key is not None:
                params += [source.store_value(shape.columns[i], v) for i, v in zip(kpos, last_key, strict=True)]
            try:
                rows = _fetch(source, shape, conn.query(
                    _select_sql(source, shape, where, last_key is not None, spec.batch_size), params))
                if not rows:
                    conn.rollback()
                    break
                rec = _archive_batch(repo, source, conn, shape, age, spec, policy, rows, fault, catalog)
            except BaseException:
                conn.rollback()
                raise
            rec.status = BatchStatus.ARCHIVED
            rec.deleted_at = datetime.now(UTC)
            # Not synced one by one: if this record is lost, the durable `verified` one is
            # reconciled by the next run (its rows are gone, so it just becomes archived).
            put_record(repo, rec, sync=False)
            if catalog is not None:
                catalog.record(rec, repo.id)
            report.batches.append(rec)
            report.rows += rec.rows
            report.stored_bytes += rec.stored_bytes
            last_key = tuple(rows[-1][i] for i in kpos)
        repo.store.sync()
    finally:
        conn.close()
    return report


def table_name(shape: TableShape) -> str:
    """How batch records name a table: schema.table unless the schema is public (or none)."""
    return shape.name if shape.schema in (None, "public") else shape.label


def _same_table(rec: BatchRecord, source: ArchiveSource, shape: TableShape) -> bool:
    return (rec.engine, rec.server, rec.database, rec.table) == (
        source.engine, source.server_label(), source.database, table_name(shape))


def _archive_batch(repo: Repository, source: ArchiveSource, conn: SourceConnection, shape: TableShape, age: Column,
                   spec: ArchiveSpec, policy: str, rows: list[Row], fault: Fault,
                   catalog: ArchiveCatalog | None) -> BatchRecord:
    """Steps 2-4 of the protocol for rows selected and locked in `conn`'s open transaction."""
    hasher = RowHasher(shape.columns)
    checksum = hasher.checksum(rows)
    batch_id = new_batch_id()
    kpos = shape.key_positions()
    name = table_name(shape)
    meta = {"vaultflow.table": name, "vaultflow.batch": batch_id, "vaultflow.checksum": checksum}
    parquet = rows_to_parquet(shape.columns, rows, meta)
    stored = put_rows(repo, policy, batch_id, parquet)
    fault("written")
    back = parquet_table(get_rows(repo, policy, batch_id, written_here=True))
    back_rows = parquet_rows(back)
    if len(back_rows) != len(rows) or RowHasher(columns_of(back)).checksum(back_rows) != checksum:
        raise IntegrityError(f"archive batch {batch_id} of {name} read back different from the source rows",
                             "nothing was deleted; check the repository storage and run again")
    age_i = [c.name for c in shape.columns].index(age.name)
    age_min, age_max = age_bounds([r[age_i] for r in rows])
    rec = BatchRecord(
        id=batch_id, policy=policy, status=BatchStatus.VERIFIED, engine=source.engine,
        server=source.server_label(), database=source.database, table=name, age_column=age.name,
        key_columns=list(shape.key), cutoff=spec.cutoff, created_at=datetime.now(UTC), rows=len(rows),
        parquet_rows=len(rows), checksum=checksum, parquet_bytes=len(parquet), stored_bytes=stored,
        age_min=age_min, age_max=age_max, key_min=normalised_key(shape.columns, kpos, rows[0]),
        key_max=normalised_key(shape.columns, kpos, rows[-1]))
    put_record(repo, rec)
    if catalog is not None:
        catalog.record(rec, repo.id)
    fault("verified")
    deleted = _delete_keys(source, conn, shape, [tuple(r[i] for i in kpos) for r in rows])
    if deleted != len(rows):
        raise IntegrityError(f"deleting archive batch {batch_id} of {name} removed {deleted} rows, "
                             f"not {len(rows)}", "nothing was deleted; run again (the batch is reconciled)")
    fault("deleting")
    conn.commit()
    return rec


def reconcile_batch(repo: Repository, source: ArchiveSource, conn: SourceConnection, shape: TableShape,
                    rec: BatchRecord, catalog: ArchiveCatalog | None = None) -> int:
    """Finish a `verified` batch: delete its rows still in the source unchanged; exclude changed ones.

    Returns how many rows changed (they stay in the source and leave the batch).
    """
    table = parquet_table(get_rows(repo, rec.policy, rec.id))
    cols = columns_of(table)
    rows = parquet_rows(table)
    names = [c.name for c in cols]
    kpos = [names.index(k) for k in rec.key_columns]
    key_shape = TableShape(shape.schema, shape.name, shape.columns, list(rec.key_columns))
    excluded = {tuple(k) for k in rec.excluded}
    archived: dict[tuple[Any, ...], tuple[Row, bytes]] = {}
    hasher = RowHasher(cols)
    for r in rows:
        nk = tuple(normalised_key(cols, kpos, r))
        if nk not in excluded:
            archived[nk] = (tuple(r[i] for i in kpos), hasher.row_hash(r))
    conn.begin()
    try:
        present = _select_keys(source, conn, key_shape, [k for k, _ in archived.values()])
        src_hasher = RowHasher(shape.columns)
        skpos = key_shape.key_positions()
        delete: list[Row] = []
        changed: list[list[Any]] = []
        for r in present:
            nk = tuple(normalised_key(shape.columns, skpos, r))
            entry = archived.get(nk)
            if entry is None:
                continue
            if src_hasher.row_hash(r) == entry[1]:
                delete.append(tuple(r[i] for i in skpos))
            else:
                changed.append(list(nk))
        _delete_keys(source, conn, key_shape, delete)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    rec.excluded += changed
    rec.rows -= len(changed)
    rec.status = BatchStatus.ARCHIVED
    rec.deleted_at = datetime.now(UTC)
    put_record(repo, rec)
    if catalog is not None:
        catalog.record(rec, repo.id)
    return len(changed)


# -- reading and putting back ----------------------------------------------------------

def read_batch(repo: Repository, rec: BatchRecord) -> pa.Table:
    """The batch's rows as an Arrow table (excluded rows removed); `.to_pandas()` for a DataFrame."""
    if rec.status == BatchStatus.PURGED:
        raise InputError(f"archive batch {rec.id} was purged on {rec.purged_at:%Y-%m-%d}" if rec.purged_at else
                         f"archive batch {rec.id} was purged", "its rows are gone; choose another batch")
    table = parquet_table(get_rows(repo, rec.policy, rec.id))
    if not rec.excluded:
        return table
    cols = columns_of(table)
    names = [c.name for c in cols]
    kpos = [names.index(k) for k in rec.key_columns]
    excluded = {tuple(k) for k in rec.excluded}
    keep = [tuple(normalised_key(cols, kpos, r)) not in excluded for r in parquet_rows(table)]
    return table.filter(pa.array(keep))


def unarchive_batch(repo: Repository, rec: BatchRecord, target: ArchiveSource, *, table: str | None = None,
                    catalog: ArchiveCatalog | None = None) -> Restore:
    """Insert the batch's rows into `table` (default: the archived table) of `target`, skipping
    rows whose key is already present; one transaction; the restore is added to the record
    and the audit trail."""
    repo.require("restore", "unarchive")
    with audited(repo, "unarchive", object=rec.id, database=target.database) as note:
        restore = _unarchive_batch(repo, rec, target, table=table, catalog=catalog)
        note.detail = (f"{restore.inserted} row(s) into {restore.table} of {restore.into}, "
                       f"{restore.skipped} already present")
    return restore


def _unarchive_batch(repo: Repository, rec: BatchRecord, target: ArchiveSource, *, table: str | None,
                     catalog: ArchiveCatalog | None) -> Restore:
    arrow = read_batch(repo, rec)
    cols = columns_of(arrow)
    rows = parquet_rows(arrow)
    name = table or rec.table
    conn = target.connect()
    try:
        shape = target.describe(conn, name)
        if shape is None:
            raise InputError(f"table {name!r} does not exist in {target.describe_target()}",
                             "create it (same columns as the archived table) and run again")
        positions: list[int] = []
        insert_cols: list[Column] = []
        for i, c in enumerate(cols):
            tc = shape.column(c.name)
            if tc is None:
                raise InputError(f"table {name!r} in {target.describe_target()} has no column {c.name!r}",
                                 "add the column or unarchive into a table with the archived columns")
            if not tc.generated and not c.generated:
                positions.append(i)
                insert_cols.append(tc)
        values = [[target.store_value(tc, r[i]) for i, tc in zip(positions, insert_cols, strict=True)] for r in rows]
        conn.begin()
        try:
            inserted = conn.execute_many(target.insert_sql(shape, insert_cols), values)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    finally:
        conn.close()
    restore = Restore(at=datetime.now(UTC), into=target.describe_target(), table=name, inserted=inserted,
                      skipped=len(rows) - inserted)
    rec.restores.append(restore)
    put_record(repo, rec)
    if catalog is not None:
        catalog.record(rec, repo.id)
    return restore


# -- purge ------------------------------------------------------------------------------

@dataclass
class PurgeReport:
    purged: list[BatchRecord] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"purged": [b.id for b in self.purged], "rows": sum(b.rows for b in self.purged),
                "orphans": self.orphans, "bytes_freed": self.bytes_freed, "dry_run": self.dry_run}


ORPHAN_GRACE = timedelta(days=1)


def purge_batches(repo: Repository, *, delete_after_days: int, policy: str | None = None,
                  now: datetime | None = None, dry_run: bool = False,
                  catalog: ArchiveCatalog | None = None) -> PurgeReport:
    """Delete the Parquet objects of archived batches created more than `delete_after_days` ago;
    their records stay, marked `purged`. Also deletes Parquet objects without a record (left by
    a run that died before step 3) once they are a day old."""
    if dry_run:
        return _purge_batches(repo, delete_after_days=delete_after_days, policy=policy, now=now, dry_run=True,
                              catalog=catalog)
    repo.require("admin", "purge")
    with audited(repo, "purge", object=policy or "") as note:
        report = _purge_batches(repo, delete_after_days=delete_after_days, policy=policy, now=now, dry_run=False,
                                catalog=catalog)
        note.detail = (f"purged {len(report.purged)} batch(es), {sum(b.rows for b in report.purged)} row(s), "
                       f"{len(report.orphans)} orphan(s), {report.bytes_freed} bytes freed")
    return report


def _purge_batches(repo: Repository, *, delete_after_days: int, policy: str | None, now: datetime | None,
                   dry_run: bool, catalog: ArchiveCatalog | None) -> PurgeReport:
    if delete_after_days < 0:
        raise InputError(f"delete_after_days {delete_after_days} is negative", "give 0 or more days")
    now = now or datetime.now(UTC)
    limit = now - timedelta(days=delete_after_days)
    slug = policy_slug(policy) if policy else None
    report = PurgeReport(dry_run=dry_run)
    records, orphans = list_batches(repo)
    for rec in records:
        if rec.status != BatchStatus.ARCHIVED or (slug and rec.policy != slug) or rec.created_at > limit:
            continue
        report.purged.append(rec)
        report.bytes_freed += rec.stored_bytes
        if dry_run:
            continue
        repo.store.delete(rows_key(rec.policy, rec.id))
        rec.status = BatchStatus.PURGED
        rec.purged_at = datetime.now(UTC)
        put_record(repo, rec)
        if catalog is not None:
            catalog.record(rec, repo.id)
    for pol, batch in orphans:
        born = batch_time(batch)
        if (slug and pol != slug) or born is None or born > now - ORPHAN_GRACE:
            continue
        report.orphans.append(batch)
        if not dry_run:
            repo.store.delete(rows_key(pol, batch))
    return report
