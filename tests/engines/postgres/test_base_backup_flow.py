"""`vaultflow backup SERVER --physical` (the `base-backup` flow) against a private archiving cluster:
recorded like a logical backup (catalog row of kind physical, events, artifacts, progress), a
cluster with a tablespace refused in one line with nothing written, and `vaultflow coverage --repo`
showing each archiving cluster's WAL lag and gaps, with an event for each.

The tests share one cluster and run in file order: the last one deletes an archived segment.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from flows.base_backup import base_backup
from tests.engines.postgres.conftest import ArchivingCluster, open_repo, switch_and_wait
from tests.engines.postgres.test_pitr import one_error_line
from vaultflow.catalog import PHYSICAL_KIND, Catalog, SnapshotStatus
from vaultflow.engines.postgres.basebackup import parse_lsn

pytestmark = pytest.mark.timeout(600)

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _server(cluster: ArchivingCluster) -> str:
    return f"postgresql://postgres@127.0.0.1:{cluster.port}"


def _env(cluster: ArchivingCluster) -> dict[str, str]:
    return {"VAULTFLOW_REPO": str(cluster.repo)}


def _events(api: str, resource: str, expected: set[str], timeout: float = 30, at_least: int = 1
            ) -> list[dict[str, Any]]:
    """The resource's vaultflow events, once each expected one arrived `at_least` times (or at the timeout)."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.post(f"{api}/events/filter", json={"filter": {
            "event": {"prefix": ["vaultflow."]}, "resource": {"id": [resource]}}, "limit": 50}).json()
        events: list[dict[str, Any]] = found.get("events", [])
        names = [e["event"] for e in events]
        if all(names.count(n) >= at_least for n in expected) or time.monotonic() > deadline:
            return events
        time.sleep(1)


def _artifact_keys(flow_run_id: Any) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> list[Any]:
        async with get_client() as client:
            return list(await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))))

    return {a.key for a in asyncio.run(read()) if a.key}


def test_backup_physical_runs_the_base_backup_flow_recorded_like_a_logical_backup(
        archiving_cluster: ArchivingCluster, cli: Cli, prefect_api: str) -> None:
    cluster = archiving_cluster
    switch_and_wait(cluster, switches=1)  # something archived: the archive check has a file to find
    out = cli("backup", _server(cluster), "--physical", "--json", env=_env(cluster))
    assert out.returncode == 0, out.stdout + out.stderr
    first = json.loads(out.stdout)
    assert first["physical"] is True and first["kind"] == "full" and first["database"] == "(cluster)"
    assert first["system_identifier"] == str(cluster.sysid())
    manifest = open_repo(cluster).load_manifest(first["snapshot_id"])
    assert manifest.base_backup is not None and manifest.base_backup.stop_lsn == first["stop_lsn"]
    (row,) = Catalog().snapshots(database="(cluster)")
    assert (row.id, row.kind, row.status, row.server) == (
        first["snapshot_id"], PHYSICAL_KIND, SnapshotStatus.SUCCEEDED, f"127.0.0.1:{cluster.port}")
    assert row.logical_size == manifest.logical_size and row.stored_size

    # The second joins the chain (its unchanged files store nothing new), with a progress artifact.
    state = base_backup(source=_server(cluster), repository=str(cluster.repo), return_state=True)
    assert state.is_completed(), state.message
    second = state.result()
    assert (second["kind"], second["parent"]) == ("incremental", first["snapshot_id"])
    assert int(second["stored_bytes"]) < int(second["logical_bytes"]), second
    keys = _artifact_keys(state.state_details.flow_run_id)
    assert {"vaultflow-backup-summary", "vaultflow-stats", "vaultflow-base-backup-progress"} <= keys, keys
    assert [r.kind for r in Catalog().snapshots(database="(cluster)")] == [PHYSICAL_KIND, PHYSICAL_KIND]
    resource = f"vaultflow.database.postgresql.127.0.0.1:{cluster.port}.(cluster)"
    events = _events(prefect_api, resource, {"vaultflow.backup.succeeded"}, at_least=2)
    payloads = [e["payload"] for e in events if e["event"] == "vaultflow.backup.succeeded"]
    assert sorted(p["snapshot"] for p in payloads) == sorted([first["snapshot_id"], second["snapshot_id"]])
    assert all(p["physical"] is True and p["stop_lsn"] for p in payloads), payloads

    # Options of logical backups, a differential and another engine: one line each, nothing run.
    one_error_line(cli("backup", _server(cluster), "--physical", "--include-table", "public.t", env=_env(cluster)), 2,
              "--physical backs up the whole cluster")
    one_error_line(cli("backup", _server(cluster), "--physical", "--kind", "differential", env=_env(cluster)), 2,
              "--kind differential")
    one_error_line(cli("backup", "mysql://root@127.0.0.1:3306", "--physical", env=_env(cluster)), 2, "not PostgreSQL")
    assert len(open_repo(cluster).snapshot_ids()) == 2

    # --kind full: a chain of its own; the line says what was saved.
    text = cli("backup", _server(cluster), "--physical", "--kind", "full", env=_env(cluster))
    assert text.returncode == 0, text.stdout + text.stderr
    assert f"saved (full): cluster {first['system_identifier']} on 127.0.0.1:{cluster.port}, timeline 1" in \
        text.stdout, text.stdout
    third = [m for m in map(open_repo(cluster).load_manifest, open_repo(cluster).snapshot_ids())
             if m.id not in (first["snapshot_id"], second["snapshot_id"])]
    assert [(m.kind, m.parent, m.chain) for m in third] == [("full", None, third[0].id)]


