"""`vaultflow binlog-stream`: a MySQL/MariaDB server's binary logs copied into the repository by a
supervised `mariadb-binlog --read-from-remote-server --raw --stop-never`.

The tool writes each binlog file under its server name into the spool, byte for byte; a file
is finished once the spool holds a later one (the server rotated to it). Every finished file
is sealed (zstd, AES-256-GCM, AAD `"binlog:" + key`) and stored durably as

    binlog/<server>/<file name>        (server: host-port of the source, lowercase)

then removed from the spool; the newest file stays, and a restart fetches it again from its
start. With a push interval, the growing newest file is also stored every interval as

    binlog/<server>/<file name>.partial.<size>   (its first <size> bytes, cut after the last whole event)

a key that never repeats, so nothing is overwritten; the finished file supersedes its partials,
and replay and the window read the newest partial of a file that is not finished yet.
Storing the same name with the same bytes again is a no-op, other bytes fail loudly.
The tool does not reconnect by itself (MySQL manual, mysqlbinlog backup), so the supervisor
restarts it after every exit with a back-off from 1 s to 30 s. A file the server purged
before it was copied is a gap, reported (`gap`) and skipped: replay cannot cross it.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from vaultflow.engines.intake import HealthReport, IntakeEvent, IntakeHealth, RestartBackoff
from vaultflow.engines.mysql.engine import MySQLEngine
from vaultflow.errors import InputError, IntegrityError, VaultflowError
from vaultflow.repository.repository import Repository

BINLOG_PREFIX = "binlog/"
MAX_BINLOG_SIZE = 1 << 30  # max_binlog_size is at most 1 GiB
_NAME = re.compile(r"^(?P<base>[A-Za-z0-9_.-]+)\.(?P<number>\d{6,})$")
_PARTIAL = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+\.\d{6,})\.partial\.(?P<size>\d+)$")
_HEADER = 19  # timestamp 4, type 1, server id 4, event length 4, next position 4, flags 2

def binlog_key(server: str, name: str) -> str:
    """The object key of one binlog file of `server` (its host:port label)."""
    if not _NAME.match(name):
        raise InputError(f"{name!r} is not a binlog file name", "give a name as SHOW BINARY LOGS lists it")
    return f"{BINLOG_PREFIX}{re.sub(r'[^a-z0-9.-]+', '-', server.lower())}/{name.lower()}"


def push_binlog(repo: Repository, server: str, path: Path) -> bool:
    """Store one finished binlog file durably; False when the same bytes were already stored.
    IntegrityError when other bytes are stored under its name."""
    key = binlog_key(server, path.name)
    data = path.read_bytes()
    aad = b"binlog:" + key.encode()
    if repo.store.stat(key) is not None:
        if repo.sealer.holds(repo.store.get(key), aad, data, max_size=MAX_BINLOG_SIZE):
            return False
        raise IntegrityError(f"binlog file {path.name} of {server} is already archived at {key} with other bytes",
                             "two streams (or a re-created server) may write here; find out why first")
    repo.store.put(key, repo.sealer.seal(data, aad), sync=True)
    return True


def push_partial_binlog(repo: Repository, server: str, name: str, data: bytes) -> int:
    """Store the whole events at the start of `data` (the growing file `name`) under a key of
    their size, never written twice; the size stored, 0 when there was nothing new to store."""
    size = whole_events_size(data)
    key = f"{binlog_key(server, name)}.partial.{size}"
    if size <= 4 or repo.store.stat(key) is not None:
        return 0
    repo.store.put(key, repo.sealer.seal(data[:size], b"binlog:" + key.encode()), sync=True)
    return size


def whole_events_size(data: bytes) -> int:
    """How many bytes of a binlog file's start hold whole events (after the 4-byte magic)."""
    position = 4
    while position + _HEADER <= len(data):
        length = int.from_bytes(data[position + 9:position + 13], "little")
        if length < _HEADER or position + length > len(data):
            break
        position += length
    return min(position, len(data))


