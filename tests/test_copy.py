"""Copying snapshots to a second repository: only what is missing, restorable there, clean on failure."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.conftest import PASSPHRASE
from tests.object_servers import S3Server
from vaultflow.engines import engine_from_url
from vaultflow.errors import StorageUnwritable
from vaultflow.operations.backup import backup_database, plan_backup
from vaultflow.operations.copy import copy_snapshots
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.sample_data import compare, create
from vaultflow.storage import LocalStore, RetryingStore, RetryPolicy
from vaultflow.storage.faults import FaultInjectingStore
from vaultflow.storage.s3 import S3Settings

Cli = Callable[..., subprocess.CompletedProcess[str]]


def backup(repo: Repository, db: Path, kind: str = "full") -> str:
    sid = new_object_id()
    engine = engine_from_url(f"sqlite:///{db}")
    return backup_database(engine, repo, snapshot_id=sid, plan=plan_backup(repo, engine, kind, sid)).id  # type: ignore[arg-type]


def test_copy_to_s3_sends_only_what_is_missing(tmp_path: Path, s3_server: S3Server) -> None:
    source = Repository.init(LocalStore(tmp_path / "src"), PASSPHRASE)
    dest_store = S3Settings(s3_server.new_bucket(), "copy", endpoint_url=s3_server.endpoint, region="us-east-1",
                            access_key_id="testing", secret_access_key=SecretStr("testing")).open()
    dest = Repository.init(dest_store, "another passphrase")
    db = create(tmp_path / "src.db", rows=20_000)
    first = backup(source, db)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE customers SET name = name || 'x' WHERE id < 50")
    second = backup(source, db, "incremental")

    done = copy_snapshots(source, dest)
    assert sorted(done.copied) == sorted([first, second]) and done.chunks_written > 0
    assert dest.snapshot_ids() == sorted([first, second])
    assert dest.load_manifest(second).parent == first

    again = copy_snapshots(source, dest)
    assert again.copied == [] and sorted(again.already_there) == sorted([first, second])
    assert again.chunks_written == 0

    with sqlite3.connect(db) as c:
        c.execute("UPDATE customers SET name = name || 'y' WHERE id < 50")
    third = backup(source, db, "incremental")
    more = copy_snapshots(source, dest)
    assert more.copied == [third] and more.chunks_written < done.chunks_written

    restored = tmp_path / "restored.db"
    restore_snapshot(dest, third, engine_from_url(f"sqlite:///{restored}"))
    assert compare(db, restored) == []


def test_interrupted_copy_leaves_no_snapshot_and_resumes(tmp_path: Path) -> None:
    source = Repository.init(LocalStore(tmp_path / "src"), PASSPHRASE)
    sid = backup(source, create(tmp_path / "src.db", rows=20_000))
    clean = LocalStore(tmp_path / "dest")
    Repository.init(clean, PASSPHRASE)
    faulty = FaultInjectingStore(clean, permanent_rate=0.2, operations={"put"}, seed=3)
    broken = Repository.open(RetryingStore(faulty, RetryPolicy(attempts=2, base_delay=0.001)), PASSPHRASE)
    with pytest.raises(StorageUnwritable):
        copy_snapshots(source, broken)
    assert faulty.counts.permanent == 1
    assert Repository.open(clean, PASSPHRASE).snapshot_ids() == []
    dest = Repository.open(clean, PASSPHRASE)
    assert copy_snapshots(source, dest).copied == [sid]
    restored = tmp_path / "restored.db"
    restore_snapshot(dest, sid, engine_from_url(f"sqlite:///{restored}"))
    assert compare(tmp_path / "src.db", restored) == []


def test_copy_cli(cli: Cli, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    db = create(tmp_path / "src.db", rows=5000)
    assert cli("init", "--repo", str(src)).returncode == 0
    assert cli("backup", f"sqlite:///{db}", "--repo", str(src)).returncode == 0
    no_dest = cli("copy", "--repo", str(src), "--to", str(tmp_path / "nothing"))
    assert no_dest.returncode == 2 and "vaultflow init --repo" in no_dest.stderr
    assert cli("init", "--repo", str(dest)).returncode == 0
    done = cli("copy", "--repo", str(src), "--to", str(dest))
    assert done.returncode == 0, done.stderr
    assert "copied 1 snapshot(s)" in done.stdout
    again = cli("copy", "--repo", str(src), "--to", str(dest))
    assert again.returncode == 0 and "copied 0 snapshot(s)" in again.stdout and "1 already there" in again.stdout