def test_a_cluster_with_a_tablespace_is_refused_in_one_line_and_nothing_is_written(
        archiving_cluster: ArchivingCluster, cli: Cli) -> None:
    cluster = archiving_cluster
    location = cluster.base / "extra-space"
    location.mkdir()
    cluster.give_to_postgres(location)
    before = open_repo(cluster).snapshot_ids()
    chains = sorted(p.name for p in (cluster.repo / "chains").iterdir())
    with cluster.connect() as c:
        c.execute(f"CREATE TABLESPACE extra LOCATION '{location}'")
    try:
        refused = cli("backup", _server(cluster), "--physical", env=_env(cluster))
        one_error_line(refused, 2, f"127.0.0.1:{cluster.port}", "tablespaces outside the data directory (extra)",
                  "SET TABLESPACE pg_default")
        direct = cli("pitr", "base-backup", _server(cluster), env=_env(cluster))
        one_error_line(direct, 2, "tablespaces outside the data directory (extra)")
    finally:
        with cluster.connect() as c:
            c.execute("DROP TABLESPACE extra")
    assert open_repo(cluster).snapshot_ids() == before
    assert sorted(p.name for p in (cluster.repo / "chains").iterdir()) == chains
    (failed,) = [r for r in Catalog().snapshots(database="(cluster)") if r.status != SnapshotStatus.SUCCEEDED]
    assert failed.status == SnapshotStatus.FAILED and "tablespaces" in (failed.error or "")


def test_coverage_shows_each_clusters_wal_lag_and_gaps_and_emits_an_event_for_each(
        archiving_cluster: ArchivingCluster, cli: Cli, prefect_api: str) -> None:
    cluster = archiving_cluster
    sysid = cluster.sysid()
    switch_and_wait(cluster, switches=3)
    fresh = cli("coverage", "--json", "--wal-lag-minutes", "30", env=_env(cluster))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    (row,) = json.loads(fresh.stdout)["wal"]
    assert (row["system_identifier"], row["server"]) == (str(sysid), f"127.0.0.1:{cluster.port}")
    assert row["lagging"] is False and row["gaps"] == [] and 0 <= row["lag_seconds"] < 120, row

    time.sleep(1.5)  # older than a 1.2 s limit
    late = cli("coverage", "--json", "--wal-lag-minutes", "0.02", env=_env(cluster))
    assert late.returncode == 1, late.stdout + late.stderr
    (row,) = json.loads(late.stdout)["wal"]
    assert row["lagging"] is True and row["newest_segment"] and "min old" in row["detail"], row

    window = json.loads(cli("pitr", "window", str(sysid), "--json", env=_env(cluster)).stdout)[0]
    stop_segment = max(parse_lsn(b["stop_lsn"]) for b in window["base_backups"]) // (16 << 20)
    timeline_dir = cluster.repo / "wal" / str(sysid) / "00000001"
    later = sorted(p for p in timeline_dir.iterdir()
                   if "." not in p.name and int(p.name[8:16], 16) * 256 + int(p.name[16:], 16) > stop_segment)
    assert len(later) >= 3, later
    victim = later[1]
    victim.unlink()
    gapped = cli("coverage", "--json", "--wal-lag-minutes", "30", env=_env(cluster))
    assert gapped.returncode == 1, gapped.stdout + gapped.stderr
    (row,) = json.loads(gapped.stdout)["wal"]
    assert row["lagging"] is False and len(row["gaps"]) == 1 and victim.name.upper() in row["gaps"][0], row
    shown = cli("coverage", "--wal-lag-minutes", "30", env=_env(cluster))
    assert shown.returncode == 1 and "GAP" in shown.stdout and "WAL archives" in shown.stdout, shown.stdout

    resource = f"vaultflow.server.postgresql.127.0.0.1:{cluster.port}"
    events = {e["event"]: e for e in _events(prefect_api, resource, {"vaultflow.wal.lagging", "vaultflow.wal.gap"})}
    assert set(events) == {"vaultflow.wal.lagging", "vaultflow.wal.gap"}, sorted(events)
    assert events["vaultflow.wal.gap"]["resource"]["vaultflow.system_identifier"] == str(sysid)
    assert victim.name.upper() in events["vaultflow.wal.gap"]["payload"]["detail"]
