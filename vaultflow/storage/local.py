"""Local-filesystem store: one file per object, written atomically."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from vaultflow.errors import StorageFull, StorageUnwritable, VaultflowError
from vaultflow.storage.base import ObjectInfo, ObjectStore, validate_key, validate_prefix


class LocalStore(ObjectStore):
    """Objects as files under `root`; `put` writes a temp file, fsyncs, then renames."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self._unsynced: set[Path] = set()
        self._unsynced_lock = threading.Lock()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
        path = self._path(key)
        try:
            created = self._make_parents(path)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    if sync:
                        os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            if sync:
                self._fsync(path.parent)
                for directory in created:  # a new directory is durable once its parent's entry is
                    self._fsync(directory.parent)
            else:
                with self._unsynced_lock:
                    self._unsynced.add(path)
                    self._unsynced.update(created)
        except OSError as exc:
            raise self._map(exc, key) from None

    def _make_parents(self, path: Path) -> list[Path]:
        """Create the directories above `path`; the ones this call created, deepest first."""
        missing: list[Path] = []
        directory = path.parent
        while directory != self.root.parent and not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        return missing

    def sync(self, keys: Iterable[str] = ()) -> None:
        with self._unsynced_lock:
            pending, self._unsynced = self._unsynced, set()
        pending |= {self._path(k) for k in keys}
        try:
            for path in pending:
                self._fsync(path)
            for directory in {p.parent for p in pending}:
                self._fsync(directory)
        except OSError as exc:
            with self._unsynced_lock:
                self._unsynced |= pending
            raise self._map(exc, "(sync)") from None

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as exc:
            raise self._map(exc, key) from None

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            return ObjectInfo(key, self._path(key).stat().st_size)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._map(exc, key) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        # Walk only the directory the prefix names, then filter by the remaining part.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith(".tmp-")]  # blocks not yet committed
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                full = Path(dirpath, name)
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        st = full.stat()
                        yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
                    except FileNotFoundError:
                        continue

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._map(exc, key) from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with self._path(key).open("rb") as f:
                f.seek(start)
                return f.read(length)
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as exc:
            raise self._map(exc, key) from None

    def _blocks(self, key: str) -> Path:
        """The directory of `key`'s staged blocks, beside it (hidden: keys never start with '.')."""
        path = self._path(key)
        return path.parent / f".tmp-blocks-{path.name}"

    def put_block(self, key: str, index: int, data: bytes) -> None:
        """A file per block, written to a temp name and renamed (a retried block replaces it whole)."""
        blocks = self._blocks(key)
        try:
            blocks.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=blocks, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, blocks / f"{index:08d}")
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise self._map(exc, key) from None

    def commit_blocks(self, key: str, count: int) -> None:
        """Concatenate the blocks into a temp file, fsync, rename over `key`, drop the blocks."""
        path, blocks = self._path(key), self._blocks(key)
        missing = [i for i in range(count) if not (blocks / f"{i:08d}").is_file()]
        if missing:
            raise VaultflowError(f"block {missing[0]} of {key} in {self.root} was never staged")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    for i in range(count):
                        with (blocks / f"{i:08d}").open("rb") as block:
                            shutil.copyfileobj(block, out, 1024 * 1024)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._fsync(path.parent)
        except OSError as exc:
            raise self._map(exc, key) from None
        shutil.rmtree(blocks, ignore_errors=True)

    def discard_blocks(self, key: str) -> None:
        shutil.rmtree(self._blocks(key), ignore_errors=True)

    @staticmethod
    def _fsync(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _map(self, exc: OSError, key: str) -> VaultflowError:
        where = f"{self.root}/{key}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull(
                f"no space left on the repository storage writing {where}",
                "free space or move the repository; the interrupted backup left no snapshot",
            )
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
            return StorageUnwritable(
                f"repository path {self.root} is not writable ({exc.strerror})",
                "fix its permissions or choose another --repo",
            )
        return VaultflowError(f"storage error on {where}: {exc.strerror}")
