"""PITR drills: `pitr-drill` marks a PostgreSQL cluster (when given its server) and recovers it to
the mark, or to the newest mark, in a scratch data directory; recorded like restore drills
(catalog drill row, `vaultflow.drill.*` event, markdown artifact)."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from blocks.parameters import RepositoryChoice
from tasks.drill import record_drill
from tasks.pitr_drill import drill_mark, mark_cluster
from tasks.reporting import drill_row, publish_drill_report
from vaultflow.drill import DrillFailed
from vaultflow.errors import InputError


@flow(name="pitr-drill", validate_parameters=True)
def pitr_drill(
    cluster: Annotated[str | None, Field(description="System identifier, host:port or base backup id of the "
                                                     "cluster; the cluster of `source` if empty")] = None,
    repository: Annotated[RepositoryChoice | None, Field(
        description="BackupRepository block (or its name) or a local path; VAULTFLOW_REPO if empty")] = None,
    source: Annotated[str | None, Field(
        description="PostgresServer block or postgresql:// URL: make a new mark there first and drill it")] = None,
    mark: Annotated[str | None, Field(description="The mark to make (with source) or drill; default: "
                                                  "vaultflow-<time> / the newest")] = None,
    lock_timeout: Annotated[float, Field(gt=0, le=600, description="Seconds to wait for table locks")] = 10.0,
    archive_wait_seconds: Annotated[float, Field(gt=0, le=3600, description="Seconds to wait, after marking, for "
                                                                            "the mark's WAL segment to be archived")]
    = 120.0,
    wal_command: Annotated[str | None, Field(description="vaultflow-wal the scratch server runs")] = None,
    wal_repository: Annotated[str | None, Field(
        description="The repository path or URL vaultflow-wal reads (default: the repository's location)")] = None,
    scratch_dir: Annotated[str | None, Field(description="Where the scratch directory is made")] = None,
    bin_dir: Annotated[str | None, Field(description="PostgreSQL bin directory of the backup's major")] = None,
    user: Annotated[str, Field(description="Role that reads the scratch server's tables")] = "postgres",
) -> dict[str, object]:
    """Mark (when `source` is set, then wait until the mark's WAL is in the repository), recover to the mark
    in a scratch directory on a free port, compare every table of every database with the mark, remove the
    directory; the run fails naming the first differing table."""
    name: str | None = mark
    if source:
        made = mark_cluster(repository, source, mark, lock_timeout, archive_wait_seconds)
        name, cluster = made.name, cluster or str(made.system_identifier)
    elif cluster is None:
        raise InputError("a PITR drill needs the cluster to drill, or a source server to mark first",
                         "set cluster (system identifier, host:port or base backup id) or source")
    report = drill_mark(repository, cluster, name, wal_command, wal_repository, scratch_dir, bin_dir, user)
    record_drill(repository, report)
    publish_drill_report(report)
    if not report.passed:
        raise DrillFailed.from_report(report)
    return drill_row(report) | {"mark": report.mark, "rto_s": report.rto_seconds}