def archived_binlogs(repo: Repository, server: str) -> list[str]:
    """The names of the finished archived binlog files of `server`, in order."""
    return [name for name, key in binlog_sources(repo, server) if not is_partial_key(key)]


def is_partial_key(key: str) -> bool:
    """Whether `key` holds the start of a binlog file still being written (`.partial.<size>`)."""
    return _PARTIAL.match(key.rsplit("/", 1)[-1]) is not None


def binlog_sources(repo: Repository, server: str) -> list[tuple[str, str]]:
    """(file name, object key) of every archived binlog file of `server`, in order: the finished
    file's key, else the key of its newest (largest) partial."""
    prefix = binlog_key(server, "x.000001").rsplit("/", 1)[0] + "/"
    finished: dict[str, str] = {}
    partial: dict[str, tuple[int, str]] = {}
    for info in repo.store.list(prefix):
        rest = info.key[len(prefix):]
        if found := _PARTIAL.match(rest):  # first: `<file>.partial.<6+ digit size>` also looks like a file name
            size, name = int(found.group("size")), found.group("name")
            if size > partial.get(name, (-1, ""))[0]:
                partial[name] = (size, info.key)
        elif _NAME.match(rest):
            finished[rest] = info.key
    names = set(finished) | set(partial)
    return [(n, finished[n] if n in finished else partial[n][1]) for n in sorted(names, key=binlog_file_number)]


def binlog_file_number(name: str) -> int:
    """The number of a binlog file name (`binlog.000042` -> 42); -1 for any other name."""
    found = _NAME.match(name)
    return int(found.group("number")) if found else -1


