"""The per-database backup report (the stats artifact and `vaultflow stats --csv`), built from the
catalog: outcomes, sizes, last backup, last proven restorable, whether the recovery point
objective is met, and the size and duration trend of the recent backups.

Plain Python on purpose: every backup run publishes this report, and importing pandas for it
cost about 0.4 s of each run (issue 17)."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from vaultflow.catalog.catalog import Catalog
from vaultflow.catalog.models import SnapshotStatus

REPORT_COLUMNS = ["engine", "server", "database", "runs", "succeeded", "failed", "logical_bytes", "stored_bytes",
                  "dedup_ratio", "last_backup", "last_status", "last_proven_restorable", "rpo_hours", "rpo_met",
                  "last_stored_bytes", "size_trend", "last_duration_seconds", "duration_trend"]
TREND_WINDOW = 5
"""A trend compares the newest successful backup with the median of the ones before it (at most
this many): 1.0 is steady, 2.0 twice as big or slow."""

ReportRow = dict[str, object]
"""One database's row: every key of REPORT_COLUMNS, a missing value as None."""


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def backup_report(catalog: Catalog, *, repository_id: str | None = None, database: str | None = None,
                  rpo_hours: float = 26.0, now: datetime | None = None) -> list[ReportRow]:
    """One row per database of the repository, keys REPORT_COLUMNS, newest activity first.
    `rpo_met` is whether the last successful backup is younger than `rpo_hours`."""
    now = now or datetime.now(UTC)
    runs: dict[tuple[str, str, str], list[tuple[datetime, int | None, float | None]]] = defaultdict(list)
    for r in catalog.snapshots(repository_id=repository_id, database=database, status=SnapshotStatus.SUCCEEDED):
        runs[(r.engine, r.server, r.database)].append(
            (_aware(r.started_at) or now, r.stored_size, r.duration_seconds))
    trends: dict[tuple[str, str, str], ReportRow] = {}
    for key, group in runs.items():
        group.sort(key=lambda run: run[0])
        (_, stored, seconds), before = group[-1], group[-1 - TREND_WINDOW:-1]
        trends[key] = {"last_stored_bytes": stored, "last_duration_seconds": seconds,
                       "size_trend": _ratio(stored, [b[1] for b in before]),
                       "duration_trend": _ratio(seconds, [b[2] for b in before])}
    rows: list[ReportRow] = []
    for st in catalog.stats(repository_id=repository_id, database=database):
        last_success = _aware(st.last_success)
        row: ReportRow = dict.fromkeys(REPORT_COLUMNS)
        row.update({
            "engine": st.engine, "server": st.server, "database": st.database, "runs": st.total,
            "succeeded": st.succeeded, "failed": st.failed, "logical_bytes": st.logical_bytes,
            "stored_bytes": st.stored_bytes, "dedup_ratio": st.dedup_ratio, "last_backup": last_success,
            "last_status": st.last_status, "last_proven_restorable": _aware(st.last_proven_restorable),
            "rpo_hours": rpo_hours,
            "rpo_met": last_success is not None and now - last_success <= timedelta(hours=rpo_hours),
            **trends.get((st.engine, st.server, st.database), {}),
        })
        rows.append(row)
    return rows


def _ratio(newest: float | None, before: list[int | None] | list[float | None]) -> float | None:
    values = [float(v) for v in before if v is not None]
    if newest is None or not values or statistics.median(values) == 0:
        return None
    return round(float(newest) / statistics.median(values), 2)


def report_records(rows: list[ReportRow]) -> list[dict[str, object]]:
    """The report as JSON-ready rows (times as ISO strings, missing values as None)."""
    return [{k: (v.isoformat(timespec="seconds") if isinstance(v, datetime) else v) for k, v in row.items()}
            for row in rows]


def report_csv(rows: list[ReportRow]) -> str:
    """The report as CSV with a header of REPORT_COLUMNS (times ISO 8601, a missing value empty)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report_records(rows))
    return out.getvalue()
