"""File trees: one directory backed up as a pax tar stream, restored by a directory swap.

The dump is written by tarfile in streaming mode (`w|`) from a producer thread into a
pipe the backup reads, so no spool is needed. Entries come in sorted walk order with
exact (nanosecond) mtimes and numeric owners only, so an unchanged tree gives the same
bytes and dedupes chunk for chunk. A restore extracts into a sibling staging directory
and swaps it in with one rename; a failure leaves the target as it was.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import IO, BinaryIO, Literal

import blake3

from vaultflow.engines.base import DatabaseEngine, DumpSession, RestoreObserver, StreamReader, StreamSource
from vaultflow.engines.files import SPEC
from vaultflow.engines.files.tree import (
    ROOT,
    TreeEntry,
    TreeStats,
    drop_unopenable,
    fingerprint,
    included_path,
    printable,
    select_included,
    tree_stats,
    unreadable_error,
    walk_tree,
)
from vaultflow.errors import (
    DatabaseNotFound,
    InputError,
    IntegrityError,
    SourceUnreadable,
    StorageUnwritable,
    TargetNotEmpty,
)
from vaultflow.repository.manifest import StreamManifest, TableStats

DUMP_FORMAT = "vaultflow-files-tar"
STREAM_NAME = "tree"
_BLOCK = 1 << 20


class FileTreeEngine(DatabaseEngine):
    """The directory `path` (absolute); its "database" is the directory's name."""

    engine = "files"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(path))

    @property
    def database(self) -> str:
        return self.path.name

    def server_label(self) -> str:
        return str(self.path.parent)

    def with_database(self, database: str) -> FileTreeEngine:
        return FileTreeEngine(self.path.parent / database)

    def describe(self) -> str:
        return f"file tree {self.path}"

    def list_databases(self) -> list[str]:
        return [self.path.name] if self.path.is_dir() else []

    def versions(self) -> dict[str, str]:
        return {"python-tarfile": platform.python_version(), "tar-format": "pax"}

    def check_configuration(self, action: Literal["backup", "restore"]) -> None:
        if action == "backup" and not self.path.exists():
            raise DatabaseNotFound(f"{self.path} is not a directory: it does not exist",
                                   "check the path in the file:// URL (it must be absolute)")
        if action == "backup" and not self.path.is_dir():
            raise InputError(f"{self.path} is not a directory", "give the directory to back up in the file:// URL")
        if action == "restore" and self.path.exists() and not self.path.is_dir():
            raise InputError(f"restore target {self.path} exists and is not a directory",
                             "give a new or existing directory as the file:// target")

    def fingerprint(self) -> str:
        return fingerprint(str(self.path))

    def table_stats(self, *, like: list[TableStats] | None = None) -> list[TableStats]:
        return tree_stats(str(self.path))

    # -- backup ------------------------------------------------------------------------

    @contextmanager
    def open_dump(
        self, *, table_checksums: bool = True, timeout: float | None = None,
        include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
        parent_streams: list[StreamManifest] | None = None,
    ) -> Iterator[DumpSession]:
        """One source: the tar of the tree's entries selected by the include/exclude path
        globs (relative to the root). Statistics come from the bytes put in the tar, and
        are in the session's `tables` once the source's context was left. Entries that
        permission keeps from being read are left out and listed in the session's
        `unreadable`, found before the tar starts (the backup decides whether that fails)."""
        self.check_configuration("backup")
        refused: list[str] = []
        walked = list(walk_tree(str(self.path), exclude_tables, refused))
        unreadable = [rel for rel in refused if included_path(rel, include_tables)]
        entries = drop_unopenable(select_included(walked, include_tables), unreadable)
        tables: list[TableStats] = []

        @contextmanager
        def tar_stream() -> Iterator[IO[bytes]]:
            stats = TreeStats()
            with _produced(lambda out: _write_tar(entries, out, stats, self._open_file)) as stream:
                yield stream
            tables[:] = stats.table_stats()

        yield DumpSession(sources=[StreamSource(STREAM_NAME, DUMP_FORMAT, tar_stream)], tables=tables,
                          versions=self.versions(), unreadable=sorted(unreadable))

    def _open_file(self, path: str) -> BinaryIO:
        """Open a file of the tree for reading (a seam for tests: root reads anything)."""
        return open(path, "rb")  # noqa: SIM115 - closed by the caller

    # -- restore -----------------------------------------------------------------------

    def check_restore_target(self, replace: bool) -> None:
        """Refuse a target that is not a directory, or a non-empty one without `replace`."""
        target = self.path
        if target.exists() and not target.is_dir():
            raise InputError(f"restore target {target} exists and is not a directory",
                             "give a new or existing directory as the file:// target")
        occupied = target.is_dir() and any(target.iterdir())
        if occupied and not replace:
            raise TargetNotEmpty(f"directory {target} is not empty",
                                 "restore to a new directory, or pass --replace to swap it out")

    def restore(
        self, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
        timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
        tables: list[str] | None = None, observer: RestoreObserver | None = None, server_locale: bool = False,
    ) -> None:
        """Extract the tree into a staging directory beside the target, then rename it into
        place (exchanging it with a non-empty target under `replace`, whose old tree is then
        removed). Owners are restored only when running as root and not `no_owner`."""
        if tables:
            SPEC.require("table_restore", "drop --table; file trees restore as a whole directory")
        if [s.format for s in streams] != [DUMP_FORMAT]:
            raise InputError(f"a snapshot with {', '.join(s.format for s in streams)} streams cannot be restored "
                             "into a directory", "restore it into an engine of its own kind")
        target = self.path
        self.check_restore_target(replace)
        occupied = target.is_dir() and any(target.iterdir())
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.vf-restore-", dir=target.parent))
        except OSError as exc:
            raise StorageUnwritable(f"cannot write next to {target}: {exc.strerror}",
                                    "choose a writable target directory") from None
        owners = os.geteuid() == 0 and not no_owner
        try:
            _consumed(lambda sink: read(streams[0], sink), lambda src: _extract(src, staging, owners))
            _swap_in(staging, target, occupied)
        except BaseException:
            _remove_tree(staging)
            raise


