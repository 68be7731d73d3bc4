"""A backup set: one `vaultflow backup DB --files file:///dir` run backs up a database and
its file trees, each its own snapshot, tied together; `restore ID TARGET --files-to DIR`
restores them together, refusing bad targets before anything is touched."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.cli.test_cli import one_error_line
from tests.engines.files.test_files_engine import describe_tree
from tests.engines.files.test_unreadable import run_without_read_override, tree_with_unreadable_entries
from vaultflow.engines.sqlite.engine import SqliteEngine
from vaultflow.sample_data import create

Cli = Callable[..., subprocess.CompletedProcess[str]]


def uploads(root: Path) -> Path:
    (root / "2025" / "07").mkdir(parents=True)
    (root / "2025" / "07" / "invoice.pdf").write_bytes(b"%PDF" + bytes(range(256)) * 40)
    (root / "logo.png").write_bytes(b"\x89PNG" * 100)
    return root


def test_a_database_and_its_files_back_up_in_one_run_and_restore_together(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    db = create(tmp_path / "shop.db", rows=300)
    files, config = uploads(tmp_path / "uploads"), tmp_path / "config"
    config.mkdir()
    (config / "app.ini").write_text("[app]\nmode = prod\n")
    assert cli("init", "--repo", str(repo)).returncode == 0

    done = cli("backup", f"sqlite:///{db}", "--files", f"file://{files}", "--files", f"file://{config}",
               "--repo", str(repo), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    database_id, trees = str(result["snapshot_id"]), result["files"]
    assert [t["database"] for t in trees] == ["uploads", "config"]

    shown = json.loads(cli("show", database_id[:8], "--repo", str(repo), "--json").stdout)["backup_set"]
    assert shown["complete"] and shown["id"] == database_id
    assert [m["id"] for m in shown["members"]] == [database_id, *(t["snapshot_id"] for t in trees)]
    tree_view = json.loads(cli("show", trees[0]["snapshot"], "--repo", str(repo), "--json").stdout)
    assert tree_view["backup_set"]["id"] == database_id  # each member names the whole set
    text = cli("show", database_id[:8], "--repo", str(repo)).stdout
    assert "backup set" in text and "complete" in text and f"file tree 2 {trees[1]['snapshot']}" in text

    target_db, target_files, target_config = tmp_path / "new" / "shop.db", tmp_path / "new" / "up", tmp_path / "cf"
    restored = cli("restore", database_id[:8], f"sqlite:///{target_db}", "--files-to", f"file://{target_files}",
                   "--files-to", f"file://{target_config}", "--repo", str(repo))
    assert restored.returncode == 0, restored.stderr
    assert SqliteEngine(target_db).table_stats() == SqliteEngine(db).table_stats()
    assert describe_tree(target_files) == describe_tree(files)
    assert describe_tree(target_config) == describe_tree(config)

    # Bad inputs: one line, exit 2, and nothing restored.
    fresh_db, fresh_dir = tmp_path / "fresh.db", tmp_path / "fresh"
    for args, words in [
        (["--files-to", f"file://{target_files}", "--files-to", f"file://{fresh_dir}"], "is not empty"),
        (["--files-to", f"file://{fresh_dir}"], "holds 2 file tree(s) but 1 --files-to"),
        (["--files-to", f"file://{fresh_dir}", "--files-to", f"file://{fresh_dir}"], "the same directory"),
        (["--files-to", "sqlite:///elsewhere.db", "--files-to", f"file://{fresh_dir}"], "is not a file tree"),
    ]:
        refused = cli("restore", database_id[:8], f"sqlite:///{fresh_db}", *args, "--repo", str(repo))
        assert refused.returncode == 2 and words in one_error_line(refused), (args, refused.stderr)
        assert not fresh_db.exists() and not fresh_dir.exists(), args
    as_member = cli("restore", trees[0]["snapshot"], f"sqlite:///{fresh_db}", "--files-to", f"file://{fresh_dir}",
                    "--repo", str(repo))
    assert as_member.returncode == 2 and f"restore {database_id[:8]}" in one_error_line(as_member)

    missing = cli("backup", f"sqlite:///{db}", "--files", f"file://{tmp_path / 'absent'}", "--repo", str(repo))
    assert missing.returncode == 2 and "does not exist" in one_error_line(missing)
    assert len(list((repo / "snapshots").iterdir())) == 3, "a refused set wrote a snapshot"


def test_a_failed_file_tree_leaves_the_set_incomplete_and_says_what_was_written(prefect_api: str, tmp_path: Path
                                                                                ) -> None:
    repo = tmp_path / "repo"
    db = create(tmp_path / "shop.db", rows=50)
    tree = tree_with_unreadable_entries(tmp_path / "site")
    assert run_without_read_override(prefect_api, "init", "--repo", str(repo)).returncode == 0

    failed = run_without_read_override(prefect_api, "backup", f"sqlite:///{db}", "--files", f"file://{tree}",
                                       "--repo", str(repo))
    assert failed.returncode == 1
    line = one_error_line(failed)
    assert "is incomplete: the backup of file tree" in line and "2 entries" in line, line
    written = [p.name for p in (repo / "snapshots").iterdir()]
    assert len(written) == 1 and f"written: {written[0][:8]}" in line, line

    shown = run_without_read_override(prefect_api, "show", written[0][:8], "--repo", str(repo), "--json")
    backup_set = json.loads(shown.stdout)["backup_set"]
    assert not backup_set["complete"] and [m["present"] for m in backup_set["members"]] == [True, False]
    refused = run_without_read_override(prefect_api, "restore", written[0][:8], f"sqlite:///{tmp_path / 'x.db'}",
                                        "--files-to", f"file://{tmp_path / 'x'}", "--repo", str(repo))
    assert refused.returncode == 2 and "is incomplete" in one_error_line(refused)
    assert not (tmp_path / "x.db").exists()
