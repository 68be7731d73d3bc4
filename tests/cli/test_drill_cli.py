"""`vaultflow drill` as users run it, and `stats` showing what a drill proved."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.cli.test_cli import one_error_line
from vaultflow.sample_data import create

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_drill_then_stats_show_last_proven_restorable(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    src = create(tmp_path / "app.db", rows=800)
    assert cli("init", "--repo", str(repo)).returncode == 0
    assert cli("backup", f"sqlite:///{src}", "--repo", str(repo)).returncode == 0

    done = cli("drill", "--database", "app.db", "--repo", str(repo), "--scratch", f"sqlite:///{tmp_path}/scratch/")
    assert done.returncode == 0, done.stderr
    assert "passed: restored in" in done.stdout and "checks passed" in done.stdout
    assert not list((tmp_path / "scratch").glob("vaultflow_drill_*"))

    stats = json.loads(cli("stats", "--repo", str(repo), "--json").stdout)
    assert stats[0]["last_proven_restorable"] and stats[0]["last_drill_status"] == "Passed"
    table = cli("stats", "--repo", str(repo))
    assert "last proven restorable" in table.stdout.replace("\n", " ") or "proven" in table.stdout

    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "bad.json").write_text(json.dumps({"table": "orders", "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "no_such", "min_value": 0}}]}))
    bad = cli("drill", "--repo", str(repo), "--suites", str(suites), "--json")
    assert bad.returncode == 2
    line = one_error_line(bad)
    assert "column 'no_such' does not exist in table main.orders" in line


def test_drill_bad_usage(cli: Cli, tmp_path: Path) -> None:
    both = cli("drill", "--database", "a", "--snapshot", "abcd", "--repo", str(tmp_path))
    assert both.returncode == 2 and "exclusive" in one_error_line(both)
    secret = cli("drill", "--database", "a", "--repo", str(tmp_path), "--scratch",
                 "postgresql://postgres:hunter2@127.0.0.1:5432")
    assert secret.returncode == 2 and "hunter2" not in secret.stderr + secret.stdout
    per_engine_secret = cli("drill", "--repo", str(tmp_path), "--scratch",
                            "postgresql=postgresql://postgres:hunter2@127.0.0.1:5432")
    assert per_engine_secret.returncode == 2 and "hunter2" not in per_engine_secret.stderr + per_engine_secret.stdout
    unknown = cli("drill", "--repo", str(tmp_path), "--scratch", "oracle=oracle-scratch")
    assert unknown.returncode == 2 and "unknown engine 'oracle'" in one_error_line(unknown)
    twice = cli("drill", "--repo", str(tmp_path), "--scratch", "mysql=a", "--scratch", "mysql=b")
    assert twice.returncode == 2 and "once" in one_error_line(twice)
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "broken.yaml").write_text("expectations: [unclosed\n")
    broken = cli("drill", "--repo", str(tmp_path), "--suites", str(tmp_path / "suites"))
    assert broken.returncode == 2 and "broken.yaml" in one_error_line(broken)
