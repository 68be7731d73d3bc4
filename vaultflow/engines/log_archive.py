"""The hook through which prune and verify treat an engine's archived change log (PostgreSQL WAL
under `wal/`, MySQL/MariaDB binlogs under `binlog/`) without the core importing the engine.

An engine whose `EngineSpec.log_archive` names a `LogArchive` ("module:attribute", imported on
first use) is asked two things, both from the repository alone:

- `expendable(repo, kept)`: the archived log objects no snapshot in `kept` needs for a
  point-in-time restore (what a prune may delete), plus a note per cluster or server whose log is
  kept whole because no kept snapshot anchors it;
- `problems(repo, manifests, deep)`: the gaps that cut a recoverable window short (each naming the
  first missing file and the time it cuts off), and with `deep` every archived object that fails
  to open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from vaultflow.engines.registry import engines

if TYPE_CHECKING:
    from vaultflow.repository.manifest import SnapshotManifest
    from vaultflow.repository.repository import Repository


@dataclass
class LogRetention:
    """What one engine's archive can lose: object key -> stored size, and why some stays."""

    expendable: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # "cluster 7123...: no kept base backup, its WAL is kept"

    def merge(self, other: LogRetention) -> None:
        self.expendable.update(other.expendable)
        self.notes.extend(other.notes)


@dataclass(frozen=True)
class LogProblem:
    """One gap or damaged object in an archived log: `archive` names the cluster or server, `first` the
    first missing or damaged file, `message` says what recovery loses (one line)."""

    engine: str
    archive: str
    first: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"engine": self.engine, "archive": self.archive, "first": self.first, "message": self.message}


class LogArchive(Protocol):
    """An engine's archived change log, as prune and verify see it."""

    def expendable(self, repo: Repository, kept: list[SnapshotManifest]) -> LogRetention:
        """The archived objects no snapshot of `kept` needs; deletes nothing."""

    def problems(self, repo: Repository, manifests: list[SnapshotManifest], *, deep: bool) -> list[LogProblem]:
        """The gaps (and with `deep`, the objects that fail to open) of every archive in `repo`."""


def log_archives() -> list[tuple[str, LogArchive]]:
    """(engine name, hook) of every engine that archives a change log; imports those hooks only."""
    return [(s.name, cast("LogArchive", s.log_archive_hook())) for s in engines() if s.log_archive]


def log_retention(repo: Repository, kept: list[SnapshotManifest]) -> LogRetention:
    """Every engine's expendable archived log objects given the snapshots that stay."""
    found = LogRetention()
    for _name, hook in log_archives():
        found.merge(hook.expendable(repo, kept))
    return found


def log_problems(repo: Repository, manifests: list[SnapshotManifest], *, deep: bool = False) -> list[LogProblem]:
    """Every engine's log gaps (and, deep, damaged log objects)."""
    return [p for _name, hook in log_archives() for p in hook.problems(repo, manifests, deep=deep)]
