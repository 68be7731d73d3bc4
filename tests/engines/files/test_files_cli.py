"""`vaultflow backup file:///dir` and `vaultflow restore <id> file:///dir` as users run them."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from tests.cli.test_cli import one_error_line
from tests.engines.files.test_files_engine import describe_tree, nasty_tree

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_backup_restore_export_of_a_tree(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    src = nasty_tree(tmp_path / "src")
    assert cli("init", "--repo", str(repo)).returncode == 0
    done = cli("backup", f"file://{src}", "--repo", str(repo), "--json")
    assert done.returncode == 0, done.stderr
    snapshot = str(json.loads(done.stdout)["snapshot"])

    shown = cli("show", snapshot, "--repo", str(repo), "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["engine"] == "files" and info["database"] == "src"

    dest = tmp_path / "restored"
    restored = cli("restore", snapshot, f"file://{dest}", "--repo", str(repo))
    assert restored.returncode == 0, restored.stderr
    assert describe_tree(dest) == describe_tree(src)

    again = cli("restore", snapshot, f"file://{dest}", "--repo", str(repo))
    assert again.returncode == 2 and "--replace" in one_error_line(again)
    replaced = cli("restore", snapshot, f"file://{dest}", "--repo", str(repo), "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert describe_tree(dest) == describe_tree(src)

    exported = tmp_path / "tree.tar"
    assert cli("export", snapshot, "--to", str(exported), "--repo", str(repo)).returncode == 0
    with tarfile.open(exported) as tar:
        assert "a/b/c/deep.txt" in tar.getnames()

    missing = cli("backup", f"file://{tmp_path / 'absent'}", "--repo", str(repo))
    assert missing.returncode == 2 and "is not a directory" in one_error_line(missing)
    subset = cli("restore", snapshot, f"file://{tmp_path / 'x'}", "--repo", str(repo), "--table", "a")
    assert subset.returncode == 2 and "--table" in one_error_line(subset)
