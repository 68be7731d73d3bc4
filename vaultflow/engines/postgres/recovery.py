"""Laying out a base backup for recovery to a moment: an empty data directory, the tar extracted
into it, `recovery.signal`, and the recovery settings appended to `postgresql.auto.conf`.

The settings written (PostgreSQL 12 or later):

    restore_command = 'env VAULTFLOW_REPO=<repo> VAULTFLOW_PASSPHRASE_FILE=<0600 file> <vaultflow-wal> fetch %f %p'
    recovery_target_time = '<target, UTC with its offset>'   (or recovery_target_lsn / _name)
    recovery_target_action = 'promote'                        ('pause' for a PITR drill, with hot_standby = 'on')
    recovery_target_timeline = 'latest'
    archive_mode = 'off'                                      (unless the restored server is to archive)
    port = '<P>', listen_addresses = '127.0.0.1', ...         (when vaultflow starts the server itself)

The passphrase itself is never written: the server reads it from the file when it runs the command.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

from vaultflow.errors import InputError, VaultflowError
from vaultflow.repository.repository import ByteSink

RECOVERY_SIGNAL = "recovery.signal"
MAX_RESTORE_POINT_NAME = 64  # MAXFNAMELEN, with its terminating zero
AUTO_CONF = "postgresql.auto.conf"


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops: a moment (aware datetime), an LSN, a restore point's name
    (`pg_create_restore_point`), just after a transaction's commit (`xid`), or `latest`: the end
    of the archived WAL."""

    time: datetime | None = None
    lsn: int | None = None
    name: str | None = None
    xid: int | None = None
    latest: bool = False

    def __post_init__(self) -> None:
        if [self.time, self.lsn, self.name, self.xid].count(None) != 4 - (not self.latest):
            raise InputError("give exactly one recovery target",
                             "pass --to-time, --to-lsn, --to-name, --to-xid or --latest")
        if self.xid is not None and not 3 <= self.xid < 2**64:
            raise InputError(f"transaction id {self.xid} is not a normal transaction id",
                             "give the id pg_current_xact_id() or the server log showed, e.g. --to-xid 7421")
        if self.name is not None and not 0 < len(self.name.encode()) < MAX_RESTORE_POINT_NAME:
            raise InputError(f"restore point name {self.name!r} is empty or longer than "
                             f"{MAX_RESTORE_POINT_NAME - 1} bytes", "give the name pg_create_restore_point was given")
        if self.time is not None and self.time.tzinfo is None:
            raise InputError(f"target time {self.time.isoformat(sep=' ')} has no time zone",
                             "write the offset too, e.g. '2026-12-02 10:14:00+01:00' or '...Z' for UTC")

    def describe(self) -> str:
        if self.time is not None:
            return self.time.astimezone(UTC).isoformat(sep=" ")
        if self.name is not None:
            return f"restore point {self.name!r}"
        if self.xid is not None:
            return f"the commit of transaction {self.xid}"
        if self.latest:
            return "the end of the archived WAL"
        assert self.lsn is not None
        return f"LSN {self.lsn >> 32:X}/{self.lsn & 0xFFFFFFFF:X}"


