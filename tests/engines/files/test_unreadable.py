"""Entries the backup's user may not read: listed and failing the backup, or left out and
recorded with --skip-unreadable. Permission is really denied: the tests run as root, so the
command runs in a child process whose capabilities lack CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH (setpriv), for which mode 000 means no access, as for any other user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.test_cli import one_error_line
from tests.conftest import ROOT
from tests.engines.files.test_files_engine import describe_tree

Cli = Callable[..., subprocess.CompletedProcess[str]]
_NO_READ_OVERRIDE = ["--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def run_without_read_override(prefect_api: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`vaultflow ARGS` as a process for which file modes are enforced (root without its
    DAC capabilities; any other user as it is)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): permission cannot be denied")
        prefix = [setpriv, *_NO_READ_OVERRIDE, "--"]
    env = dict(os.environ, PREFECT_API_URL=prefect_api, PYTHONPATH=str(ROOT))
    return subprocess.run([*prefix, sys.executable, "-m", "vaultflow.cli.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def tree_with_unreadable_entries(root: Path) -> Path:
    """public.txt, docs/readme.txt readable; private/ (a directory) and key.pem (a file) mode 000."""
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "readme.txt").write_text("read me\n")
    (root / "public.txt").write_text("public\n")
    (root / "private").mkdir()
    (root / "private" / "inner.txt").write_text("hidden\n")
    (root / "key.pem").write_text("secret key\n")
    (root / "private").chmod(0o000)
    (root / "key.pem").chmod(0o000)
    return root


def test_unreadable_entries_fail_the_backup_listed_or_are_skipped_and_recorded(prefect_api: str, cli: Cli,
                                                                               tmp_path: Path) -> None:
    """Only the backups need denied reads (a process of their own); init, show and restore run in-process."""
    repo = tmp_path / "repo"
    src = tree_with_unreadable_entries(tmp_path / "site")
    assert cli("init", "--repo", str(repo)).returncode == 0

    failed = run_without_read_override(prefect_api, "backup", f"file://{src}", "--repo", str(repo))
    assert failed.returncode == 1
    line = one_error_line(failed)
    assert "2 entries of file tree" in line and "permission denied" in line, line
    assert "key.pem" in line and "private" in line and "public.txt" not in line, line
    assert "--exclude-table" in line and "--skip-unreadable" in line, line
    assert not list((repo / "snapshots").glob("*")), "a failed backup left a snapshot"

    done = run_without_read_override(prefect_api, "backup", f"file://{src}", "--repo", str(repo), "--json",
                                     "--skip-unreadable")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["skipped"] == 2
    shown = cli("show", str(result["snapshot"]), "--repo", str(repo), "--json")
    assert json.loads(shown.stdout)["skipped"] == {"count": 2, "paths": ["key.pem", "private"]}
    text = cli("show", str(result["snapshot"]), "--repo", str(repo))
    assert "left out as unreadable (--skip-unreadable): 2 entries: key.pem, private" in text.stdout

    dest = tmp_path / "restored"
    restored = cli("restore", str(result["snapshot"]), f"file://{dest}", "--repo", str(repo))
    assert restored.returncode == 0, restored.stderr
    (src / "private").chmod(0o700)
    shutil.rmtree(src / "private")
    (src / "key.pem").unlink()
    assert describe_tree(dest) == describe_tree(src)


def test_skip_unreadable_is_refused_by_a_database_engine(cli: Cli, tmp_path: Path) -> None:
    from vaultflow.sample_data import create

    db = create(tmp_path / "shop.db", rows=10)
    repo = tmp_path / "repo"
    assert cli("init", "--repo", str(repo)).returncode == 0
    refused = cli("backup", f"sqlite:///{db}", "--repo", str(repo), "--skip-unreadable")
    assert refused.returncode == 2
    assert "SQLite does not support leaving out unreadable entries" in one_error_line(refused)
