"""What a restore drill found: one result per check, and the verdict."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from vaultflow.errors import VaultflowError

CheckKind = Literal["rows", "checksum", "schema", "expectation"]
CheckStatus = Literal["passed", "failed", "skipped"]


class CheckResult(BaseModel):
    """One check of a restored copy: which kind, on what, the verdict and the two sides."""

    check: CheckKind
    object: str = Field(description="the table, or the kind of schema object")
    name: str = Field(description="what was checked, e.g. 'row count' or an expectation with its column")
    status: CheckStatus
    expected: str | None = None
    observed: str | None = None
    suite: str | None = Field(default=None, description="the expectation suite, for expectations")

    def line(self) -> str:
        detail = f": expected {self.expected}, found {self.observed}" if self.status == "failed" else ""
        suite = f" (suite {self.suite})" if self.suite else ""
        return f"{self.object}: {self.name}{suite} {self.status}{detail}"


class DrillReport(BaseModel):
    """The outcome of one drill. It passed when the restore succeeded, no check failed and
    the scratch database was dropped."""

    snapshot_id: str
    snapshot_taken: datetime
    engine: str
    server: str
    database: str
    scratch_server: str
    scratch_database: str
    started_at: datetime
    finished_at: datetime | None = None
    restore_seconds: float | None = Field(default=None, description="measured recovery time of the restore")
    checks_seconds: float | None = None
    check_seconds: dict[str, float] = Field(default_factory=dict,
                                            description="time per check phase: tables, schema, expectations")
    checks: list[CheckResult] = Field(default_factory=list)
    error: str | None = Field(default=None, description="why the restore or a check could not run")
    scratch_dropped: bool = False
    mark: str | None = Field(default=None, description="a PITR drill: the mark (restore point) recovered to")
    rto_seconds: float | None = Field(default=None, description="a PITR drill: restore start to verified")

    @property
    def short_id(self) -> str:
        return self.snapshot_id[:8]

    @property
    def passed(self) -> bool:
        return self.error is None and self.scratch_dropped and not self.failures()

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "failed"]

    def record_error(self, exc: Exception, where: str) -> None:
        """The drill failed with `exc` (`where`: e.g. "into 127.0.0.1:5432/scratch"): a vaultflow
        error's own line, else the exception's type and first line, so a driver error still ends as
        a failed drill with one readable line."""
        if isinstance(exc, VaultflowError):
            self.error = exc.line()
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            self.error = f"{type(exc).__name__} while drilling {where}: {first[:300]}"

    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "skipped": 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    def summary(self) -> str:
        """One line: the verdict, and the first failure by table and check."""
        head = f"drill of snapshot {self.short_id} ({self.engine} database {self.database!r} on {self.server})"
        if self.mark is not None:
            head = (f"PITR drill of mark {self.mark!r} (base backup {self.short_id} of the cluster on {self.server})"
                    if self.engine == "postgresql" else f"PITR drill of mark {self.mark!r} (snapshot {self.short_id} "
                    f"and binlogs of {self.engine} database {self.database!r} on {self.server})")
            if self.passed:
                n = self.counts()
                return (f"{head} passed: recovered in {self.restore_seconds:.1f} s, RTO {self.rto_seconds:.1f} s, "
                        f"{n['passed']} checks passed")
        if self.passed:
            n = self.counts()
            return (f"{head} passed: restored in {self.restore_seconds:.1f} s, {n['passed']} checks passed"
                    + (f", {n['skipped']} skipped" if n["skipped"] else ""))
        if self.error:
            return f"{head} failed: {self.error}"
        failed = self.failures()
        if failed:
            more = f" (and {len(failed) - 1} more failed check(s))" if len(failed) > 1 else ""
            return f"{head} failed: {failed[0].line()}{more}"
        what = "directory" if self.mark is not None and self.engine == "postgresql" else "database"
        return f"{head} failed: scratch {what} {self.scratch_database!r} could not be removed"


class DrillFailed(VaultflowError):
    """A drill ran and the restored copy is not what was backed up (or could not be made)."""

    @classmethod
    def from_report(cls, report: DrillReport) -> DrillFailed:
        return cls(report.summary(), "the snapshot does not restore as recorded: keep older snapshots, take a new "
                                     "full backup and investigate the failed checks")
