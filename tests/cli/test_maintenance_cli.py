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
    _check_csv_report(cli, repo)

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


def test_prune_caps_and_per_database_presets(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shop = create(tmp_path / "shop.db", rows=300)
    other = create(tmp_path / "t.db", rows=200)
    assert cli("init", "--repo", str(repo)).returncode == 0
    for db in (shop, shop, shop, other, other, other):
        assert cli("backup", f"sqlite:///{db}", "--repo", str(repo)).returncode == 0, "backup failed"

    young = cli("prune", "--repo", str(repo), "--max-age", "30d", "--dry-run", "--json")
    assert young.returncode == 0, young.stderr
    assert json.loads(young.stdout)["forgotten"] == []  # all taken just now: no cap reached

    capped = cli("prune", "--repo", str(repo), "--max-count", "2", "--dry-run", "--json")
    assert capped.returncode == 0, capped.stderr
    assert len(json.loads(capped.stdout)["forgotten"]) == 2  # one per database

    done = cli("prune", "--repo", str(repo), "--max-count", "1", "--max-age", "30d",
               "--policy-for", "shop*=compliance", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["forgotten"]) == 2
    remaining = [r["database"] for r in snapshots(cli, repo) if r["status"] == "Succeeded"]
    assert sorted(remaining) == ["shop.db", "shop.db", "shop.db", "t.db"]

    glob_on_key = cli("prune", "--repo", str(repo), "--policy", "aggressive", "--max-count", "1",
                      "--policy-for", "sqlite://*=default", "--policy-for", "shop*=aggressive", "--json")
    assert glob_on_key.returncode == 0, glob_on_key.stderr
    assert json.loads(glob_on_key.stdout)["forgotten"] == []  # the first match (default, 10 newest) wins


def test_bad_retention_input_deletes_nothing(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    db = create(tmp_path / "s.db", rows=100)
    assert cli("init", "--repo", str(repo)).returncode == 0
    for _ in range(2):
        assert cli("backup", f"sqlite:///{db}", "--repo", str(repo)).returncode == 0
    cases = {
        ("--max-count", "0"): "would delete every backup",
        ("--max-age", "0d"): "max_age must be a positive duration",
        ("--max-age", "month"): "cannot read duration 'month'",
        ("--policy-for", "shop*"): "cannot read --policy-for 'shop*'",
        ("--policy-for", "=compliance"): "cannot read --policy-for",
        ("--policy-for", "shop*=forever"): "unknown retention preset 'forever' in --policy-for",
        ("--policy", "forever"): "unknown retention preset 'forever'",
        ("--keep-last", "0", "--keep-daily", "0"): "keeps nothing",
    }
    for args, message in cases.items():
        bad = cli("prune", "--repo", str(repo), *args)
        assert bad.returncode == 2 and message in one_error_line(bad), (args, bad.stdout, bad.stderr)
    assert len([r for r in snapshots(cli, repo) if r["status"] == "Succeeded"]) == 2


def _check_csv_report(cli: Cli, repo: Path) -> None:
    """`stats --csv` is the backup report (read here with pandas): one row per database, RPO and trends."""
    import io

    import pandas as pd

    from vaultflow.catalog.report import REPORT_COLUMNS

    out = cli("stats", "--repo", str(repo), "--csv")
    assert out.returncode == 0, out.stderr
    frame = pd.read_csv(io.StringIO(out.stdout))
    assert list(frame.columns) == REPORT_COLUMNS and sorted(frame["database"]) == ["s.db", "t.db"]
    s_db = frame.set_index("database").loc["s.db"]
    assert s_db["runs"] == 3 and bool(s_db["rpo_met"]) and s_db["size_trend"] > 0
    assert pd.isna(frame.set_index("database").loc["t.db", "size_trend"])  # one backup: no trend yet
    missed = pd.read_csv(io.StringIO(cli("stats", "--repo", str(repo), "--csv", "--rpo-hours", "0.0001").stdout))
    assert not missed["rpo_met"].any()
