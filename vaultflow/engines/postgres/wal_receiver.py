"""`vaultflow wal-receive`: WAL streamed by a supervised `pg_receivewal` into a spool, each
finished segment then archived into the repository.

`pg_receivewal --slot S --synchronous --no-loop` writes the segment in progress as
`<name>.partial` in the spool, flushing it before it confirms each write position to the
server, so what the server may recycle is already on this host's disk (RPO: the last flush,
seconds). A finished segment (renamed from `.partial` by pg_receivewal) and every `.history`
file are pushed with `push_wal` (compressed, sealed, the store's synced put) and only then
removed from the spool. The slot keeps the server from recycling WAL the receiver has not
confirmed; a receiver that stays down makes the slot retain WAL, reported as
`slot-retaining` once it passes the set size (set `max_slot_wal_keep_size` on the server as
a hard stop).

The supervisor restarts pg_receivewal after any exit (server restart, network loss) with a
back-off from 1 s to 30 s; pg_receivewal resumes from the newest segment in the spool, else
from the slot. Health goes to the `report` callback (the CLI turns it into Prefect events and
log lines): started, restarted (with pg_receivewal's last error line), healthy (a heartbeat
with the counts), slot-retaining, stopped.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from vaultflow.engines.intake import HealthReport, IntakeEvent, IntakeHealth, RestartBackoff
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.wal import WalName, push_wal
from vaultflow.errors import InputError, VaultflowError
from vaultflow.repository.repository import Repository


@dataclass
class WalReceiver:
    """Supervise pg_receivewal for one server into `spool`, archiving finished files into `repo`."""

    engine: PostgresEngine
    repo: Repository
    spool: Path
    slot: str = "vaultflow"
    retained_warn_bytes: int = 1 << 30
    health_every: float = 60.0
    poll_every: float = 0.5
    report: HealthReport = field(default=lambda health: None)
    archived: int = 0
    restarts: int = 0

    def run(self, stop: threading.Event) -> None:
        """Receive until `stop` is set; raises only for errors no restart can mend (no
        replication permission, a spool that cannot be written), each in one line."""
        self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.access(self.spool, os.W_OK):
            raise InputError(f"the WAL spool {self.spool} is not writable", "give the receiver's user a directory")
        sysid = self._system_identifier()
        self._create_slot()
        backoff, last_health, last_slot_check = RestartBackoff(), time.monotonic(), 0.0
        event: IntakeEvent = "started"
        while not stop.is_set():
            proc, started = self._start(), time.monotonic()
            self.report(IntakeHealth(event, f"pg_receivewal streaming from {self.engine.server_label()} "
                                              f"through slot {self.slot}", self.archived, self.restarts))
            while proc.poll() is None and not stop.is_set():
                self._archive_finished(sysid)
                now = time.monotonic()
                if now - last_slot_check >= min(self.health_every, 10.0):
                    last_slot_check = now
                    self._check_slot()
                if now - last_health >= self.health_every:
                    last_health = now
                    self.report(IntakeHealth("healthy", "streaming", self.archived, self.restarts))
                stop.wait(self.poll_every)
            if stop.is_set():
                _terminate(proc)
                self._archive_finished(sysid)
                self.report(IntakeHealth("stopped", "stopped on request", self.archived, self.restarts))
                return
            error = _last_line(proc)
            self._archive_finished(sysid)
            self.restarts += 1
            delay = backoff.after(time.monotonic() - started)
            event = "restarted"
            self.report(IntakeHealth("restarted", f"pg_receivewal exited {proc.returncode}: {error}; "
                                                  f"restarting in {delay:.0f} s", self.archived, self.restarts))
            stop.wait(delay)

    def _archive_finished(self, sysid: int) -> None:
        """Push every finished segment and history file of the spool, oldest first, then remove it."""
        for path in sorted(self.spool.iterdir()):
            try:
                name = WalName.parse(path.name)
            except InputError:
                continue  # .partial (in progress), pg_receivewal's temporary files
            if name.kind not in ("segment", "history"):
                continue
            push_wal(self.repo, path, system_identifier=sysid)
            path.unlink()
            self.archived += 1

    def _check_slot(self) -> None:
        try:
            with self.engine._connect(self.engine.conn.maintenance_database) as c:
                row = c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
                                "FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)).fetchone()
        except VaultflowError:
            return  # the server is down: pg_receivewal's exit says so
        retained = int(row[0]) if row and row[0] is not None else None
        if retained is not None and retained > self.retained_warn_bytes:
            self.report(IntakeHealth("slot-retaining", f"slot {self.slot} on {self.engine.server_label()} "
                                                         f"retains {retained} bytes of WAL (warning at "
                                                         f"{self.retained_warn_bytes})",
                                       self.archived, self.restarts, retained))

    def _system_identifier(self) -> int:
        with self.engine._connect(self.engine.conn.maintenance_database) as c:
            row = c.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        assert row is not None
        return int(row[0])

    def _argv(self, *extra: str) -> list[str]:
        c = self.engine.conn
        return [self.engine._tool("pg_receivewal"), "--host", c.host, "--port", str(c.port), "--username", c.user,
                "--no-password", "--slot", self.slot, *extra]

    def _create_slot(self) -> None:
        """The physical slot, WAL reserved from its creation, then checked over a replication connection.
        `pg_receivewal --create-slot` alone reserves no WAL until it streams, so a segment switched in
        between would never reach the repository (and the stream would start after it)."""
        try:
            with self.engine._connect(self.engine.conn.maintenance_database) as c:
                c.execute("SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS "
                          "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)", (self.slot, self.slot))
        except (psycopg.Error, VaultflowError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"cannot create replication slot {self.slot} on {self.engine.server_label()}: "
                             f"{first[:300]}",
                             "the user needs the REPLICATION attribute, a pg_hba.conf replication line and "
                             "max_wal_senders > 0 (vaultflow pitr check says which)") from None
        out = subprocess.run(self._argv("--create-slot", "--if-not-exists"), env=self._env(), capture_output=True,
                             text=True, timeout=60, check=False)
        if out.returncode != 0:
            line = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
            raise InputError(f"cannot create replication slot {self.slot} on {self.engine.server_label()}: "
                             f"{line[:300]}",
                             "the user needs the REPLICATION attribute, a pg_hba.conf replication line and "
                             "max_wal_senders > 0 (vaultflow pitr check says which)")

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._argv("--directory", str(self.spool), "--synchronous", "--no-loop"),
                                env=self._env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.engine._tool_env()}


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM: pg_receivewal flushes and exits; SIGKILL after 15 s."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _last_line(proc: subprocess.Popen[bytes]) -> str:
    raw = proc.stderr.read() if proc.stderr is not None else b""
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:300] if lines else "no message"
