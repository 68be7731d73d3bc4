"""Progress of long streams, reported to whoever listens (a terminal bar, an artifact)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vaultflow.errors import OperationStopped


@dataclass(frozen=True)
class ProgressReport:
    operation: str
    subject: str
    bytes_read: int
    bytes_stored: int
    total: int | None
    elapsed: float
    done: bool = False

    @property
    def rate(self) -> float:
        return self.bytes_read / self.elapsed if self.elapsed > 0 else 0.0


Listener = Callable[[ProgressReport], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def add_listener(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


class ProgressMeter:
    """Turns (read, stored) callbacks into throttled reports to all listeners."""

    def __init__(self, operation: str, subject: str, total: int | None = None,
                 every: float = 0.2, stop: threading.Event | None = None) -> None:
        """`stop`, once set, makes the next report raise OperationStopped, which ends the
        operation reporting to this meter (a cancelled fleet run stops its dumps this way)."""
        self.operation = operation
        self.stop = stop
        self.subject = subject
        self.total = total
        self.every = every
        self.started = time.monotonic()
        self._last = 0.0
        self.read = 0
        self.stored = 0

    def __call__(self, bytes_read: int, bytes_stored: int) -> None:
        if self.stop is not None and self.stop.is_set():
            raise OperationStopped(f"{self.operation} of {self.subject} stopped: its run was cancelled",
                                   "nothing of it was kept; run it again")
        self.read, self.stored = bytes_read, bytes_stored
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._emit(done=False)

    def finish(self) -> None:
        self._emit(done=True)

    def _emit(self, done: bool) -> None:
        report = ProgressReport(self.operation, self.subject, self.read, self.stored, self.total,
                                time.monotonic() - self.started, done)
        with _lock:
            listeners = list(_listeners)
        for listener in listeners:
            listener(report)
