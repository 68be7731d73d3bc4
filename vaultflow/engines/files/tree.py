"""Walking a directory tree: sorted, never following symlinks, with include/exclude globs,
a change fingerprint and per-top-level-directory statistics.

Entries are named by their path relative to the root, with "/" separators; the root
itself is ".". Sockets, FIFOs and device files are skipped with a warning: they hold no
content a backup could keep.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import blake3

from vaultflow.errors import DatabaseNotFound, SourceUnreadable
from vaultflow.repository.manifest import TableStats

_log = logging.getLogger(__name__)

EntryKind = Literal["dir", "file", "link"]
ROOT = "."
ROOT_GROUP = "."  # the statistics entry of the files and links directly in the root
CHECKSUM_PREFIX = "tree-b3"


@dataclass(frozen=True)
class TreeEntry:
    """One directory, regular file or symlink of the tree, as lstat saw it during the walk."""

    rel: str
    path: str
    kind: EntryKind
    st: os.stat_result
    link: str = ""  # the symlink's target, as stored in the link

    @property
    def group(self) -> str:
        """The statistics entry this entry counts in: its top-level directory, or ROOT_GROUP."""
        head, sep, _ = self.rel.partition("/")
        return head if sep or self.kind == "dir" else ROOT_GROUP


def printable(name: str) -> str:
    """A file name as text that can be stored in JSON: undecodable bytes as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def unreadable_error(path: str, exc: OSError) -> SourceUnreadable:
    if isinstance(exc, PermissionError):
        return SourceUnreadable(f"cannot read {printable(path)}: permission denied",
                                "grant the backup's user read access to it, leave it out with --exclude-table, "
                                "or pass --skip-unreadable")
    if isinstance(exc, FileNotFoundError):
        return SourceUnreadable(f"{printable(path)} disappeared while the backup read the tree",
                                "back up again once the tree is quiet")
    return SourceUnreadable(f"cannot read {printable(path)}: {exc.strerror or exc}", "check the file and back up again")


def _matches(rel: str, patterns: list[str]) -> bool:
    """A glob with a "/" matches the relative path; one without matches any path's last name."""
    name = posixpath.basename(rel)
    return any(fnmatch.fnmatchcase(rel, p.strip("/")) if "/" in p.strip("/") else fnmatch.fnmatchcase(name, p)
               for p in patterns)