def parse_target_time(text: str) -> datetime:
    """ISO 8601 with an explicit offset (`Z` for UTC); InputError without one."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InputError(f"target time {text!r} is not an ISO 8601 time",
                         "write it as '2026-12-02 10:14:00+01:00'") from None
    if value.tzinfo is None:
        raise InputError(f"target time {text!r} has no time zone",
                         "write the offset too, e.g. '2026-12-02 10:14:00+01:00' or '...Z' for UTC")
    return value


def conf_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def restore_command(wal_command: Path, repository: str, passphrase_file: Path) -> str:
    """The restore_command line: vaultflow-wal fetch with the repository and passphrase *file* in
    its environment (shell-quoted). Refuses a passphrase file that group or others may read."""
    mode = _mode_of(passphrase_file, "passphrase file")
    if mode & 0o077:
        raise InputError(f"passphrase file {passphrase_file} has mode {mode:04o}; the server's restore_command "
                         "refuses it", f"chmod 600 {passphrase_file} (owned by the server's OS user)")
    if not os.access(wal_command, os.X_OK):
        raise InputError(f"{wal_command} is not an executable vaultflow-wal",
                         "run `make wal-venv` and pass --wal-command <checkout>/.wal-venv/bin/vaultflow-wal")
    return (f"env VAULTFLOW_REPO={shlex.quote(repository)} "
            f"VAULTFLOW_PASSPHRASE_FILE={shlex.quote(str(passphrase_file.absolute()))} "
            f"{shlex.quote(str(wal_command.absolute()))} fetch %f %p")


def _mode_of(path: Path, what: str) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise InputError(f"cannot read the {what} {path} ({exc.strerror})", "give an existing file") from None


def prepare_data_directory(pgdata: Path) -> bool:
    """Make `pgdata` an empty directory of mode 0700; True when it was created. Refuses (one line)
    a file, or a directory that is not empty."""
    if pgdata.exists() or pgdata.is_symlink():
        if not pgdata.is_dir():
            raise InputError(f"--pgdata {pgdata} is not a directory", "give a new or empty directory")
        if any(pgdata.iterdir()):
            raise InputError(f"--pgdata {pgdata} is not empty", "give a new or empty directory; nothing was written")
        pgdata.chmod(0o700)
        return False
    try:
        pgdata.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise InputError(f"cannot create --pgdata {pgdata} ({exc.strerror})", "give a writable place") from None
    pgdata.chmod(0o700)
    return True


def clear_data_directory(pgdata: Path, created: bool) -> None:
    """Undo a failed layout: remove the directory it created, or empty the one it was given."""
    if created:
        shutil.rmtree(pgdata, ignore_errors=True)
        return
    for child in pgdata.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def extract_tar(write_stream: Callable[[ByteSink], None], pgdata: Path) -> int:
    """Extract the tar that `write_stream` writes (the repository's verified read of the stream) into
    `pgdata`; returns the member count. The read runs in a thread into a pipe; an error of the read
    (a damaged chunk) is raised rather than the tar error it causes."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=1 << 20) as sink:
                write_stream(sink)
        except BrokenPipeError:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the extracting thread
            failure.append(exc)

    feeder = threading.Thread(target=feed, name="vf-basebackup-read", daemon=True)
    feeder.start()
    count = 0
    with os.fdopen(read_fd, "rb", buffering=1 << 20) as source:
        try:
            count = _extract(source, pgdata)
            while source.read(1 << 20):  # the tar's end padding, so the feeder can finish
                pass
        except (tarfile.TarError, OSError) as exc:
            source.close()
            feeder.join()
            if failure:
                raise failure[0] from None
            raise VaultflowError(f"extracting the base backup into {pgdata} failed: {exc}",
                                 "check the space and permissions there") from None
    feeder.join()
    if failure:
        raise failure[0]
    return count


def _extract(source: IO[bytes], pgdata: Path) -> int:
    count = 0
    with tarfile.open(fileobj=source, mode="r|") as tar:
        for member in tar:
            # The "tar" filter refuses absolute paths and `..`, and drops set-uid and group/other write bits.
            tar.extract(member, pgdata, filter="tar")
            count += 1
    return count


RecoveryAction = Literal["promote", "pause"]


def write_recovery_settings(pgdata: Path, *, command: str, target: RecoveryTarget, snapshot: str,
                            archive: bool, action: RecoveryAction = "promote", timeline: int | None = None,
                            settings: dict[str, str] | None = None) -> list[str]:
    """recovery.signal and the recovery lines appended to postgresql.auto.conf (returned).
    `action` is what the server does at the target (`pause`: it stays a read-only hot standby,
    no timeline is created); `timeline` the one to recover along (default 'latest', which follows a
    promotion's child timeline); `settings` are more server settings (quoted here), e.g. the port."""
    lines = [f"# vaultflow pitr restore of base backup {snapshot} to {target.describe()}",
             f"restore_command = {conf_quote(command)}"]
    if target.time is not None:
        lines.append(f"recovery_target_time = {conf_quote(target.time.astimezone(UTC).isoformat(sep=' '))}")
    elif target.name is not None:
        lines.append(f"recovery_target_name = {conf_quote(target.name)}")
    elif target.xid is not None:
        lines.append(f"recovery_target_xid = {conf_quote(str(target.xid))}")
    elif target.latest:
        lines.append("# no recovery_target: replay every archived segment, then promote")
    else:
        assert target.lsn is not None
        lines.append(f"recovery_target_lsn = {conf_quote(f'{target.lsn >> 32:X}/{target.lsn & 0xFFFFFFFF:X}')}")
    lines += [f"recovery_target_action = {conf_quote(action)}",
              f"recovery_target_timeline = {conf_quote(str(timeline) if timeline else 'latest')}"]
    if not archive:
        lines.append("archive_mode = 'off'  # a restored copy does not write a new timeline into the archive")
    if action == "pause":
        lines.append("hot_standby = 'on'  # paused at the target, read-only")
    lines += [f"{name} = {conf_quote(value)}" for name, value in (settings or {}).items()]
    auto = pgdata / AUTO_CONF
    with auto.open("a") as f:
        f.write("\n" + "\n".join(lines) + "\n")
    signal = pgdata / RECOVERY_SIGNAL
    signal.touch()
    _same_owner(pgdata, auto, signal)
    return lines


def _same_owner(pgdata: Path, *paths: Path) -> None:
    """Files written as root belong to the data directory's owner (the tar's `postgres`)."""
    if os.geteuid() != 0:
        return
    owner = (pgdata / "PG_VERSION") if (pgdata / "PG_VERSION").exists() else pgdata
    st = owner.stat()
    for path in (pgdata, *paths):
        os.chown(path, st.st_uid, st.st_gid)
