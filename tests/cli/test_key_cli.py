"""Key roles through the `vaultflow` command: a backup key backs up, and every command that reads
stored data or deletes ends in one line naming the key it needs, with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import Cli, one_error_line
from tests.conftest import PASSPHRASE
from vaultflow.sample_data import create

BACKUP_PASSPHRASE = "worker key: writes, cannot read"
RESTORE_PASSPHRASE = "restorer key: reads, cannot delete"


def _files(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


def test_a_backup_key_backs_up_and_each_reading_or_deleting_command_says_which_key_it_needs(
        cli: Cli, tmp_path: Path) -> None:
    repo, other = tmp_path / "repo", tmp_path / "other"
    src = create(tmp_path / "app.db", rows=300)
    assert cli("init", "--repo", str(repo)).returncode == 0
    for role, secret in (("backup", BACKUP_PASSPHRASE), ("restore", RESTORE_PASSPHRASE)):
        added = cli("key", "add", "--role", role, "--repo", str(repo), env={"VAULTFLOW_NEW_PASSPHRASE": secret})
        assert added.returncode == 0, added.stderr
        assert secret not in added.stdout + added.stderr
    as_backup = {"VAULTFLOW_PASSPHRASE": BACKUP_PASSPHRASE}
    as_restore = {"VAULTFLOW_PASSPHRASE": RESTORE_PASSPHRASE}

    keys = json.loads(cli("key", "list", "--repo", str(repo), "--json", env=as_backup).stdout)
    assert sorted(k["role"] for k in keys) == ["admin", "backup", "restore"]
    assert [k["role"] for k in keys if k["current"]] == ["backup"]

    for _ in range(2):  # a full, then an incremental
        done = cli("backup", f"sqlite:///{src}", "--repo", str(repo), env=as_backup)
        assert done.returncode == 0, done.stderr
    snapshot = json.loads(cli("snapshots", "--repo", str(repo), "--json", env=as_backup).stdout)[0]["id"]
    # The destination opens with the same passphrase (here its admin key): the source's backup key is refused.
    assert cli("init", "--repo", str(other), env=as_backup).returncode == 0
    before = _files(repo)

    refused = {
        "restore": cli("restore", snapshot, f"sqlite:///{tmp_path}/restored.db", "--repo", str(repo), env=as_backup),
        "export": cli("export", snapshot, "--to", str(tmp_path / "dump.db"), "--repo", str(repo), env=as_backup),
        "drill": cli("drill", "--repo", str(repo), "--scratch", f"sqlite:///{tmp_path}/scratch/", env=as_backup),
        "copy": cli("copy", "--to", str(other), "--repo", str(repo), env=as_backup),
    }
    for command, result in refused.items():
        assert result.returncode != 0, command
        line = one_error_line(result)
        assert "needs a restore key" in line and "backup key" in line, (command, line)
        assert BACKUP_PASSPHRASE not in result.stdout + result.stderr
    for command, result in {
        "prune": cli("prune", "--keep-last", "1", "--repo", str(repo), env=as_restore),
        "key add": cli("key", "add", "--role", "backup", "--repo", str(repo),
                       env={**as_restore, "VAULTFLOW_NEW_PASSPHRASE": "x"}),
    }.items():
        assert result.returncode != 0, command
        assert "needs an admin key" in one_error_line(result), command
    assert _files(repo) == before, "a refused command changed the repository"
    assert not (tmp_path / "restored.db").exists() and not (tmp_path / "dump.db").exists()

    restored = cli("restore", snapshot, f"sqlite:///{tmp_path}/restored.db", "--repo", str(repo), env=as_restore)
    assert restored.returncode == 0, restored.stderr
    assert PASSPHRASE not in restored.stdout + restored.stderr
