"""`vaultflow audit`: the trail of state-changing actions, read back from the repository, and
`catalog rebuild` bringing its index back."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path

from tests.cli.test_cli import Cli, one_error_line
from tests.conftest import PASSPHRASE
from vaultflow.catalog import Catalog
from vaultflow.operations.forget import forget
from vaultflow.repository import Repository
from vaultflow.sample_data import create
from vaultflow.storage import LocalStore


def trail(cli: Cli, repo: Path, *extra: str) -> list[dict[str, object]]:
    proc = cli("audit", "--repo", str(repo), "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_every_action_is_listed_in_order_with_outcome_and_actor(cli: Cli, tmp_path: Path,
                                                                 isolated_home: Path) -> None:
    repo = tmp_path / "repo"
    src = create(tmp_path / "src.db", rows=300)
    assert cli("init", "--repo", str(repo)).returncode == 0
    first = json.loads(cli("backup", f"sqlite:///{src}", "--repo", str(repo), "--json").stdout)
    second = json.loads(cli("backup", f"sqlite:///{src}", "--repo", str(repo), "--kind", "full",
                            "--json").stdout)
    restored = tmp_path / "restored.db"
    assert cli("restore", str(first["snapshot"]), f"sqlite:///{restored}", "--repo", str(repo)).returncode == 0
    not_empty = cli("restore", str(first["snapshot"]), f"sqlite:///{restored}", "--repo", str(repo))
    assert not_empty.returncode == 2
    forget(Repository.open(LocalStore(repo), PASSPHRASE), [str(second["snapshot_id"])])  # no CLI command yet
    assert cli("prune", "--repo", str(repo), "--keep-last", "1").returncode == 0

    entries = trail(cli, repo)
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("init", "succeeded"), ("backup", "succeeded"), ("backup", "succeeded"), ("restore", "succeeded"),
        ("restore", "failed"), ("forget", "succeeded"), ("prune", "succeeded")]
    me = {"user": getpass.getuser(), "host": socket.gethostname()}
    assert all({k: e["actor"][k] for k in me} == me for e in entries)  # type: ignore[index]
    init, backup, _, restore, refused, forgot, _ = entries
    assert init["object"] == Repository.open(LocalStore(repo), PASSPHRASE).id
    assert backup["object"] == first["snapshot_id"] and backup["database"] == "src.db"
    assert "full" in str(backup["detail"]) and "bytes" in str(backup["detail"])
    assert restore["object"] == first["snapshot_id"] and restore["database"] == "restored.db"
    assert "--replace" in str(refused["detail"])
    assert forgot["object"] == second["snapshot_id"]
    # The CLI runs backup and restore as flows in its own process: the record names the run.
    assert backup["actor"]["flow_run"] and restore["actor"]["flow_run"] != backup["actor"]["flow_run"]  # type: ignore[index]
    assert init["actor"]["flow_run"] is None and forgot["actor"]["flow_run"] is None  # type: ignore[index]
    assert PASSPHRASE not in json.dumps(entries)

    assert [e["object"] for e in trail(cli, repo, "--action", "backup")] == [first["snapshot_id"],
                                                                             second["snapshot_id"]]
    assert [e["action"] for e in trail(cli, repo, "--database", "restored")] == ["restore", "restore"]
    assert [e["action"] for e in trail(cli, repo, "--action", "restore", "--actor", getpass.getuser())] == [
        "restore", "restore"]
    assert len(trail(cli, repo, "--since", "1h")) == 7
    assert trail(cli, repo, "--since", "2999-01-01") == []
    assert trail(cli, repo, "--actor", "nobody-of-that-name") == []

    table = cli("audit", "--repo", str(repo), "--action", "restore")
    assert table.returncode == 0 and "failed" in table.stdout and str(first["snapshot"]) in table.stdout
    bad_since = cli("audit", "--repo", str(repo), "--since", "yesterday")
    assert bad_since.returncode == 2 and "--since 'yesterday'" in one_error_line(bad_since)
    bad_action = cli("audit", "--repo", str(repo), "--action", "delete")
    assert bad_action.returncode == 2 and "unknown action 'delete'" in one_error_line(bad_action)

    # The catalog is an index: lost, it comes back from the repository's records.
    (isolated_home / "catalog.db").unlink()
    rebuilt = cli("catalog", "rebuild", "--repo", str(repo), "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["audit_records"] == 7
    events = Catalog().audit_events()
    assert [e.id for e in events] == [e["id"] for e in trail(cli, repo)]
    assert [e.action for e in Catalog().audit_events(action="restore", database="restored")] == ["restore"] * 2
