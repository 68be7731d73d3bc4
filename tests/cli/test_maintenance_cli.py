"""prune, verify and stats as users run them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.cli.test_cli import one_error_line, snapshots
from vaultflow.repository.repository import chunk_key
from vaultflow.sample_data import create

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_prune_verify_stats(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    src = create(tmp_path / "s.db", rows=3000)
    other = create(tmp_path / "t.db", rows=500)
    assert cli("init", "--repo", str(repo)).returncode == 0
    for db in (src, src, src, other):
        assert cli("backup", f"sqlite:///{db}", "--repo", str(repo)).returncode == 0, "backup failed"

    stats = json.loads(cli("stats", "--repo", str(repo), "--json").stdout)
    by_db = {s["database"]: s for s in stats}
    assert by_db["s.db"]["succeeded"] == 3 and by_db["t.db"]["succeeded"] == 1
    assert by_db["s.db"]["dedup_ratio"] > 1 and by_db["s.db"]["last_status"] == "Succeeded"

    dry = cli("prune", "--repo", str(repo), "--keep-last", "1", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert len(plan["forgotten"]) == 2 and plan["bytes_freed"] > 0 and plan["dry_run"]
    assert len([r for r in snapshots(cli, repo) if r["status"] == "Succeeded"]) == 4

    done = cli("prune", "--repo", str(repo), "--keep-last", "1")
    assert done.returncode == 0 and "forgot 2 snapshot(s)" in done.stdout
    remaining = [r for r in snapshots(cli, repo) if r["status"] == "Succeeded"]
    assert sorted(r["database"] for r in remaining) == ["s.db", "t.db"]

    ok = cli("verify", "--repo", str(repo), "--deep", "--json")
    assert ok.returncode == 0, ok.stderr
    assert all(v["valid"] for v in json.loads(ok.stdout))

    victim = next(r for r in remaining if r["database"] == "s.db")
    chunk_file = next((repo / "chains" / str(victim["id"])).rglob("*"))
    while chunk_file.is_dir():
        chunk_file = next(chunk_file.iterdir())
    raw = bytearray(chunk_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk_file.write_bytes(bytes(raw))
    assert chunk_key(str(victim["id"]), chunk_file.name) in str(chunk_file)

    bad = cli("verify", "--repo", str(repo), "--deep")
    line = one_error_line(bad)
    assert bad.returncode == 1 and chunk_file.name[:12] in line and str(victim["id"])[:8] in line
    refuse = cli("restore", str(victim["id"])[:8], f"sqlite:///{tmp_path / 'r.db'}", "--repo", str(repo))
    assert refuse.returncode == 1 and "failed its check" in one_error_line(refuse)
    assert not (tmp_path / "r.db").exists()


def test_malformed_policies(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert cli("init", "--repo", str(repo)).returncode == 0
    unknown = cli("prune", "--repo", str(repo), "--policy", "weekly")
    assert unknown.returncode == 2 and "unknown retention preset" in one_error_line(unknown)
    negative = cli("prune", "--repo", str(repo), "--keep-last", "-1")
    assert negative.returncode == 2
    zero = cli("prune", "--repo", str(repo), "--keep-last", "0", "--keep-daily", "0")
    assert zero.returncode == 2 and "keeps nothing" in one_error_line(zero)
    bad_within = cli("prune", "--repo", str(repo), "--keep-within", "soon")
    assert bad_within.returncode == 2 and "duration" in one_error_line(bad_within)
