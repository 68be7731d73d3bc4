"""The result of `vaultflow pitr check`, the same for every engine: one check per item, `ok`,
`missing` (point-in-time recovery does not work until it is fixed) or `advisable`, with the
exact statements that fix it and what makes them take effect."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

CheckStatus = Literal["ok", "missing", "advisable"]
Apply = Literal["", "reload", "restart", "config"]  # config: the server's config file


@dataclass(frozen=True)
class PitrCheck:
    """One item: what the server has (`value`), what PITR wants, and how to get there (`fix`:
    statements or commands, in order; `apply`: what makes them take effect)."""

    name: str
    status: CheckStatus
    value: str
    want: str
    fix: tuple[str, ...] = ()
    apply: Apply = ""


@dataclass(frozen=True)
class PitrReadiness:
    """Every check of one server; `ready` when none is missing."""

    server: str
    version: str
    checks: tuple[PitrCheck, ...]
    note: str = ""  # what vaultflow itself does not do yet for this engine

    @property
    def ready(self) -> bool:
        return all(c.status != "missing" for c in self.checks)

    @property
    def needs_restart(self) -> bool:
        return any(c.status != "ok" and c.apply == "restart" for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "version": self.version, "ready": self.ready,
                "needs_restart": self.needs_restart, "checks": [asdict(c) for c in self.checks],
                **({"note": self.note} if self.note else {})}
