"""What a person at a terminal sees: the passphrase prompt and the live progress bar."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import PASSPHRASE, ROOT
from vaultflow.repository import Repository
from vaultflow.sample_data import create
from vaultflow.storage import LocalStore


def run_on_terminal(args: list[str], env: dict[str, str], answers: dict[bytes, bytes],
                    timeout: float = 180) -> tuple[int, bytes]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "vaultflow.cli.main", *args], cwd=ROOT, env=env,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            seen += data
            for prompt, answer in list(answers.items()):
                if prompt in seen:
                    os.write(master, answer)
                    del answers[prompt]
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), seen


def test_prompted_passphrase_and_progress_bar(prefect_api: str, tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    src = create(tmp_path / "s.db", rows=2000)
    with closing(sqlite3.connect(src)) as con:  # ~120 MB, so the bar has time to draw
        con.execute("CREATE TABLE filler (b BLOB)")
        con.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(1 << 20),) for _ in range(120)])
        con.commit()
    repo = tmp_path / "repo"
    Repository.init(LocalStore(repo), PASSPHRASE)
    env = {k: v for k, v in os.environ.items() if k != "VAULTFLOW_PASSPHRASE"}
    env.update(PREFECT_API_URL=prefect_api, COLUMNS="160")
    code, screen = run_on_terminal(["backup", f"sqlite:///{src}", "--repo", str(repo)], env,
                                   {b"passphrase: ": PASSPHRASE.encode() + b"\n"})
    text = screen.decode("utf-8", "replace")
    assert code == 0, text
    assert "repository passphrase:" in text
    assert "backup SQLite database" in text and "stored" in text and "/s" in text, text
    assert "snapshot " in text and " saved" in text
    assert PASSPHRASE not in text
