"""WAL archiving into the repository: what `archive_command` pushes and `restore_command` fetches.

Every WAL segment, timeline history file, `.partial` segment and backup history file is one
sealed object (zstd, AES-256-GCM under the repository's seal key, AAD `"wal:" + key`), named

    wal/<system identifier>/<timeline, 8 hex>/<segment name>[.partial | .<offset>.backup]
    wal/<system identifier>/history/<timeline, 8 hex>.history

in lowercase (object keys are lowercase), so a listing of one timeline shows its gaps. The
system identifier of a segment comes from its first page (XLogLongPageHeaderData.xlp_sysid);
a history or backup file has none, so it comes from the cluster's `global/pg_control`.

No connection to the server is made: the server runs these itself, in its data directory.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vaultflow.errors import InputError, IntegrityError, KeyRoleInsufficient, VaultflowError
from vaultflow.repository.repository import Repository

WAL_PREFIX = "wal/"
MAX_SEGMENT_SIZE = 1 << 30  # wal_segment_size is a power of two from 1 MiB to 1 GiB
MIN_SEGMENT_SIZE = 1 << 20
MAX_SMALL_FILE = 1 << 20  # history and backup history files are a few hundred bytes

XLP_LONG_HEADER = 0x0002
# XLogPageHeaderData (magic, info, tli, pageaddr, rem_len, 4 padding bytes) followed by the long
# header's sysid, seg_size and xlog_blcksz; native byte order, as the server that wrote it.
_LONG_HEADER = struct.Struct("=HHIQI4xQII")

_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_PARTIAL_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$")
_BACKUP_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.[0-9A-F]{8}\.backup$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")

WalKind = Literal["segment", "partial", "backup", "history"]


class WalConflict(VaultflowError):
    """The repository holds a different file under the name being pushed (exit 1)."""


class WalNotArchived(VaultflowError):
    """The requested WAL file is not in the repository (normal at the end of recovery)."""


@dataclass(frozen=True)
class WalName:
    """A WAL file name as PostgreSQL gives it (`%f`): what it is and on which timeline."""

    name: str
    kind: WalKind
    timeline: int

    @classmethod
    def parse(cls, name: str) -> WalName:
        """Recognise a segment, `.partial`, `.backup` or `.history` name; InputError otherwise."""
        for kind, pattern in (("segment", _SEGMENT_RE), ("partial", _PARTIAL_RE), ("backup", _BACKUP_RE),
                              ("history", _HISTORY_RE)):
            found = pattern.match(name)
            if found:
                return cls(name, kind, int(found.group(1), 16))  # type: ignore[arg-type]
        raise InputError(f"{name!r} is not a WAL segment, .partial, .backup or .history file name",
                         "give the %f/%p PostgreSQL passes to archive_command or restore_command")

    @property
    def segment_number(self) -> tuple[int, int]:
        """(log, seg) of a segment-like name: the two 8-hex halves after the timeline."""
        return int(self.name[8:16], 16), int(self.name[16:24], 16)

    def key(self, system_identifier: int) -> str:
        """The object key of this file in a cluster's archive."""
        if self.kind == "history":
            return f"{WAL_PREFIX}{system_identifier}/history/{self.name.lower()}"
        return f"{WAL_PREFIX}{system_identifier}/{self.timeline:08x}/{self.name.lower()}"


@dataclass(frozen=True)
class SegmentHeader:
    """The long page header of a segment's first page."""

    system_identifier: int
    segment_size: int
    page_address: int
    timeline: int


