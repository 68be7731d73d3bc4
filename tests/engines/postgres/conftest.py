"""Private PostgreSQL clusters that archive into a repository through `vaultflow-wal push %p` (run by
the server, as the postgres OS user, from `make wal-venv`); shared by test_wal.py and test_pitr.py.
The fixture is module-scoped, so each test module gets a cluster and a repository of its own."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PASSPHRASE, ROOT
from tests.engines.postgres.test_errors import _run, free_port, postgres_bin_dir
from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.repository import Repository
from vaultflow.storage import LocalStore

WAL_VENV = ROOT / ".wal-venv"
WAL_COMMAND = WAL_VENV / "bin" / "vaultflow-wal"


def wal_command() -> Path:
    """The all-users environment's entry point; missing fails the test (never a skip)."""
    if not os.access(WAL_COMMAND, os.X_OK):
        pytest.fail(f"{WAL_COMMAND} is missing: run `make wal-venv` (PostgreSQL's archive_command runs it "
                    "as the postgres OS user, who cannot run .venv's interpreter)")
    return WAL_COMMAND


def as_postgres(argv: list[str], env: dict[str, str]) -> list[str]:
    """Run as the postgres OS user when we are root (as the server does), with exactly `env`."""
    pairs = [f"{k}={v}" for k, v in env.items()]
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return [*prefix, "env", "-i", f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}", *pairs, *argv]


# -- a private cluster that archives into a repository ---------------------------------------


@dataclass(frozen=True)
class ArchivingCluster:
    port: int
    data: Path
    repo: Path
    passphrase_file: Path
    base: Path

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                               autocommit=True, connect_timeout=10)

    def engine(self) -> PostgresEngine:
        return PostgresEngine(PostgresConnection(host="127.0.0.1", port=self.port, user="postgres"))

    def env(self, **extra: str) -> dict[str, str]:
        return {"VAULTFLOW_REPO": str(self.repo), "VAULTFLOW_PASSPHRASE_FILE": str(self.passphrase_file), **extra}

    def wal(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(as_postgres([str(wal_command()), *args], self.env() if env is None else env),
                              cwd=self.data, capture_output=True, text=True, timeout=60, check=False)

    def sysid(self) -> int:
        with self.connect() as c:
            return int(c.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])  # type: ignore[index]

    def give_to_postgres(self, path: Path) -> None:
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(path, pg.pw_uid, pg.pw_gid)


@pytest.fixture(scope="module")
def archiving_cluster(pg_available: None) -> Iterator[ArchivingCluster]:
    """wal_level=replica, archive_mode=on, archive_command = the all-users vaultflow-wal push."""
    command = wal_command()
    bin_dir = postgres_bin_dir()
    base = Path(tempfile.mkdtemp(prefix="vfwal-", dir="/tmp"))
    data, repo, passphrase_file, log = base / "data", base / "repo", base / "passphrase", base / "server.log"
    pg_ctl = os.path.join(bin_dir, "pg_ctl")
    started = False
    try:
        Repository.init(LocalStore(repo), PASSPHRASE)
        passphrase_file.write_text(PASSPHRASE + "\n")
        passphrase_file.chmod(0o600)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            for path in [base, passphrase_file, *repo.rglob("*"), repo]:
                os.chown(path, pg.pw_uid, pg.pw_gid)
        _run(as_postgres([os.path.join(bin_dir, "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres",
                          "--encoding=UTF8", "--locale=C", "--no-sync"], {}), str(base), "initdb")
        port = free_port()
        archive_command = (f"VAULTFLOW_REPO={repo} VAULTFLOW_PASSPHRASE_FILE={passphrase_file} "
                           f"{command} push %p")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"wal_level = replica\narchive_mode = on\narchive_command = '{archive_command}'\n"
                       f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{base}'\n")
        started = True
        _run(as_postgres([pg_ctl, "-D", str(data), "-l", str(log), "-t", "60", "-w", "start"], {}),
             str(base), "pg_ctl start")
        yield ArchivingCluster(port, data, repo, passphrase_file, base)
    finally:
        if started:
            subprocess.run(as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], {}),
                           cwd=base, check=False, capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def switch_and_wait(cluster: ArchivingCluster, switches: int = 3) -> list[str]:
    """Write some rows, switch segments `switches` times, wait until the archiver has them all;
    the names of the switched segments."""
    names = []
    with cluster.connect() as c:
        c.execute("CREATE TABLE IF NOT EXISTS load (id bigserial PRIMARY KEY, payload text)")
        for _ in range(switches):
            c.execute("INSERT INTO load (payload) SELECT md5(g::text) FROM generate_series(1, 20000) g")
            names.append(str(c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]))  # type: ignore[index]
            c.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = c.execute("SELECT last_archived_wal, failed_count FROM pg_stat_archiver").fetchone()
            assert row is not None
            if row[0] is not None and str(row[0]) >= names[-1]:
                break
            time.sleep(0.2)
        else:
            log = (cluster.base / "server.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"the archiver did not reach {names[-1]} in 60 s: {row}\n{log}")
    return names


def open_repo(cluster: ArchivingCluster) -> Repository:
    return Repository.open(LocalStore(cluster.repo), PASSPHRASE)