# -- producing the tar ---------------------------------------------------------------


class _HashingReader:
    """Reads a file for tarfile, hashing and counting the bytes handed out."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.digest = blake3.blake3()
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.digest.update(data)
        self.read_bytes += len(data)
        return data


def _mtime_text(ns: int) -> str:
    sign, whole = ("-" if ns < 0 else ""), abs(ns)
    return f"{sign}{whole // 10**9}.{whole % 10**9:09d}"


def _tar_info(entry: TreeEntry) -> tarfile.TarInfo:
    st = entry.st
    info = tarfile.TarInfo(entry.rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = st.st_mtime_ns // 10**9
    info.pax_headers = {"mtime": _mtime_text(st.st_mtime_ns)}
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "link":
        info.type, info.linkname = tarfile.SYMTYPE, entry.link
    else:
        info.type, info.size = tarfile.REGTYPE, st.st_size
    return info


def _write_tar(entries: list[TreeEntry], out: IO[bytes], stats: TreeStats,
               open_file: Callable[[str], BinaryIO]) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = _tar_info(entry)
            if entry.kind != "file":
                tar.addfile(info)
                stats.add(entry, entry.link)
                continue
            try:
                f = open_file(entry.path)
            except OSError as exc:
                raise unreadable_error(entry.path, exc) from None
            with f:
                reader = _HashingReader(f)
                try:
                    tar.addfile(info, reader)
                except OSError as exc:
                    if isinstance(exc, BrokenPipeError):
                        raise
                    if reader.read_bytes < info.size:
                        raise SourceUnreadable(f"{printable(entry.path)} shrank while the backup read it",
                                               "back up again once the tree is quiet") from None
                    raise unreadable_error(entry.path, exc) from None
            stats.add(entry, reader.digest.hexdigest())


@contextmanager
def _produced(produce: Callable[[IO[bytes]], None]) -> Iterator[IO[bytes]]:
    """The bytes `produce` writes, from a thread, as a readable stream; leaving the context
    after the last byte raises what the producer raised."""
    read_fd, write_fd = os.pipe()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out:
                produce(out)
        except BaseException as exc:  # handed to the reading side
            failures.append(exc)

    thread = threading.Thread(target=run, name="vaultflow-files-tar", daemon=True)
    thread.start()
    reader = os.fdopen(read_fd, "rb")
    try:
        yield reader
    finally:
        reader.close()  # a producer still writing gets EPIPE and stops
        thread.join()
    if failures:
        raise failures[0]


# -- restoring the tar ---------------------------------------------------------------


def _consumed(feed: Callable[[IO[bytes]], None], consume: Callable[[IO[bytes]], None]) -> None:
    """Run `consume` on the bytes `feed` writes, through a pipe; raise the consumer's error
    first (it explains a feed cut short), else the feed's."""
    read_fd, write_fd = os.pipe()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with os.fdopen(read_fd, "rb") as src:
                consume(src)
                while src.read(_BLOCK):  # tar padding after the end marker
                    pass
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, name="vaultflow-files-untar", daemon=True)
    thread.start()
    feed_error: BaseException | None = None
    try:
        with os.fdopen(write_fd, "wb") as sink:
            feed(sink)
    except BaseException as exc:
        feed_error = exc
    thread.join()
    if failures and (feed_error is None or isinstance(feed_error, BrokenPipeError)):
        raise failures[0]
    if feed_error is not None:
        raise feed_error