@dataclass
class BinlogStream:
    """Supervise mariadb-binlog for one server into `spool`, archiving finished files into `repo`."""

    engine: MySQLEngine
    repo: Repository
    spool: Path
    health_every: float = 60.0
    poll_every: float = 0.5
    push_interval: float | None = None  # seconds between pushes of the growing file; None: finished files only
    report: HealthReport = field(default=lambda health: None)
    archived: int = 0
    restarts: int = 0
    _partial_pushed: dict[str, int] = field(default_factory=dict)
    _partial_at: float = 0.0

    @property
    def server(self) -> str:
        return self.engine.server_label()

    def run(self, stop: threading.Event) -> None:
        """Stream until `stop` is set; raises only for what no restart mends (binlog off, no
        REPLICATION SLAVE), in one line."""
        self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._preflight()
        backoff, last_health = RestartBackoff(), time.monotonic()
        event: IntakeEvent = "started"
        while not stop.is_set():
            start = self._start_file()
            with self.engine.option_file() as options:
                proc = subprocess.Popen(
                    [*self.engine.tool_argv(self.engine._tool("mariadb-binlog", "mysqlbinlog"), options),
                     "--read-from-remote-server", "--raw", "--stop-never", f"--result-file={self.spool}/", start],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                started = time.monotonic()
                self.report(IntakeHealth(event, f"streaming the binlog of {self.server} from {start}",
                                         self.archived, self.restarts))
                while proc.poll() is None and not stop.is_set():
                    self._archive_finished()
                    if time.monotonic() - last_health >= self.health_every:
                        last_health = time.monotonic()
                        self.report(IntakeHealth("healthy", "streaming", self.archived, self.restarts))
                    stop.wait(self.poll_every)
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(15)
            self._archive_finished()
            if stop.is_set():
                self.report(IntakeHealth("stopped", "stopped on request", self.archived, self.restarts))
                return
            raw = proc.stderr.read() if proc.stderr is not None else b""
            error = (raw.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1][:300]
            self.restarts += 1
            delay = backoff.after(time.monotonic() - started)
            event = "restarted"
            self.report(IntakeHealth("restarted", f"mariadb-binlog exited {proc.returncode}: {error}; restarting "
                                                  f"in {delay:.0f} s", self.archived, self.restarts))
            stop.wait(delay)

    def _archive_finished(self) -> None:
        """Push every spool file but the newest (the one being written), oldest first."""
        files = sorted((p for p in self.spool.iterdir() if _NAME.match(p.name)),
                       key=lambda p: binlog_file_number(p.name))
        for path in files[:-1]:
            push_binlog(self.repo, self.server, path)
            path.unlink()
            self._partial_pushed.pop(path.name, None)
            self.archived += 1
        if files and self.push_interval is not None and time.monotonic() - self._partial_at >= self.push_interval:
            self._partial_at = time.monotonic()
            self._push_growing(files[-1])

    def _push_growing(self, path: Path) -> None:
        """Store the whole events the growing file holds now, when it has grown since the last push."""
        data = path.read_bytes()
        if whole_events_size(data) > self._partial_pushed.get(path.name, 4):
            size = push_partial_binlog(self.repo, self.server, path.name, data)
            self._partial_pushed[path.name] = max(size, whole_events_size(data))

    def _preflight(self) -> None:
        """One line for a user who cannot stream (no REPLICATION SLAVE/CLIENT), and a warning
        naming the risk when the server logs statements instead of rows."""
        from vaultflow.engines.mysql.pitr_check import binlog_format_risk, missing_replication_privileges

        try:
            with self.engine.connect() as c, c.cursor() as cur:
                cur.execute("SELECT @@GLOBAL.binlog_format, CURRENT_USER()")
                row = cur.fetchone() or ("", "?")
                cur.execute("SHOW GRANTS")
                grants = " ".join(str(r[0]) for r in cur.fetchall()).upper()
        except VaultflowError:
            raise
        except pymysql.MySQLError as exc:
            raise InputError(f"cannot read the binlog settings of {self.server}: {str(exc)[:200]}",
                             "check the server and the user (vaultflow pitr check)") from None
        user = str(row[1])
        needed = missing_replication_privileges(grants)
        if needed:
            name, _, host = user.rpartition("@")
            raise InputError(f"{user} on {self.server} lacks {', '.join(needed)}, which streaming the binlog needs",
                             f"GRANT {', '.join(needed)} ON *.* TO '{name}'@'{host}'; (vaultflow pitr check)")
        risk = binlog_format_risk(str(row[0] or ""))
        if risk:
            detail = f"{self.server} has binlog_format={row[0]}: {risk}; set binlog_format=ROW (vaultflow pitr check)"
            self.report(IntakeHealth("warning", detail, self.archived, self.restarts))

    def _start_file(self) -> str:
        """The newest spool file (fetched again from its start), else the file after the newest
        archived one, else the server's oldest; a wanted file the server purged is a gap."""
        on_server = self._server_binlogs()
        in_spool = sorted((p.name for p in self.spool.iterdir() if _NAME.match(p.name)), key=binlog_file_number)
        archived = archived_binlogs(self.repo, self.server)
        if in_spool:
            wanted = in_spool[-1]
        elif archived:
            last = _NAME.match(archived[-1])
            assert last is not None
            wanted = f"{last.group('base')}.{int(last.group('number')) + 1:0{len(last.group('number'))}d}"
        else:
            return on_server[0]
        if wanted in on_server:
            return wanted
        later = [n for n in on_server if binlog_file_number(n) > binlog_file_number(wanted)]
        if not later:
            return wanted  # not written yet: the tool waits for it
        self.report(IntakeHealth("gap", f"binlog files from {wanted} up to {later[0]} (not included) were purged on "
                                        f"{self.server} before they were copied: no point in time in them can be "
                                        "restored", self.archived, self.restarts))
        return later[0]

    def _server_binlogs(self) -> list[str]:
        try:
            with self.engine.connect() as c, c.cursor() as cur:
                cur.execute("SHOW BINARY LOGS")
                names = [str(r[0]) for r in cur.fetchall()]
        except VaultflowError:
            raise
        except pymysql.MySQLError as exc:  # binlog off, or no privilege to list it
            raise InputError(f"cannot list the binary logs of {self.server}: {str(exc)[:200]}",
                             "turn on log_bin and grant REPLICATION CLIENT, REPLICATION SLAVE "
                             "(vaultflow pitr check says which)") from None
        if not names:
            raise InputError(f"{self.server} writes no binary log", "turn on log_bin (vaultflow pitr check)")
        return sorted(names, key=binlog_file_number)
