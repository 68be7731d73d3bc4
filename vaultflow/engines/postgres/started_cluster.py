"""Starting a restored data directory on a port and waiting for its recovery (`pitr restore --start`,
PITR drills): the server binaries of the base backup's major version, a port nobody listens on, `pg_ctl`
run as the data directory's owner, and what recovery reached (timeline, switch point, last transaction).

The server is started with the settings `write_recovery_settings` appended to postgresql.auto.conf
(port, listen address, socket directory), so a later `pg_ctl -D DIR start` by hand starts the same way.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import psycopg

from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.errors import InputError, ToolFailed, VaultflowError

START_LOG = "vaultflow-start.log"  # pg_ctl's -l file, inside the data directory
_KEPT_ENVIRONMENT = {"PATH", "LANG", "TZ"}


class RecoveryFailed(VaultflowError):
    """The started server stopped, or did not reach its target in time (exit 1)."""


@dataclass(frozen=True)
class ServerBinaries:
    """pg_ctl and postgres of one installation, and their version."""

    bin_dir: Path
    version: str
    major: int

    @property
    def pg_ctl(self) -> str:
        return str(self.bin_dir / "pg_ctl")


def major_of(version: str) -> int:
    """15 of "15.20"; 9 of "9.6.3" (the two-part majors before 10 are not told apart)."""
    match = re.match(r"\d+", version.strip())
    if not match:
        raise InputError(f"PostgreSQL version {version!r} has no major number", "check the base backup's manifest")
    return int(match.group(0))


def server_binaries(backup_version: str, bin_dir: Path | None = None) -> ServerBinaries:
    """The server binaries that can start a base backup of PostgreSQL `backup_version`: those in
    `bin_dir`, else /usr/lib/postgresql/<major>/bin, else pg_ctl's directory on PATH. Refuses, in one
    line, binaries of another major version (a data directory starts only with its own major)."""
    want = major_of(backup_version)
    on_path = shutil.which("pg_ctl")
    candidates = [bin_dir] if bin_dir else [Path(f"/usr/lib/postgresql/{want}/bin"),
                                            *([Path(os.path.realpath(on_path)).parent] if on_path else [])]
    found: list[ServerBinaries] = []
    for cand in candidates:
        postgres = cand / "postgres"
        if not (os.access(cand / "pg_ctl", os.X_OK) and os.access(postgres, os.X_OK)):
            continue
        out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, timeout=30, check=False)
        match = re.search(r"\d+(?:\.\d+)*", out.stdout)
        if out.returncode == 0 and match:
            found.append(ServerBinaries(cand, match.group(0), major_of(match.group(0))))
    for binaries in found:
        if binaries.major == want:
            return binaries
    if found:
        other = found[0]
        raise InputError(f"the base backup is PostgreSQL {backup_version}, but the server in {other.bin_dir} is "
                         f"PostgreSQL {other.version}; a data directory starts only with its own major version",
                         f"install postgresql-{want} or pass --bin-dir with a PostgreSQL {want} bin directory")
    where = str(bin_dir) if bin_dir else f"/usr/lib/postgresql/{want}/bin or on PATH"
    raise InputError(f"no PostgreSQL server (pg_ctl and postgres) found in {where}",
                     f"install postgresql-{want} or pass --bin-dir")


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Refuse (one line) a port outside 1..65535 or one something listens on."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port {port} is not a TCP port", "give a port from 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As PostgreSQL binds: connections of an earlier server in TIME_WAIT do not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise InputError(f"port {port} on {host} is in use", "choose a free port; nothing was laid out") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel has free now (a PITR drill's scratch server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def owner_of(pgdata: Path) -> str:
    """The OS user the server runs as: the owner of PG_VERSION (the tar's postgres)."""
    uid = (pgdata / "PG_VERSION").stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass(frozen=True)
class RecoveryOutcome:
    """Where recovery stopped. `promoted`: the server left recovery on timeline `timeline`, which
    branched at `switch_lsn` for `reason` (its history file's line, e.g. 'at restore point "x"');
    otherwise it is paused at the target, `switch_lsn` being the last replayed LSN."""

    promoted: bool
    timeline: int
    switch_lsn: str
    reason: str
    last_transaction: datetime | None

    def describe(self) -> str:
        at = (f", last transaction {self.last_transaction.isoformat(sep=' ', timespec='seconds')}"
              if self.last_transaction else "")
        if self.promoted:
            return f"promoted on timeline {self.timeline}, branched at {self.switch_lsn} ({self.reason}){at}"
        return f"paused at {self.switch_lsn} on timeline {self.timeline} ({self.reason}){at}"


class StartedCluster:
    """A restored data directory's server: `start`, `wait_for_target`, `stop` (idempotent)."""

    def __init__(self, pgdata: Path, port: int, binaries: ServerBinaries, *,
                 login: PostgresConnection | None = None) -> None:
        """`login`: the user (and password) to connect as; the host and port are 127.0.0.1:`port`."""
        self.pgdata, self.port, self.binaries = pgdata, port, binaries
        self.log = pgdata / START_LOG
        self.started = False
        base = login or PostgresConnection()
        self.engine = PostgresEngine(replace(base, host="127.0.0.1", port=port, database="postgres",
                                             maintenance_database="postgres", sslmode=None, connect_timeout=5))

    def _pg_ctl(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [self.binaries.pg_ctl, "-D", str(self.pgdata), *args]
        if os.geteuid() == 0:
            owner = owner_of(self.pgdata)
            if owner == "root":
                raise InputError(f"{self.pgdata} belongs to root, and PostgreSQL does not run as root",
                                 "restore as the server's OS user, or chown the directory to it")
            argv = ["runuser", "-u", owner, "--", *argv]
        # The server and its restore_command get a clean environment: never this process's passphrase or
        # repository variables (the restore_command line carries what vaultflow-wal needs).
        env = {k: v for k, v in os.environ.items() if k in _KEPT_ENVIRONMENT or k.startswith("LC_")}
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30, check=False,
                                  cwd=self.pgdata, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolFailed(f"pg_ctl for {self.pgdata} could not run: {exc}", "check the installation") from None

    def start(self, timeout: float = 300.0) -> None:
        """pg_ctl start -w; RecoveryFailed with the server log's problem line when it does not come up."""
        if self.log.exists():
            self.log.unlink()
        self.started = True
        out = self._pg_ctl("-l", str(self.log), "-w", "-t", str(int(timeout)), "start", timeout=timeout)
        if out.returncode != 0:
            raise RecoveryFailed(f"PostgreSQL in {self.pgdata} did not start: {self.problem() or out.stderr.strip()}",
                                 f"read {self.log}")

    def running(self) -> bool:
        return self._pg_ctl("status", timeout=30).returncode == 0

    def stop(self) -> None:
        """Stop the server if it runs (fast, then immediate)."""
        if not self.started or not (self.pgdata / "postmaster.pid").exists():
            return
        if self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop", timeout=60).returncode != 0:
            self._pg_ctl("-m", "immediate", "-w", "-t", "60", "stop", timeout=60)

    def problem(self) -> str | None:
        """The last FATAL or PANIC line of the server log, without its prefix."""
        if not self.log.exists():
            return None
        lines = [line for line in self.log.read_text(errors="replace").splitlines()
                 if "FATAL:" in line or "PANIC:" in line]
        return re.sub(r"^.*?(FATAL|PANIC):\s+", "", lines[-1]) if lines else None

    def wait_for_target(self, want: Literal["promoted", "paused"], timeout: float = 3600.0) -> RecoveryOutcome:
        """Poll until the server promoted (pg_is_in_recovery() false) or paused at the target; RecoveryFailed
        naming the server's problem when it stopped (e.g. the target lies beyond the WAL it could fetch)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.engine._connect() as c:
                    outcome = self._state(c, want)
                if outcome is not None:
                    return outcome
            except (VaultflowError, psycopg.Error) as exc:
                if isinstance(exc, RecoveryFailed):
                    raise
                if not self.running():
                    raise RecoveryFailed(f"PostgreSQL in {self.pgdata} stopped during recovery: "
                                         f"{self.problem() or 'see the server log'}", f"read {self.log}") from None
            if time.monotonic() > deadline:
                raise RecoveryFailed(f"PostgreSQL in {self.pgdata} did not reach its recovery target within "
                                     f"{timeout:.0f} s", f"read {self.log}")
            time.sleep(0.3)

    def _state(self, c: psycopg.Connection[Any], want: str) -> RecoveryOutcome | None:
        row = c.execute("SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp()").fetchone()
        assert row is not None
        in_recovery, last = bool(row[0]), row[1]
        if want == "promoted" and not in_recovery:
            found = c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
            assert found is not None
            timeline = int(str(found[0])[:8], 16)
            switch, reason = self._history_line(timeline)
            return RecoveryOutcome(True, timeline, switch, reason, last)
        if want == "paused" and in_recovery:
            paused = c.execute("SELECT pg_get_wal_replay_pause_state(), pg_last_wal_replay_lsn(), "
                               "(SELECT timeline_id FROM pg_control_checkpoint())").fetchone()
            assert paused is not None
            if paused[0] == "paused":
                return RecoveryOutcome(False, int(paused[2]), str(paused[1]), "recovery target reached", last)
        if want == "paused" and not in_recovery:
            raise RecoveryFailed(f"PostgreSQL in {self.pgdata} left recovery instead of pausing at the target",
                                 "check recovery_target_action in postgresql.auto.conf")
        return None

    def _history_line(self, timeline: int) -> tuple[str, str]:
        """The switch point and reason of the timeline's history file (its last line)."""
        path = self.pgdata / "pg_wal" / f"{timeline:08X}.history"
        try:
            lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "-", "no history file"
        parts = lines[-1].split("\t") if lines else []
        return (parts[1], parts[2].strip()) if len(parts) >= 3 else ("-", lines[-1] if lines else "empty history")


def start_restored(pgdata: Path, port: int, binaries: ServerBinaries, *, login: PostgresConnection | None = None,
                   timeout: float = 3600.0) -> RecoveryOutcome:
    """`pitr restore --start`: start the laid-out `pgdata` (recovery_target_action promote) and wait until
    it promoted. On failure the server is stopped and the directory stays, with its log, for inspection."""
    cluster = StartedCluster(pgdata, port, binaries, login=login)
    try:
        cluster.start(min(timeout, 300.0))
        return cluster.wait_for_target("promoted", timeout)
    except BaseException:
        cluster.stop()
        raise
