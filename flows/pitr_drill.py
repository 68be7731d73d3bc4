"""PITR drills: `pitr-drill` marks a PostgreSQL cluster (when given its server) and recovers it to
the mark, or to the newest mark, in a scratch data directory; for a MySQL/MariaDB database
(mysql://.../db as `cluster` or `source`) it restores to the mark in a vaultflow_drill_* database.
Recorded like restore drills (catalog drill row, `vaultflow.drill.*` event, markdown artifact)."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from blocks.parameters import RepositoryChoice
from tasks.drill import record_drill
from tasks.pitr_drill import drill_binlog_mark, drill_mark, mark_cluster, mark_database, mysql_database
from tasks.reporting import drill_row, publish_drill_report
from vaultflow.drill import DrillFailed, DrillReport
from vaultflow.errors import InputError


@flow(name="pitr-drill", validate_parameters=True)
def pitr_drill(
    cluster: Annotated[str | None, Field(description="System identifier, host:port or base backup id of the "
                                                     "cluster; the cluster of `source` if empty; or a "
                                                     "MySQL/MariaDB database: mysql://user@host:port/db")] = None,
    repository: Annotated[RepositoryChoice | None, Field(
        description="BackupRepository block (or its name) or a local path; VAULTFLOW_REPO if empty")] = None,
    source: Annotated[str | None, Field(
        description="PostgresServer block or postgresql:// URL (or mysql://.../db): make a new mark there first "
                    "and drill it")] = None,
    mark: Annotated[str | None, Field(description="The mark to make (with source) or drill; default: "
                                                  "vaultflow-<time> / the newest")] = None,
    lock_timeout: Annotated[float, Field(gt=0, le=600, description="Seconds to wait for table locks")] = 10.0,
    archive_wait_seconds: Annotated[float, Field(gt=0, le=3600, description=(
        "Seconds to wait, after marking, for the mark's WAL segment (or binlog) to be archived"))] = 120.0,
    wal_command: Annotated[str | None, Field(description="vaultflow-wal the scratch server runs")] = None,
    wal_repository: Annotated[str | None, Field(
        description="The repository path or URL vaultflow-wal reads (default: the repository's location)")] = None,
    scratch_dir: Annotated[str | None, Field(description="Where the scratch directory is made")] = None,
    bin_dir: Annotated[str | None, Field(description="PostgreSQL bin directory of the backup's major")] = None,
    user: Annotated[str, Field(description="Role that reads the scratch server's tables")] = "postgres",
    scratch: Annotated[str | None, Field(description="MySQL/MariaDB: the server of the scratch database "
                                                     "(default: the database's own)")] = None,
) -> dict[str, object]:
    """Mark (when `source` is set, then wait until the mark's WAL is in the repository), recover to the mark
    in a scratch directory on a free port, compare every table of every database with the mark, remove the
    directory; the run fails naming the first differing table. A MySQL/MariaDB database: the snapshot
    before the mark and the binlogs up to it in a scratch database, compared and dropped (binlog-stream
    must have stored the mark's position: the drill does not wait for it)."""
    name: str | None = mark
    database = cluster if mysql_database(cluster) else source if mysql_database(source) else None
    if database is not None:  # a MySQL/MariaDB database: its binlog position, not a WAL restore point
        if source:
            name = mark_database(repository, source, mark, archive_wait_seconds)
        report = drill_binlog_mark(repository, database, name, scratch)
        return _recorded(repository, report)
    if source:
        made = mark_cluster(repository, source, mark, lock_timeout, archive_wait_seconds)
        name, cluster = made.name, cluster or str(made.system_identifier)
    elif cluster is None:
        raise InputError("a PITR drill needs the cluster to drill, or a source server to mark first",
                         "set cluster (system identifier, host:port or base backup id) or source")
    report = drill_mark(repository, cluster, name, wal_command, wal_repository, scratch_dir, bin_dir, user)
    return _recorded(repository, report)


def _recorded(repository: RepositoryChoice | None, report: DrillReport) -> dict[str, object]:
    """The drill row, the artifact and the event; the run fails when the drill did."""
    record_drill(repository, report)
    publish_drill_report(report)
    if not report.passed:
        raise DrillFailed.from_report(report)
    return drill_row(report) | {"mark": report.mark, "rto_s": report.rto_seconds}
