"""Backup and restore round trips, run against every engine."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import PASSPHRASE
from tests.engines.cases import EngineCase
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import export_snapshot, restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.storage import LocalStore


def open_repo(path: Path) -> Repository:
    return Repository.open(LocalStore(path), PASSPHRASE)


def test_round_trip_equals_source(case: EngineCase, repo_path: Path, tmp_path: Path) -> None:
    source = case.create_source(tmp_path)
    repo = open_repo(repo_path)
    sid = new_object_id()
    manifest = backup_database(case.engine(source), repo, snapshot_id=sid)
    source_stats = case.engine(source).table_stats()
    assert manifest.tables == source_stats
    assert all(t.checksum for t in manifest.tables)
    assert {t.name for t in manifest.tables} >= {"customers", "orders"}

    target = case.new_target(tmp_path)
    restore_snapshot(open_repo(repo_path), sid, case.engine(target))
    assert case.engine(target).table_stats() == source_stats
    assert case.schema(target) == case.schema(source)
    assert case.extra_state(target) == case.extra_state(source)


def test_export_is_a_native_dump(case: EngineCase, repo_path: Path, tmp_path: Path) -> None:
    import subprocess

    source = case.create_source(tmp_path)
    repo = open_repo(repo_path)
    sid = new_object_id()
    backup_database(case.engine(source), repo, snapshot_id=sid)
    out = tmp_path / "export.bin"
    export_snapshot(repo, sid, out)
    assert out.stat().st_mode & 0o777 == 0o600
    if case.name == "postgresql":
        script = out.read_text(encoding="utf-8", errors="replace")
        assert "CREATE TABLE public.customers" in script and 'COPY "public"."customers"' in script
        target = case.new_target(tmp_path)
        dbname = target.rsplit("/", 1)[1]
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", dbname], check=True)
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres",
                        "-d", dbname, "-f", str(out)], check=True, capture_output=True)
        assert case.schema(target) == case.schema(source)
        assert case.extra_state(target) == case.extra_state(source)
    elif case.name == "mariadb":
        script = out.read_text(encoding="utf-8", errors="replace")
        assert "CREATE TABLE `customers`" in script and "INSERT INTO `customers`" in script
        target = case.new_target(tmp_path)
        dbname = target.rsplit("/", 1)[1]
        subprocess.run(["mariadb", "-h", "127.0.0.1", "-u", "root", "-e", f"CREATE DATABASE `{dbname}`"], check=True)
        with open(out, "rb") as script_file:
            subprocess.run(["mariadb", "-h", "127.0.0.1", "-u", "root", "--binary-mode", dbname], stdin=script_file,
                           check=True, capture_output=True)
        assert case.schema(target) == case.schema(source)
        assert case.extra_state(target) == case.extra_state(source)
    else:
        target = f"sqlite:///{out}"
        assert subprocess.run(["sqlite3", str(out), "PRAGMA integrity_check"], capture_output=True,
                              text=True, check=True).stdout.strip() == "ok"
    assert case.engine(target).table_stats() == case.engine(source).table_stats()


def test_backup_during_concurrent_writes_is_consistent(case: EngineCase, repo_path: Path, tmp_path: Path) -> None:
    source = case.create_source(tmp_path)
    case.bulk(source, mib=40)
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        writes = pool.submit(case.paired_writer(source, stop))
        time.sleep(0.3)
        sid = new_object_id()
        try:
            manifest = backup_database(case.engine(source), open_repo(repo_path), snapshot_id=sid)
            time.sleep(0.3)
        finally:
            stop.set()
        written = writes.result()
    assert written > 0
    target = case.new_target(tmp_path)
    restore_snapshot(open_repo(repo_path), sid, case.engine(target))
    a, b = case.ledger_counts(target)
    assert a == b, "a transaction was split by the backup"
    assert case.engine(target).table_stats() == manifest.tables
    assert case.ledger_counts(source)[0] > a, "the writer kept writing after the snapshot point"