class UnsafeMember(IntegrityError):
    """A tar member that would land outside the restore target, or that vaultflow never writes."""


def _safe_name(member: tarfile.TarInfo) -> str:
    name = member.name.rstrip("/") if member.isdir() else member.name
    if name == ROOT or (member.isdir() and name in ("", "./")):
        return ROOT
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in name:
        raise UnsafeMember(f"the snapshot's tar holds member {member.name!r}, which would land outside the "
                           "restore target", "this stream was not written by vaultflow; nothing was restored")
    return name


def _mtime_ns(member: tarfile.TarInfo) -> int:
    exact = member.pax_headers.get("mtime")
    return int(Decimal(exact).scaleb(9)) if exact else int(member.mtime) * 10**9


def _extract(src: IO[bytes], staging: Path, owners: bool) -> None:
    """Extract a vaultflow-files tar into the empty directory `staging`: every member's
    parent must be a directory member seen before it, so nothing is written through a link
    or outside; directories get their mode and mtime last."""
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    seen: set[str] = set()
    seen_dirs: set[str] = {ROOT}
    try:
        tar = tarfile.open(fileobj=src, mode="r|")
    except tarfile.TarError as exc:
        raise IntegrityError(f"the snapshot's tree stream is not a tar archive: {exc}",
                             "restore another snapshot") from None
    with tar:
        for member in tar:
            rel = _safe_name(member)
            parent = os.path.dirname(rel) or ROOT
            if rel in seen or (rel != ROOT and parent not in seen_dirs):
                raise UnsafeMember(f"the snapshot's tar holds member {member.name!r} twice or before its directory",
                                   "this stream was not written by vaultflow; nothing was restored")
            seen.add(rel)
            dest = str(staging) if rel == ROOT else os.path.join(staging, rel)
            try:
                if member.isdir():
                    if rel != ROOT:
                        os.mkdir(dest, 0o700)
                    seen_dirs.add(rel)
                    dirs.append((dest, member))
                elif member.isreg():
                    _extract_file(tar, member, dest, owners)
                elif member.issym():
                    os.symlink(member.linkname, dest)
                    if owners:
                        os.lchown(dest, member.uid, member.gid)
                    ns = _mtime_ns(member)
                    os.utime(dest, ns=(ns, ns), follow_symlinks=False)
                else:
                    raise UnsafeMember(f"the snapshot's tar holds {member.name!r} of a type vaultflow never writes",
                                       "this stream was not written by vaultflow; nothing was restored")
            except OSError as exc:
                raise StorageUnwritable(f"cannot write {printable(dest)}: {exc.strerror or exc}",
                                        "check the target's file system and permissions") from None
    for dest, member in reversed(dirs):
        if owners:
            os.lchown(dest, member.uid, member.gid)
        os.chmod(dest, member.mode)
        ns = _mtime_ns(member)
        os.utime(dest, ns=(ns, ns))


def _extract_file(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: str, owners: bool) -> None:
    data = tar.extractfile(member)
    assert data is not None  # a regular member always has data
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while block := data.read(_BLOCK):
            out.write(block)
        if owners:
            os.fchown(out.fileno(), member.uid, member.gid)
        os.fchmod(out.fileno(), member.mode)  # after chown, which clears setuid bits
        out.flush()
        ns = _mtime_ns(member)
        os.utime(out.fileno(), ns=(ns, ns))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name, use_errno=True) if name else None
    renameat2 = getattr(libc, "renameat2", None) if libc is not None else None
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if done != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: fall back to two renames
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def _swap_in(staging: Path, target: Path, occupied: bool) -> None:
    """Make `staging` the `target`: a rename over a missing or empty target, else an
    exchange (or, without one, two renames) and removal of the old tree."""
    try:
        if not occupied:
            os.replace(staging, target)
            return
        if _exchange(staging, target):
            _remove_tree(staging)  # now holds the old tree
            return
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.vf-old-", dir=target.parent))
        os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(old, target)
            raise
        _remove_tree(old)
    except OSError as exc:
        raise StorageUnwritable(f"cannot put the restored tree in place at {target}: {exc.strerror or exc}",
                                "check the target's permissions; the old tree is unchanged") from None


def _remove_tree(path: Path) -> None:
    """Remove a tree vaultflow staged, including read-only directories in it."""
    if not os.path.lexists(path):
        return
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                try:
                    os.chmod(full, 0o700)
                except OSError:
                    pass
    shutil.rmtree(path, ignore_errors=True)

