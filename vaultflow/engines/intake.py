"""What the long-running intake services (`wal-receive`, `binlog-stream`) share: the health
report each sends (the CLI turns it into log lines and Prefect events) and the back-off
between restarts of their tool."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

IntakeEvent = Literal["started", "restarted", "healthy", "slot-retaining", "gap", "warning", "stopped"]


@dataclass(frozen=True)
class IntakeHealth:
    """One health report: what happened, a one-line detail, and the counts so far
    (`retained_bytes`: WAL a replication slot holds back, for slot-retaining)."""

    event: IntakeEvent
    detail: str
    archived: int
    restarts: int
    retained_bytes: int | None = None


HealthReport = Callable[[IntakeHealth], None]


class RestartBackoff:
    """Seconds to wait before starting the tool again: 1 s, doubling to 30 s, and 1 s again
    after a run that lasted over 30 s (a fresh failure, not the same one again)."""

    FIRST, MOST, SETTLED = 1.0, 30.0, 30.0

    def __init__(self) -> None:
        self._next = self.FIRST

    def after(self, ran_for: float) -> float:
        if ran_for > self.SETTLED:
            self._next = self.FIRST
        delay, self._next = self._next, min(self._next * 2, self.MOST)
        return delay
