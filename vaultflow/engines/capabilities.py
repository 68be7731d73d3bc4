"""What an engine can do, declared once per engine and asked by the CLI, flows and core.

An engine's `Capabilities` replace checks of the engine's kind: a caller asks
`capabilities.require("table_restore", ...)` and gets one line naming the engine and the
alternative when the engine lacks it. Nothing here imports an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from vaultflow.errors import InputError

CapabilityName = Literal[
    "change_fingerprint", "table_subsets", "table_restore", "parallel_restore", "globals", "drills",
    "expectations", "segment_patches", "archival", "server_locale", "discovery", "export", "pitr",
    "skip_unreadable",
]


class CapabilityMissing(InputError):
    """The engine does not have what the command needs (exit 2, not retried)."""


@dataclass(frozen=True)
class ExportFormat:
    """What `vaultflow export` writes for a snapshot of this engine, and how to load it."""

    kind: str  # "plain SQL script", "SQLite database file", ...
    suffix: str  # a file name suffix for the export object: ".sql", ".db", ".bak"
    hint: str  # the command that restores the exported file


@dataclass(frozen=True)
class Capabilities:
    """The optional parts of the engine contract this engine implements.

    Every engine backs up, restores into a new database and reports table statistics;
    the fields name what goes beyond that. A False field means the method behind it
    refuses, and `require` says so before anything is started.
    """

    change_fingerprint: bool = False  # fingerprint() can tell "unchanged": incrementals skip the dump
    table_subsets: bool = False  # --include-table / --exclude-table on backup
    table_restore: bool = False  # restore --table
    parallel_restore: bool = False  # restore --jobs loads several tables at once
    globals: bool = False  # --globals: the server's roles/users with a backup
    drills: bool = False  # can host a drill's scratch database (create, drop)
    expectations: bool = False  # Great Expectations suites through SQLAlchemy
    segment_patches: bool = False  # big tables stored as key ranges, changed ranges as patches
    archival: bool = False  # archive aged rows (vaultflow/archive)
    server_locale: bool = False  # restore --server-locale: the server's encoding/locale instead of the snapshot's
    discovery: bool = False  # lists the databases of a server
    export: ExportFormat | None = None  # vaultflow export of a snapshot
    pitr: str | None = None  # point-in-time recovery method ("wal", "binlog"); None: not built
    skip_unreadable: bool = False  # backup --skip-unreadable: entries it may not read are left out, listed

    def has(self, name: CapabilityName) -> bool:
        return bool(getattr(self, name))

    def require(self, name: CapabilityName, engine_title: str, alternative: str) -> None:
        """Raise CapabilityMissing naming the engine and `alternative` when `name` is missing."""
        if not self.has(name):
            raise CapabilityMissing(f"{engine_title} does not support {_WHAT[name]}", alternative)

    def declared(self) -> list[str]:
        """The names of the capabilities this engine has, for docs and `vaultflow engines`."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


_WHAT: dict[str, str] = {
    "change_fingerprint": "change fingerprints (every incremental dumps again)",
    "table_subsets": "backing up a subset of tables (--include-table/--exclude-table)",
    "table_restore": "restoring chosen tables (--table)",
    "parallel_restore": "parallel restores (--jobs)",
    "globals": "server-wide roles and users (--globals)",
    "drills": "hosting restore drills",
    "expectations": "expectation suites",
    "segment_patches": "segment patches",
    "archival": "row archival",
    "server_locale": "--server-locale",
    "discovery": "listing a server's databases",
    "export": "export of a snapshot to a file",
    "pitr": "point-in-time recovery",
    "skip_unreadable": "leaving out unreadable entries (--skip-unreadable)",
}
