"""Restore drills: prove that a snapshot restores, with row counts, checksums, schema
objects and expectation suites. Imports nothing from Prefect."""

from vaultflow.drill.report import CheckResult, DrillFailed, DrillReport
from vaultflow.drill.run import latest_snapshots, plan_expectations, run_drill, scratch_name
from vaultflow.drill.suites import ExpectationSpec, UserSuite, load_suites

__all__ = [
    "CheckResult",
    "DrillFailed",
    "DrillReport",
    "ExpectationSpec",
    "UserSuite",
    "latest_snapshots",
    "load_suites",
    "plan_expectations",
    "run_drill",
    "scratch_name",
]
