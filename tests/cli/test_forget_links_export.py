"""`vaultflow forget`, `vaultflow links` and the `export` flow, through the real command and a
real Prefect API: what is forgotten (and its events), what is refused (nothing deleted), and
links listed without their URLs."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.cli.test_cli import one_error_line, snapshots
from tests.conftest import PASSPHRASE
from tests.test_forget import change
from vaultflow.sample_data import create

Cli = Callable[..., subprocess.CompletedProcess[str]]


def repository_events(api: str, repository: str, event: str, count: int, timeout: float = 30
                      ) -> list[dict[str, Any]]:
    """The `event`s about `repository`, waiting until `count` of them arrived."""
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.post(f"{api}/events/filter", json={"filter": {
            "event": {"name": [event]}, "resource": {"id": [f"vaultflow.repository.{repository}"]}},
            "limit": 50}, timeout=10).json()
        events: list[dict[str, Any]] = found.get("events", [])
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(1)


def chunk_files(repo: Path) -> set[Path]:
    return {p for p in (repo / "chains").rglob("*") if p.is_file()}


def test_forget_dry_run_refusal_unknown_and_forget(cli: Cli, prefect_api: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    app, other = create(tmp_path / "app.db", rows=2000), create(tmp_path / "other.db", rows=500, seed=3)
    assert cli("init", "--repo", str(repo)).returncode == 0

    def backup(db: Path, kind: str = "full") -> str:
        done = cli("backup", f"sqlite:///{db}", "--repo", str(repo), "--kind", kind, "--json")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["snapshot"])[:8]  # ids below are short ids

    full = backup(app)
    change(app, 1)
    incremental = backup(app, "incremental")
    lone = backup(other)
    before = chunk_files(repo)

    dry = cli("forget", lone[:8], "--dry-run", "--repo", str(repo))
    assert dry.returncode == 0, dry.stderr
    assert f"would forget 1 snapshot(s): {lone[:8]} (other.db, full); would free" in dry.stdout
    assert chunk_files(repo) == before and len(snapshots(cli, repo)) == 3

    refused = cli("forget", full, "--repo", str(repo))
    line = one_error_line(refused)
    assert refused.returncode == 2 and incremental[:8] in line and "--with-dependents" in line
    assert chunk_files(repo) == before and len(snapshots(cli, repo)) == 3

    unknown = cli("forget", "deadbeef", "--repo", str(repo))
    assert unknown.returncode == 2 and "deadbeef" in one_error_line(unknown)
    assert chunk_files(repo) == before

    done = cli("forget", lone, "--repo", str(repo))
    assert done.returncode == 0, done.stderr
    assert f"forgot 1 snapshot(s): {lone[:8]} (other.db, full); freed" in done.stdout
    assert {str(r["id"])[:8] for r in snapshots(cli, repo)} == {full, incremental}  # catalog row gone too
    assert chunk_files(repo) < before

    chain = cli("forget", full, "--with-dependents", "--repo", str(repo), "--json")
    assert chain.returncode == 0, chain.stderr
    result = json.loads(chain.stdout)
    assert [i[:8] for i in result["forgotten"]] == [full, incremental] and result["bytes_freed"] > 0
    assert snapshots(cli, repo) == [] and chunk_files(repo) == set()

    deleted = repository_events(prefect_api, str(repo), "vaultflow.snapshot.deleted", 3)
    payloads = {e["payload"]["snapshot"][:8]: e["payload"] for e in deleted}
    assert sorted(payloads) == sorted([lone, full, incremental])  # none from the dry run or the refusals
    assert payloads[incremental] | {"taken": None, "snapshot": incremental} == {
        "snapshot": incremental, "engine": "sqlite", "server": str(tmp_path), "database": "app.db",
        "kind": "incremental", "taken": None, "deleted_by": "forget"}
    roles = {r["prefect.resource.role"]: r for r in deleted[0]["related"]}
    assert roles["database"]["prefect.resource.name"] in ("app.db", "other.db")


def test_prune_emits_snapshot_deleted(cli: Cli, prefect_api: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    db = create(tmp_path / "p.db", rows=300)
    assert cli("init", "--repo", str(repo)).returncode == 0
    ids = [json.loads(cli("backup", f"sqlite:///{db}", "--repo", str(repo), "--json").stdout)["snapshot"][:8]
           for _ in range(3)]
    assert cli("prune", "--repo", str(repo), "--keep-last", "1", "--dry-run").returncode == 0
    assert cli("prune", "--repo", str(repo), "--keep-last", "1").returncode == 0
    deleted = repository_events(prefect_api, str(repo), "vaultflow.snapshot.deleted", 2)
    assert sorted(e["payload"]["snapshot"][:8] for e in deleted) == sorted(ids[:2])
    assert {e["payload"]["deleted_by"] for e in deleted} == {"retention"}


def test_export_flow_on_s3_and_links(cli: Cli, prefect_api: str, s3_repo: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from flows.export import export
    from vaultflow.operations.share import LINK_PREFIX, LinkRecord, _aad, list_links
    from vaultflow.repository import open_repository

    db = create(tmp_path / "x.db", rows=400)
    done = cli("backup", f"sqlite:///{db}", "--repo", s3_repo, "--json")
    assert done.returncode == 0, done.stderr
    repo = open_repository(s3_repo, PASSPHRASE)
    (sid,) = repo.snapshot_ids()

    state = export(snapshot=sid[:8], repository=s3_repo, expires="2h", return_state=True)
    result = state.result()
    url, signature = str(result["url"]), str(result["url"]).split("?", 1)[1]
    assert result["object_key"].startswith(f"exports/{sid}-") and result["object_key"].endswith(".db")
    assert url.startswith("http")

    (created,) = repository_events(prefect_api, s3_repo, "vaultflow.export.created", 1)
    assert created["payload"]["snapshot"] == sid and created["payload"]["object_key"] == result["object_key"]
    assert created["payload"]["size"] == result["size"] and created["payload"]["expires_at"] == result["expires_at"]
    assert "url" not in created["payload"] and signature not in json.dumps(created)

    async def read_run() -> tuple[str, object]:  # what the API (and so the UI) holds of the run
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)
            assert run.state is not None
            return run.model_dump_json(), run.state.data

    import asyncio

    stored, result_reference = asyncio.run(read_run())
    assert sid[:8] in stored and signature not in stored and "X-Amz-Signature" not in stored
    assert result_reference is None  # the return value (with the URL) went to no result storage

    # a link handed out yesterday, expired an hour ago
    past = LinkRecord(id=f"{sid[:8]}-000000000000", snapshot=sid, object_key=f"exports/{sid}.db",
                      location=f"{s3_repo}/exports/{sid}.db", size=123,
                      created_at=datetime.now(UTC) - timedelta(days=1),
                      expires_at=datetime.now(UTC) - timedelta(hours=1))
    repo.store.put(LINK_PREFIX + past.id, repo.sealer.seal(past.model_dump_json().encode(), _aad(past.id)))
    assert len(list_links(repo)) == 2

    active = cli("links", "--repo", s3_repo, "--json")
    assert active.returncode == 0, active.stderr
    assert [(r["snapshot"], r["status"]) for r in json.loads(active.stdout)] == [(sid, "active")]
    everything = cli("links", "--all", "--repo", s3_repo, "--json")
    rows = json.loads(everything.stdout)
    assert [(r["id"], r["status"]) for r in rows] == [(past.id, "expired"), (rows[1]["id"], "active")]
    assert set(rows[0]) == {"id", "snapshot", "object", "object_key", "size", "created", "expires",
                            "status"}
    table = cli("links", "--all", "--repo", s3_repo)
    assert table.returncode == 0 and "expired" in table.stdout and "active" in table.stdout
    assert past.id in table.stdout and f"exports/{sid}.db" in table.stdout
    for proc in (active, everything, table):
        assert signature not in proc.stdout + proc.stderr

    via_cli = cli("export", sid, "--url", "--expires", "1h", "--repo", s3_repo, "--json")
    assert via_cli.returncode == 0, via_cli.stderr
    assert json.loads(via_cli.stdout)["url"].startswith("http")
    assert len(json.loads(cli("links", "--repo", s3_repo, "--json").stdout)) == 2