def walk_tree(root: str, exclude: list[str] | None = None, unreadable: list[str] | None = None
              ) -> Iterator[TreeEntry]:
    """Every entry under `root`, the root first, each directory's names in sorted order;
    an excluded directory is not entered. Raises DatabaseNotFound for a missing root and
    SourceUnreadable for a root that cannot be read. Below the root, an entry refused with
    permission denied (a directory that cannot be listed, a name that cannot be looked up)
    is left out and its path appended to `unreadable`; without that list it raises
    SourceUnreadable."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise DatabaseNotFound(f"directory {root} does not exist", "check the path in the file:// URL") from None
    except OSError as exc:
        raise unreadable_error(root, exc) from None
    if not stat.S_ISDIR(st.st_mode):
        raise DatabaseNotFound(f"{root} is not a directory", "give the directory to back up in the file:// URL")
    try:
        names = _listing(root)
    except OSError as exc:
        raise unreadable_error(root, exc) from None
    yield TreeEntry(ROOT, root, "dir", st)
    yield from _walk_dir(root, "", names, exclude or [], unreadable)


def _listing(path: str) -> list[str]:
    with os.scandir(path) as listing:
        return sorted(e.name for e in listing)


def _refused(full: str, rel: str, exc: OSError, unreadable: list[str] | None) -> None:
    """Note `rel` as unreadable when permission was denied and a list is kept, else raise."""
    if not isinstance(exc, PermissionError) or unreadable is None:
        raise unreadable_error(full, exc) from None
    unreadable.append(printable(rel))


def _walk_dir(path: str, prefix: str, names: list[str], exclude: list[str], unreadable: list[str] | None
              ) -> Iterator[TreeEntry]:
    for name in names:
        rel = prefix + name
        if exclude and _matches(rel, exclude):
            continue
        full = os.path.join(path, name)
        try:
            st = os.lstat(full)
            link = os.readlink(full) if stat.S_ISLNK(st.st_mode) else ""
            below = _listing(full) if stat.S_ISDIR(st.st_mode) else []
        except OSError as exc:
            _refused(full, rel, exc, unreadable)
            continue
        if stat.S_ISDIR(st.st_mode):
            yield TreeEntry(rel, full, "dir", st)
            yield from _walk_dir(full, rel + "/", below, exclude, unreadable)
        elif stat.S_ISREG(st.st_mode):
            yield TreeEntry(rel, full, "file", st)
        elif stat.S_ISLNK(st.st_mode):
            yield TreeEntry(rel, full, "link", st, link)
        else:
            _log.warning("skipping %s: sockets, FIFOs and device files are not backed up", full)


def select_included(entries: list[TreeEntry], include: list[str] | None) -> list[TreeEntry]:
    """The entries matching an include glob, everything below a matching directory, and
    the directories that hold them (the root always); all entries without globs."""
    if not include:
        return entries
    kept: set[str] = {ROOT}
    taken_dirs: set[str] = set()
    for entry in entries:
        if entry.rel == ROOT:
            continue
        parent = posixpath.dirname(entry.rel)
        if parent in taken_dirs or _matches(entry.rel, include):
            if entry.kind == "dir":
                taken_dirs.add(entry.rel)
            rel = entry.rel
            while rel and rel not in kept:
                kept.add(rel)
                rel = posixpath.dirname(rel)
    return [e for e in entries if e.rel in kept]


def included_path(rel: str, include: list[str] | None) -> bool:
    """Whether select_included keeps the entry `rel` (or everything, without globs)."""
    if not include:
        return True
    parts = rel.split("/")
    return any(_matches("/".join(parts[:n]), include) for n in range(1, len(parts) + 1))


def fingerprint(root: str) -> str:
    """BLAKE3 over path, size, mtime, ctime, mode and owner of every entry, and the paths
    that could not be read: equal only if no entry was added, removed, written or changed
    (writing a file or changing its permissions moves its ctime)."""
    digest = blake3.blake3()
    refused: list[str] = []
    for e in walk_tree(root, unreadable=refused):
        s = e.st
        digest.update(f"{e.rel}\0{s.st_size}\0{s.st_mtime_ns}\0{s.st_ctime_ns}\0{s.st_mode:o}\0"
                      f"{s.st_uid}:{s.st_gid}\0{e.link}\n".encode("utf-8", "surrogateescape"))
    for rel in refused:
        digest.update(f"unreadable\0{rel}\n".encode())
    return "files:" + digest.hexdigest()[:32]


def drop_unopenable(entries: list[TreeEntry], unreadable: list[str]) -> list[TreeEntry]:
    """`entries` without the regular files this process may not open for reading (their
    paths appended to `unreadable`): checked by opening each, so modes, ACLs and mandatory
    access controls all count. Other failures raise SourceUnreadable."""
    kept: list[TreeEntry] = []
    for entry in entries:
        if entry.kind == "file":
            try:
                os.close(os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC))
            except OSError as exc:
                _refused(entry.path, entry.rel, exc, unreadable)
                continue
        kept.append(entry)
    return kept


@dataclass
class _Group:
    entries: int = 0
    size: int = 0
    digest: blake3.blake3 = field(default_factory=blake3.blake3)


class TreeStats:
    """Statistics of one tree, fed entry by entry in walk order: per top-level directory
    (and ROOT_GROUP), the entry count as `rows` and a checksum `tree-b3:<bytes>:<hex>`
    over every entry's path, kind, mode, size, mtime and content (or link target).
    Owners are left out: only a restore run as root can keep them."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}

    def add(self, entry: TreeEntry, content: str) -> None:
        """Count `entry`; `content` is the file's BLAKE3 hex, the link's target, or "" for a directory."""
        if entry.rel == ROOT:
            return
        group = self._groups.setdefault(entry.group, _Group())
        size = entry.st.st_size if entry.kind == "file" else 0
        group.entries += 1
        group.size += size
        group.digest.update(f"{entry.rel}\0{entry.kind}\0{stat.S_IMODE(entry.st.st_mode):o}\0{size}\0"
                            f"{entry.st.st_mtime_ns}\0{content}\n".encode("utf-8", "surrogateescape"))

    def table_stats(self) -> list[TableStats]:
        """One entry per group; a name that is not UTF-8 shows its odd bytes as \\xNN."""
        return [TableStats(schema="", name=printable(name), rows=g.entries,
                           checksum=f"{CHECKSUM_PREFIX}:{g.size}:{g.digest.hexdigest()}")
                for name, g in sorted(self._groups.items())]


def file_digest(path: str) -> str:
    """BLAKE3 hex of a file's bytes; SourceUnreadable if it cannot be read."""
    digest = blake3.blake3()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise unreadable_error(path, exc) from None
    return digest.hexdigest()


def tree_stats(root: str) -> list[TableStats]:
    """The statistics of the tree under `root` now (reads every file)."""
    stats = TreeStats()
    for entry in walk_tree(root):
        stats.add(entry, file_digest(entry.path) if entry.kind == "file" else entry.link)
    return stats.table_stats()
