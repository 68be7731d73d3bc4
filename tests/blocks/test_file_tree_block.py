"""The FileTree block: saved through the real Prefect API, picked as a backup set's file tree
or as a source by name, and refused where a file tree is needed but another block is given."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from blocks import FileTree, SqliteDatabase
from blocks.resolve import resolve_engine, resolve_file_tree
from flows.backup import backup
from flows.restore import restore
from tests.conftest import ROOT
from tests.engines.files.test_files_engine import describe_tree
from vaultflow.engines.files.engine import FileTreeEngine
from vaultflow.errors import InputError
from vaultflow.sample_data import create


def test_a_saved_file_tree_block_is_backed_up_with_its_database_and_restored(prefect_api: str, tmp_path: Path,
                                                                             repo_path: Path) -> None:
    name = f"uploads-{uuid.uuid4().hex[:8]}"
    src = tmp_path / "uploads"
    (src / "a").mkdir(parents=True)
    (src / "a" / "photo.jpg").write_bytes(os.urandom(4096))
    FileTree(path=str(src)).save(name)
    db = create(tmp_path / "shop.db", rows=50)

    assert isinstance(resolve_engine(name), FileTreeEngine)  # a source by name, too
    result = backup(source=f"sqlite:///{db}", repository=str(repo_path), files=[name])
    [tree] = result["files"]  # type: ignore[misc]
    assert tree["database"] == "uploads" and tree["server"] == str(tmp_path)

    dest = tmp_path / "restored"
    FileTree(path=str(dest)).save(f"{name}-dest")
    done = restore(snapshot=str(result["snapshot_id"]), target=f"sqlite:///{tmp_path / 'copy.db'}",
                   repository=str(repo_path), files_to=[f"{name}-dest"])
    assert done["files"][0]["restored_into"] == f"{name}-dest"  # type: ignore[index]
    assert describe_tree(dest) == describe_tree(src)

    SqliteDatabase(path=str(db)).save(f"{name}-db")
    with pytest.raises(InputError, match="not a file tree"):
        resolve_file_tree(SqliteDatabase.load(f"{name}-db"))
    with pytest.raises(InputError, match="no file:// URL and no saved FileTree block"):
        resolve_file_tree(f"{name}-db")
    with pytest.raises(InputError, match="relative path"):
        FileTree(path="relative/dir").engine()


def test_the_block_type_registers(prefect_api: str) -> None:
    env = dict(os.environ, PREFECT_API_URL=prefect_api, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert client.read_block_type_by_slug("vaultflow-file-tree").name == "vaultflow File Tree"