def read_segment_header(data: bytes, name: WalName) -> SegmentHeader:
    """Parse and check the first page of a segment: long header flag, segment size equal to the
    file size, and a page address that matches the name. InputError naming the file otherwise."""
    if len(data) < _LONG_HEADER.size:
        raise InputError(f"WAL segment {name.name} is {len(data)} bytes, too short for a page header",
                         "archive the segment file PostgreSQL passed as %p")
    _magic, info, tli, pageaddr, _rem, sysid, seg_size, _blcksz = _LONG_HEADER.unpack_from(data)
    if not info & XLP_LONG_HEADER or not MIN_SEGMENT_SIZE <= seg_size <= MAX_SEGMENT_SIZE or (
            seg_size & (seg_size - 1)):
        raise InputError(f"WAL segment {name.name} has no valid long page header",
                         "archive the segment file PostgreSQL passed as %p, not another file")
    if len(data) != seg_size:
        raise InputError(f"WAL segment {name.name} is {len(data)} bytes, its header says {seg_size}",
                         "archive the segment file PostgreSQL passed as %p (it may have been cut short)")
    log, seg = name.segment_number
    expected = (log * (0x1_0000_0000 // seg_size) + seg) * seg_size
    if pageaddr != expected:
        raise InputError(f"WAL segment {name.name} holds the segment at {pageaddr >> 32:X}/{pageaddr & 0xFFFFFFFF:X}, "
                         "not the one its name says", "archive the file under its own name")
    return SegmentHeader(sysid, seg_size, pageaddr, tli)


def read_system_identifier(data_directory: Path) -> int:
    """The cluster's system identifier: the first 8 bytes of `global/pg_control`."""
    control = data_directory / "global" / "pg_control"
    try:
        with control.open("rb") as f:
            raw = f.read(8)
    except OSError as exc:
        raise InputError(f"cannot read {control} ({exc.strerror})",
                         "run in the cluster's data directory (the server does) or pass --pgdata") from None
    if len(raw) != 8:
        raise InputError(f"{control} is too short to be a pg_control file", "pass the cluster's data directory")
    return int(struct.unpack("=Q", raw)[0])


def data_directory_of(wal_path: Path, pgdata: Path | None) -> Path:
    """`pgdata` if given, else the directory holding `pg_wal/` of `wal_path`, else the working
    directory (PostgreSQL runs archive_command and restore_command in its data directory)."""
    if pgdata is not None:
        return pgdata
    parent = wal_path.absolute().parent
    if parent.name == "pg_wal":
        return parent.parent
    return Path.cwd()


def _aad(key: str) -> bytes:
    return b"wal:" + key.encode()


@dataclass(frozen=True)
class PushResult:
    """What `push_wal` did: stored the file, or found the same content already stored."""

    key: str
    stored: bool
    size: int


def push_wal(repo: Repository, path: Path, *, pgdata: Path | None = None,
             system_identifier: int | None = None) -> PushResult:
    """Archive one WAL file durably (the store's synced put: LocalStore fsyncs the file and its
    directory; S3 and Azure return when the PUT did).

    The same name with the same content again stores nothing; the same name with other content
    raises WalConflict naming the file; a stored object that fails authentication raises
    IntegrityError. A segment whose header names another cluster than `pg_control` (or than
    `system_identifier`, which a receiver outside the data directory gives) is refused."""
    name = WalName.parse(path.name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read WAL file {path} ({exc.strerror})",
                         "pass the path PostgreSQL gives as %p") from None
    control_dir = data_directory_of(path, pgdata)
    if name.kind in ("segment", "partial"):
        sysid = read_segment_header(data, name).system_identifier
        cluster = system_identifier
        if cluster is None and (control_dir / "global" / "pg_control").exists():
            cluster = read_system_identifier(control_dir)
        if cluster is not None and cluster != sysid:
            raise InputError(f"WAL segment {name.name} belongs to cluster {sysid}, not to {cluster}",
                             "archive only the cluster's own WAL")
    else:
        if len(data) > MAX_SMALL_FILE:
            raise InputError(f"{name.name} is {len(data)} bytes, too big for a {name.kind} file",
                             "archive the file PostgreSQL passed as %p")
        sysid = system_identifier if system_identifier is not None else read_system_identifier(control_dir)
    key = name.key(sysid)
    if repo.store.stat(key) is not None:
        if repo.sealer.holds(repo.store.get(key), _aad(key), data, max_size=MAX_SEGMENT_SIZE):
            return PushResult(key, stored=False, size=len(data))
        raise WalConflict(f"WAL file {name.name} is already archived at {key} with different content",
                          "two clusters or archivers may share this repository; find out why before "
                          "removing either copy")
    repo.store.put(key, repo.sealer.seal(data, _aad(key)), sync=True)
    return PushResult(key, stored=True, size=len(data))


def _open_stored(repo: Repository, key: str, name: WalName) -> bytes:
    try:
        blob = repo.store.get(key)
    except KeyError:
        raise WalNotArchived(f"WAL file {name.name} is not in the repository at {repo.store.describe()}") from None
    try:
        return repo.sealer.open(blob, _aad(key), max_size=MAX_SEGMENT_SIZE)
    except KeyRoleInsufficient:
        raise
    except Exception as exc:  # SealError, or a zstd frame that does not decode
        raise IntegrityError(f"archived WAL file {key} failed its check: {exc}",
                             "the archive is damaged from this file on; take a new base backup") from None


def read_archived(repo: Repository, system_identifier: int, file_name: str) -> bytes:
    """The plaintext of an archived WAL file (a history or backup history file, say);
    WalNotArchived when it is not there, IntegrityError when it fails its check."""
    name = WalName.parse(file_name)
    return _open_stored(repo, name.key(system_identifier), name)


def fetch_wal(repo: Repository, file_name: str, destination: Path, *, pgdata: Path | None = None) -> int:
    """Write the archived WAL file `file_name` (`%f`) to `destination` (`%p`) atomically (a temp
    file in its directory, then a rename); returns its size. WalNotArchived when the repository
    lacks it; IntegrityError when it fails authentication or is not the file its name says."""
    repo.require("restore", "wal-fetch")
    name = WalName.parse(file_name)
    key = name.key(read_system_identifier(data_directory_of(destination, pgdata)))
    data = _open_stored(repo, key, name)
    if name.kind in ("segment", "partial"):
        try:
            read_segment_header(data, name)
        except InputError:
            raise IntegrityError(f"archived WAL file {key} is not the segment its name says",
                                 "the archive is damaged from this file on; take a new base backup") from None
    directory = destination.absolute().parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".vaultflow-fetch-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, destination)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise VaultflowError(f"cannot write WAL file {file_name} to {destination} ({exc.strerror})",
                             "check the data directory's space and permissions") from None
    return len(data)
