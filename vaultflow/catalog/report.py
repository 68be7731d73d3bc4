"""The per-database backup report (the stats artifact and `vaultflow stats --csv`), built with
pandas from the catalog: outcomes, sizes, last backup, last proven restorable, whether the
recovery point objective is met, and the size and duration trend of the recent backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from vaultflow.catalog.catalog import Catalog
from vaultflow.catalog.models import SnapshotStatus

REPORT_COLUMNS = ["engine", "server", "database", "runs", "succeeded", "failed", "logical_bytes", "stored_bytes",
                  "dedup_ratio", "last_backup", "last_status", "last_proven_restorable", "rpo_hours", "rpo_met",
                  "last_stored_bytes", "size_trend", "last_duration_seconds", "duration_trend"]
TREND_WINDOW = 5
"""A trend compares the newest successful backup with the median of the ones before it (at most
this many): 1.0 is steady, 2.0 twice as big or slow."""


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def backup_report(catalog: Catalog, *, repository_id: str | None = None, database: str | None = None,
                  rpo_hours: float = 26.0, now: datetime | None = None) -> pd.DataFrame:
    """One row per database of the repository, columns REPORT_COLUMNS, newest activity first.
    `rpo_met` is whether the last successful backup is younger than `rpo_hours`."""
    now = now or datetime.now(UTC)
    stats = catalog.stats(repository_id=repository_id, database=database)
    runs = pd.DataFrame([{"engine": r.engine, "server": r.server, "database": r.database, "at": _aware(r.started_at),
                          "stored": r.stored_size, "seconds": r.duration_seconds}
                         for r in catalog.snapshots(repository_id=repository_id, database=database,
                                                    status=SnapshotStatus.SUCCEEDED)],
                        columns=["engine", "server", "database", "at", "stored", "seconds"])
    trends: dict[tuple[str, str, str], dict[str, object]] = {}
    for key, group in runs.sort_values("at").groupby(["engine", "server", "database"]):
        newest, before = group.iloc[-1], group.iloc[-1 - TREND_WINDOW:-1]
        trends[key] = {"last_stored_bytes": newest["stored"], "last_duration_seconds": newest["seconds"],
                       "size_trend": _ratio(newest["stored"], before["stored"]),
                       "duration_trend": _ratio(newest["seconds"], before["seconds"])}
    rows = []
    for st in stats:
        last_success = _aware(st.last_success)
        rows.append({
            "engine": st.engine, "server": st.server, "database": st.database, "runs": st.total,
            "succeeded": st.succeeded, "failed": st.failed, "logical_bytes": st.logical_bytes,
            "stored_bytes": st.stored_bytes, "dedup_ratio": st.dedup_ratio, "last_backup": last_success,
            "last_status": st.last_status, "last_proven_restorable": _aware(st.last_proven_restorable),
            "rpo_hours": rpo_hours,
            "rpo_met": last_success is not None and now - last_success <= timedelta(hours=rpo_hours),
            **trends.get((st.engine, st.server, st.database), {}),
        })
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def _ratio(newest: object, before: pd.Series) -> float | None:
    values = before.dropna()
    if newest is None or pd.isna(newest) or values.empty or float(values.median()) == 0:
        return None
    return round(float(newest) / float(values.median()), 2)  # type: ignore[arg-type]


def report_records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """The report as JSON-ready rows (times as ISO strings, missing values as None)."""
    out = frame.astype(object).where(frame.notna(), None)
    return [{k: (v.isoformat(timespec="seconds") if isinstance(v, datetime) else v) for k, v in row.items()}
            for row in out.to_dict("records")]
