"""A private MariaDB server for tests that need their own settings (log-bin, server-id, ROW
binlogs): `mariadb-install-db` into a temporary directory, `mariadbd` as the mysql OS user on a
free port, root without a password from 127.0.0.1, stopped and removed afterwards."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.engines.postgres.test_errors import free_port


@dataclass(frozen=True)
class PrivateMariaDB:
    port: int
    base: Path
    data: Path

    def connect(self, database: str | None = None) -> Any:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", database=database,
                               autocommit=True, charset="utf8mb4")

    def url(self, database: str, user: str = "root") -> str:
        return f"mysql://{user}@127.0.0.1:{self.port}/{database}"

    def execute(self, *statements: str, database: str | None = None) -> None:
        with self.connect(database) as c, c.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def master_status(self) -> tuple[str, int]:
        with self.connect() as c, c.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
        return str(row[0]), int(row[1])


def _mysql_owns(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("mysql")
        os.chown(path, user.pw_uid, user.pw_gid)


@contextmanager
def private_mariadb(*settings: str) -> Iterator[PrivateMariaDB]:
    """A running server with `settings` (mariadbd command-line options) added."""
    for tool in ("mariadb-install-db", "mariadbd"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            pytest.fail(f"{tool} is missing: install mariadb-server (the private-server tests need it)")
    base = Path(tempfile.mkdtemp(prefix="vfmy-", dir="/tmp"))
    data = base / "data"
    # Its own tmpdir: at start-up mariadbd deletes every `#sql*` file in its tmpdir, which in /tmp
    # are the temporary tables of the machine's main server (a test there then fails with
    # "Error on delete of '/tmp/#sql-temptable-...' (Errcode 2)").
    (base / "tmp").mkdir()
    _mysql_owns(base)
    _mysql_owns(base / "tmp")
    user = ["--user=mysql"] if os.geteuid() == 0 else []
    install = subprocess.run(["mariadb-install-db", "--no-defaults", *user, f"--datadir={data}",
                              "--auth-root-authentication-method=normal", "--skip-test-db"],
                             capture_output=True, text=True, timeout=120, check=False)
    if install.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"mariadb-install-db failed: {install.stderr[-2000:]}")
    port = free_port()
    log = open(base / "server.log", "wb")  # noqa: SIM115 - closed below
    server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    proc = subprocess.Popen([server, "--no-defaults", *user, f"--datadir={data}", f"--port={port}",
                             "--bind-address=127.0.0.1", f"--socket={base}/mysqld.sock", f"--pid-file={base}/pid",
                             f"--tmpdir={base}/tmp",
                             "--innodb-buffer-pool-size=32M", "--skip-log-error", *settings],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server_db = PrivateMariaDB(port, base, data)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server_db.connect().close()
                break
            except pymysql.MySQLError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"private mariadbd did not start: {(base / 'server.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield server_db
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
        shutil.rmtree(base, ignore_errors=True)
