"""Repository locks: many shared holders (backup, restore, verify) or one exclusive (prune).

A lock is a sealed object `locks/<id>` naming its holder. Taking one: write ours, then list
the others; if one conflicts and is not stale, remove ours and fail (or wait and try again).
A holder refreshes its lock every REFRESH seconds; a lock is stale when it was not
refreshed for STALE seconds, or when its process is gone from this host.

A refresh writes a new object under a new id, then deletes the one before, so no key is
ever written twice (object-locked repositories overwrite nothing in place), and a listing
always finds at least one object of a live holder. Lock objects are written without object
lock retention (`UNLOCKED_PREFIXES`) and deleted as usual: a lock protects no data, and a
lost one only lets prune start sooner, which R21's shared-lock check covers.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Literal

from vaultflow.errors import TransientError
from vaultflow.repository.crypto import SealError
from vaultflow.repository.repository import Repository, new_object_id

LockKind = Literal["shared", "exclusive"]
LOCK_PREFIX = "locks/"
REFRESH = 60.0
STALE = 300.0


class RepositoryLocked(TransientError):
    """Another process holds a conflicting lock."""


@dataclass(frozen=True)
class LockInfo:
    id: str
    kind: LockKind
    purpose: str
    hostname: str
    pid: int
    refreshed: float

    def is_stale(self, now: float) -> bool:
        if now - self.refreshed > STALE:
            return True
        if self.hostname == host_identity():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def conflicts_with(self, kind: LockKind) -> bool:
        return self.kind == "exclusive" or kind == "exclusive"

    def describe(self) -> str:
        return f"{self.kind} lock of {self.purpose} (pid {self.pid} on {self.hostname.split('/')[0]})"


def host_identity() -> str:
    """Host name, kernel boot id and pid namespace: a pid means the same process only if
    all three match (containers may share a host name but not their pids)."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)


def _aad(lock_id: str) -> bytes:
    return b"lock:" + lock_id.encode()


def list_locks(repo: Repository) -> list[LockInfo]:
    out = []
    for info in repo.store.list(LOCK_PREFIX):
        lock_id = info.key[len(LOCK_PREFIX):]
        try:
            data = repo.sealer.open(repo.store.get(info.key), _aad(lock_id))
        except (KeyError, SealError):
            continue  # removed meanwhile, or not ours to read: ignore
        out.append(LockInfo(**json.loads(data)))
    return out


def remove_stale_locks(repo: Repository) -> int:
    now = time.time()
    stale = [lock for lock in list_locks(repo) if lock.is_stale(now)]
    for lock in stale:
        repo.store.delete(LOCK_PREFIX + lock.id)
    return len(stale)


class RepositoryLock:
    """Hold a lock for the duration of a `with` block; refreshed in the background."""

    def __init__(self, repo: Repository, kind: LockKind, purpose: str, *, wait: float = 0.0) -> None:
        self.repo = repo
        self.kind = kind
        self.purpose = purpose
        self.wait = wait
        self.info: LockInfo | None = None
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def _write(self, info: LockInfo) -> None:
        payload = json.dumps(asdict(info)).encode()
        self.repo.store.put(LOCK_PREFIX + info.id, self.repo.sealer.seal(payload, _aad(info.id)))

    def acquire(self) -> RepositoryLock:
        deadline = time.monotonic() + self.wait
        while True:
            info = LockInfo(id=new_object_id(), kind=self.kind, purpose=self.purpose,
                            hostname=host_identity(), pid=os.getpid(), refreshed=time.time())
            self._write(info)
            now = time.time()
            blockers = [lock for lock in list_locks(self.repo)
                        if lock.id != info.id and lock.conflicts_with(self.kind) and not lock.is_stale(now)]
            if not blockers:
                self.info = info
                self._refresher = threading.Thread(target=self._refresh, daemon=True,
                                                   name="vf-lock-refresh")
                self._refresher.start()
                return self
            self.repo.store.delete(LOCK_PREFIX + info.id)
            if time.monotonic() >= deadline:
                raise RepositoryLocked(
                    f"repository at {self.repo.store.describe()} is locked: {blockers[0].describe()}",
                    "wait for it to finish and try again (a crashed holder's lock expires by itself)",
                )
            time.sleep(min(1.0 + random.random(), max(deadline - time.monotonic(), 0.05)))

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH):
            if self.info is not None and not self._stop.is_set():
                self.refresh()

    def refresh(self) -> None:
        """Write the lock anew under a new id, then delete the previous object; a failed write
        keeps the old one (retried next round), a failed delete leaves it to go stale."""
        old = self.info
        if old is None:
            return
        new = LockInfo(**{**asdict(old), "id": new_object_id(), "refreshed": time.time()})
        try:
            self._write(new)
        except Exception:  # noqa: BLE001 - a missed refresh is retried next round
            return
        self.info = new
        try:
            self.repo.store.delete(LOCK_PREFIX + old.id)
        except Exception:  # noqa: BLE001 - it ages into a stale lock and is removed then
            pass

    def check_held(self) -> None:
        """Raise unless our lock object still exists (it can vanish if another host took it
        for stale, e.g. after refreshes failed); call before writing what the lock protects."""
        if self.info is None or not self.repo.store.exists(LOCK_PREFIX + self.info.id):
            raise RepositoryLocked(
                f"this run lost its lock on the repository at {self.repo.store.describe()}",
                "run it again; nothing was recorded",
            )

    def release(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=120)  # a refresh written after our delete would orphan the lock
        if self.info is not None:
            self.repo.store.delete(LOCK_PREFIX + self.info.id)
            self.info = None

    def __enter__(self) -> RepositoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
