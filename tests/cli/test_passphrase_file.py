"""The CLI (and the flows it runs) take the passphrase from VAULTFLOW_PASSPHRASE_FILE, a file
only its owner can read, as the WAL commands do; an unsafe file is refused in one line."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PASSPHRASE
from vaultflow.repository import Repository
from vaultflow.sample_data import create
from vaultflow.storage import LocalStore

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_backup_with_a_passphrase_file(cli: Cli, repo_path: Path, tmp_path: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    env = {"VAULTFLOW_PASSPHRASE": "", "VAULTFLOW_PASSPHRASE_FILE": str(secret)}
    db = create(tmp_path / "app.db", rows=50)
    done = cli("backup", f"sqlite:///{db}", "--repo", str(repo_path), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(Repository.open(LocalStore(repo_path), PASSPHRASE).snapshot_ids()) == 1

    secret.chmod(0o644)
    refused = cli("backup", f"sqlite:///{db}", "--repo", str(repo_path), env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"chmod 600 {secret}" in lines[0], refused.stderr
    assert PASSPHRASE not in refused.stdout + refused.stderr
    assert len(Repository.open(LocalStore(repo_path), PASSPHRASE).snapshot_ids()) == 1
