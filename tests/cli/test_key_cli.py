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


def _unaudited_files(path: Path) -> set[Path]:
    """The repository's files but its audit records (a refused key removal records its failure)."""
    return {p for p in _files(path) if "audit" not in p.relative_to(path).parts}


def _key_ids(cli: Cli, repo: str, passphrase: str = PASSPHRASE) -> dict[str, str]:
    """role -> key id (the roles here have one key each)."""
    listed = cli("key", "list", "--repo", repo, "--json", env={"VAULTFLOW_PASSPHRASE": passphrase})
    assert listed.returncode == 0, listed.stderr
    return {k["role"]: k["key"] for k in json.loads(listed.stdout)}


def test_key_remove_and_passwd_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert cli("init", "--repo", repo).returncode == 0
    added = cli("key", "add", "--role", "backup", "--repo", repo, env={"VAULTFLOW_NEW_PASSPHRASE": BACKUP_PASSPHRASE})
    assert added.returncode == 0, added.stderr
    ids = _key_ids(cli, repo)
    before = _unaudited_files(tmp_path / "repo")

    last = cli("key", "remove", ids["admin"][:8], "--repo", repo)
    assert last.returncode == 2 and "last admin key" in one_error_line(last)
    by_worker = cli("key", "remove", ids["backup"][:8], "--repo", repo, env={"VAULTFLOW_PASSPHRASE": BACKUP_PASSPHRASE})
    assert by_worker.returncode != 0 and "needs an admin key" in one_error_line(by_worker)
    no_new = cli("key", "passwd", "--repo", repo, env={"VAULTFLOW_NEW_PASSPHRASE": ""})
    assert no_new.returncode == 2 and "VAULTFLOW_NEW_PASSPHRASE" in one_error_line(no_new)
    assert _unaudited_files(tmp_path / "repo") == before, "a refused key command changed the repository"

    removed = cli("key", "remove", ids["backup"][:8], "--repo", repo)
    assert removed.returncode == 0, removed.stderr
    gone = cli("key", "list", "--repo", repo, env={"VAULTFLOW_PASSPHRASE": BACKUP_PASSPHRASE})
    assert gone.returncode == 2 and "no key of the repository" in one_error_line(gone)

    new_passphrase = "the admin's new passphrase, from the environment only"
    changed = cli("key", "passwd", "--repo", repo, env={"VAULTFLOW_NEW_PASSPHRASE": new_passphrase})
    assert changed.returncode == 0, changed.stderr
    assert new_passphrase not in changed.stdout + changed.stderr
    old = cli("key", "list", "--repo", repo)  # the old passphrase (the test's VAULTFLOW_PASSPHRASE)
    assert old.returncode == 2 and "no key of the repository" in one_error_line(old)
    ids_now = _key_ids(cli, repo, new_passphrase)
    assert set(ids_now) == {"admin"} and ids_now["admin"] != ids["admin"]
    audit = cli("audit", "--repo", repo, "--json", env={"VAULTFLOW_PASSPHRASE": new_passphrase})
    assert audit.returncode == 0, audit.stderr
    assert new_passphrase not in audit.stdout and BACKUP_PASSPHRASE not in audit.stdout


def test_upgrade_through_the_cli_keeps_a_version_1_snapshot_restorable(cli: Cli, tmp_path: Path) -> None:
    from vaultflow.repository import Repository
    from vaultflow.sample_data import compare
    from vaultflow.storage import LocalStore

    repo = tmp_path / "repo"
    Repository.init(LocalStore(repo), PASSPHRASE, format_version=1)
    src = create(tmp_path / "app.db", rows=300)
    assert cli("backup", f"sqlite:///{src}", "--repo", str(repo)).returncode == 0
    snapshot = json.loads(cli("snapshots", "--repo", str(repo), "--json").stdout)[0]["id"]
    refused = cli("key", "add", "--role", "backup", "--repo", str(repo), env={"VAULTFLOW_NEW_PASSPHRASE": "x"})
    assert refused.returncode != 0 and "vaultflow upgrade" in one_error_line(refused)

    upgraded = cli("upgrade", "--repo", str(repo))
    assert upgraded.returncode == 0, upgraded.stderr
    assert "format version 2" in upgraded.stdout and json.loads((repo / "config").read_text())["version"] == 2
    assert set(_key_ids(cli, str(repo))) == {"admin"}
    restored = cli("restore", snapshot, f"sqlite:///{tmp_path}/restored.db", "--repo", str(repo))
    assert restored.returncode == 0, restored.stderr
    compare(src, tmp_path / "restored.db")


def test_upgrade_of_an_object_locked_repository_is_refused_in_one_line(cli: Cli, tmp_path: Path) -> None:
    from vaultflow.repository import Repository
    from vaultflow.storage import LocalStore

    repo = tmp_path / "repo"
    Repository.init(LocalStore(repo), PASSPHRASE, format_version=1)
    config = json.loads((repo / "config").read_text())
    config["object_lock"] = {"mode": "governance", "period_seconds": 86400}
    (repo / "config").write_text(json.dumps(config))
    before = {p: p.read_bytes() for p in _files(repo)}
    refused = cli("upgrade", "--repo", str(repo))
    assert refused.returncode == 2 and "object-locked" in one_error_line(refused)
    assert {p: p.read_bytes() for p in _files(repo)} == before


def test_export_url_with_a_backup_key_is_refused_in_one_line(cli: Cli, s3_repo: str, tmp_path: Path) -> None:
    from vaultflow.storage import open_store

    added = cli("key", "add", "--role", "backup", "--repo", s3_repo,
                env={"VAULTFLOW_NEW_PASSPHRASE": BACKUP_PASSPHRASE})
    assert added.returncode == 0, added.stderr
    as_backup = {"VAULTFLOW_PASSPHRASE": BACKUP_PASSPHRASE}
    src = create(tmp_path / "app.db", rows=200)
    done = cli("backup", f"sqlite:///{src}", "--repo", s3_repo, env=as_backup)
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(cli("snapshots", "--repo", s3_repo, "--json", env=as_backup).stdout)[0]["id"]
    store = open_store(s3_repo)
    before = sorted((o.key, o.size) for o in store.list(""))
    refused = cli("export", snapshot, "--url", "--repo", s3_repo, env=as_backup)
    assert refused.returncode != 0
    line = one_error_line(refused)
    assert "a download link needs a restore key" in line and "backup key" in line, line
    assert "http" not in refused.stdout and BACKUP_PASSPHRASE not in refused.stdout + refused.stderr
    assert sorted((o.key, o.size) for o in store.list("")) == before
    assert not list(store.list("exports/")) and not list(store.list("links/"))
