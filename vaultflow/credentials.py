"""Credential expiry: which repositories' storage credentials expire soon (Azure SAS today)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

ExpiryStatus = Literal["expired", "expiring", "ok", "no-expiry"]


@dataclass(frozen=True)
class CredentialExpiry:
    repository: str
    location: str
    kind: str
    expires_at: datetime | None
    status: ExpiryStatus

    def as_dict(self) -> dict[str, object]:
        return {"repository": self.repository, "location": self.location, "kind": self.kind,
                "expires_at": self.expires_at.isoformat() if self.expires_at else None, "status": self.status}

    def line(self) -> str:
        """One line for a person: what expires, where, when, what to do."""
        if self.status in ("ok", "no-expiry"):
            when = f"until {self.expires_at:%Y-%m-%d %H:%M} UTC" if self.expires_at else "without a known expiry"
            return f"{self.kind} of {self.repository} ({self.location}) is valid {when}"
        verb = "expired" if self.status == "expired" else "expires"
        return (f"{self.kind} of {self.repository} ({self.location}) {verb} at {self.expires_at:%Y-%m-%d %H:%M} "
                "UTC; generate a new one and update the block")


def classify(repository: str, location: str, kind: str, expires_at: datetime | None, *, now: datetime,
             within: timedelta) -> CredentialExpiry:
    """`expired` at or after the expiry, `expiring` within `within` of it, else `ok`."""
    if expires_at is None:
        status: ExpiryStatus = "no-expiry"
    elif expires_at <= now:
        status = "expired"
    elif expires_at <= now + within:
        status = "expiring"
    else:
        status = "ok"
    return CredentialExpiry(repository, location, kind, expires_at, status)
