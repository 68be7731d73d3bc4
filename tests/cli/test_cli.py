"""The `vaultflow` command as users run it: real processes, real databases, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT, pg_url
from vaultflow.sample_data import compare, create

Cli = Callable[..., subprocess.CompletedProcess[str]]


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {proc.stderr!r}"
    assert lines[0].startswith("error: ")
    assert PASSPHRASE not in proc.stderr + proc.stdout
    return lines[0]


def snapshots(cli: Cli, repo: Path, *extra: str) -> list[dict[str, object]]:
    proc = cli("snapshots", "--repo", str(repo), "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_init_backup_list_restore_export(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    src = create(tmp_path / "src.db", rows=4000)
    assert cli("init", "--repo", str(repo)).returncode == 0
    again = cli("init", "--repo", str(repo))
    assert again.returncode == 1 and "already exists" in one_error_line(again)

    done = cli("backup", f"sqlite:///{src}", "--repo", str(repo), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    (row,) = snapshots(cli, repo)
    assert row["id"] == result["snapshot_id"] and row["status"] == "Succeeded"
    assert {"engine", "database", "kind", "started", "duration_seconds", "logical_size",
            "stored_size"} <= row.keys()
    table = cli("snapshots", "--repo", str(repo))
    assert str(result["snapshot"]) in table.stdout and "Succeeded" in table.stdout

    shown = cli("show", str(result["snapshot"]), "--repo", str(repo), "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["id"] == result["snapshot_id"] and info["engine"] == "sqlite" and info["kind"] == "full"
    assert {t["table"] for t in info["tables"]} >= {"main.customers", "main.orders"}
    assert all(t["rows"] for t in info["tables"])
    text = cli("show", str(result["snapshot"]), "--repo", str(repo))
    assert text.returncode == 0 and str(result["snapshot_id"]) in text.stdout and "orders" in text.stdout

    restored = tmp_path / "restored.db"
    assert cli("restore", str(result["snapshot"]), f"sqlite:///{restored}", "--repo", str(repo)).returncode == 0
    assert compare(src, restored) == []

    not_empty = cli("restore", str(result["snapshot"]), f"sqlite:///{restored}", "--repo", str(repo))
    assert not_empty.returncode == 2 and "--replace" in one_error_line(not_empty)
    assert cli("restore", str(result["snapshot"]), f"sqlite:///{restored}", "--repo", str(repo),
               "--replace").returncode == 0

    exported = tmp_path / "exported.db"
    assert cli("export", str(result["snapshot"]), "--to", str(exported), "--repo", str(repo)).returncode == 0
    assert compare(src, exported) == []


def test_bad_inputs_exit_with_one_line(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    src = create(tmp_path / "src.db", rows=500)
    assert cli("init", "--repo", str(repo)).returncode == 0
    assert cli("backup", f"sqlite:///{src}", "--repo", str(repo)).returncode == 0
    assert cli("backup", f"sqlite:///{src}", "--repo", str(repo)).returncode == 0
    ids = [str(r["id"]) for r in snapshots(cli, repo)]

    missing = cli("restore", "0123abcd", "sqlite:///x.db", "--repo", str(repo))
    assert missing.returncode == 2 and "no snapshot '0123abcd'" in one_error_line(missing)

    common = os.path.commonprefix(ids)
    if len(common) >= 4:  # random ids rarely share 4 characters; test ambiguity only then
        amb = cli("export", common, "--to", str(tmp_path / "e"), "--repo", str(repo))
        assert amb.returncode == 2 and "ambiguous" in one_error_line(amb)

    wrong = cli("export", ids[0][:8], "--to", str(tmp_path / "e"), "--repo", str(repo),
                env={"VAULTFLOW_PASSPHRASE": "not it"})
    assert wrong.returncode == 2 and "wrong passphrase" in one_error_line(wrong)

    nopass = cli("export", ids[0][:8], "--to", str(tmp_path / "e"), "--repo", str(repo),
                 env={"VAULTFLOW_PASSPHRASE": ""})
    assert nopass.returncode == 2 and "VAULTFLOW_PASSPHRASE" in one_error_line(nopass)

    uninit = cli("backup", f"sqlite:///{src}", "--repo", str(tmp_path / "nothing-here"))
    assert uninit.returncode == 2 and "vaultflow init" in one_error_line(uninit)

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    unwritable = cli("init", "--repo", str(blocker / "repo"))
    assert unwritable.returncode == 1 and "not writable" in one_error_line(unwritable)

    no_db = cli("backup", f"sqlite:///{tmp_path / 'absent.db'}", "--repo", str(repo))
    assert no_db.returncode == 2 and "does not exist" in one_error_line(no_db)

    bad_url = cli("backup", "postgresql://u:hunter2@127.0.0.1/db", "--repo", str(repo))
    assert bad_url.returncode == 2 and "hunter2" not in bad_url.stderr
    one_error_line(bad_url)

    bad_kind = cli("backup", f"sqlite:///{src}", "--repo", str(repo), "--kind", "weekly")
    assert bad_kind.returncode == 2
    assert [r["status"] for r in snapshots(cli, repo)].count("Succeeded") == 2


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB filesystem, so the disk really fills up."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the disk-full test: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_backup(cli: Cli, tmp_path: Path, tiny_tmpfs: Path) -> None:
    import sqlite3
    from contextlib import closing

    src = tmp_path / "random.db"
    with closing(sqlite3.connect(src)) as con:  # incompressible: 8 MiB of random blobs
        con.execute("CREATE TABLE blobs (b BLOB)")
        con.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(64 * 1024),) for _ in range(128)])
        con.commit()
    repo = tiny_tmpfs / "repo"
    assert cli("init", "--repo", str(repo)).returncode == 0
    full = cli("backup", f"sqlite:///{src}", "--repo", str(repo))
    assert full.returncode == 1 and "no space left" in one_error_line(full)
    assert not list((repo / "snapshots").glob("*")) if (repo / "snapshots").exists() else True
    (row,) = snapshots(cli, repo)
    assert row["status"] == "Failed" and "no space left" in str(row["error"])


def test_kill_9_mid_backup_leaves_no_snapshot(cli: Cli, prefect_api: str, tmp_path: Path,
                                              pg_database: Callable[..., str]) -> None:
    import psycopg

    db = pg_database()
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=db, autocommit=True) as c:
        c.execute("CREATE TABLE big (id int PRIMARY KEY, t text)")
        c.execute("INSERT INTO big SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 6) "
                  "FROM generate_series(1, 1500000) g")
    repo = tmp_path / "repo"
    assert cli("init", "--repo", str(repo)).returncode == 0
    env = dict(os.environ, PREFECT_API_URL=prefect_api)
    proc = subprocess.Popen([sys.executable, "-m", "vaultflow.cli.main", "backup", pg_url(db),
                             "--repo", str(repo)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    chunks = repo / "chains"
    while time.monotonic() < deadline:
        if chunks.exists() and sum(1 for _ in chunks.rglob("*")) > 8:
            break
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.05)
    else:
        pytest.fail("the backup stored no chunks within 120 s")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    assert not (repo / "snapshots").exists() or not any((repo / "snapshots").iterdir())
    rows = snapshots(cli, repo)
    assert [r["status"] for r in rows] == ["Failed"]
    assert "interrupted" in str(rows[0]["error"])

    again = cli("backup", pg_url(db), "--repo", str(repo), "--json", "--no-table-checksums")
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in snapshots(cli, repo)] == ["Failed", "Succeeded"]


def test_error_lines_keep_square_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    """Install hints such as vaultflow[sqlserver] are text, not rich markup."""
    from vaultflow.cli.output import error, stderr

    error("pyodbc is missing: pip install 'vaultflow[sqlserver]' [bold]")
    stderr.print("warning: table [public].[t]", highlight=False)
    err = capsys.readouterr().err
    assert "vaultflow[sqlserver]' [bold]" in err and "[public].[t]" in err
