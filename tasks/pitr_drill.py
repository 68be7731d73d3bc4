"""PITR drill tasks: mark a cluster or a MySQL/MariaDB database, drill a mark (the core's pitr_mark,
pitr_drill and binlog_mark, as they are)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.resolve import resolve_engine, resolve_repository, resolve_server
from tasks.retry_policy import RETRIED
from vaultflow.drill import DrillReport
from vaultflow.engines import is_database_url
from vaultflow.engines.mysql.engine import MySQLEngine
from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.pitr_drill import pick_mark, run_pitr_drill
from vaultflow.engines.postgres.pitr_mark import PitrMark, archive_mark_wal, create_mark
from vaultflow.errors import InputError

if TYPE_CHECKING:
    from blocks.parameters import RepositoryChoice


def mysql_database(ref: str | None) -> MySQLEngine | None:
    """The MySQL/MariaDB database `ref` names (mysql://user@host:port/db, or MySQLServer-block/db); None
    for anything else (a PostgreSQL server or cluster: system identifier, host:port, snapshot id)."""
    if not ref:
        return None
    if is_database_url(ref):
        if not ref.startswith(("mysql://", "mariadb://")):
            return None
    elif "/" not in ref:
        return None
    else:
        try:
            if not isinstance(resolve_server(ref.partition("/")[0]), MySQLEngine):
                return None
        except InputError:
            return None
    engine = resolve_engine(ref)
    assert isinstance(engine, MySQLEngine)
    if not engine.conn.database:
        raise InputError(f"{ref} names no MySQL/MariaDB database; its PITR marks and drills are per database",
                         "give mysql://user@host:port/database (or block/database)")
    return engine


@task(name="pitr-mark-binlog", persist_result=False, cache_policy=NO_CACHE)
def mark_database(repository: RepositoryChoice | None, database: str, name: str | None,
                  archive_wait_seconds: float = 120.0) -> str:
    """A MySQL/MariaDB database's tables and binlog position in one transaction snapshot, then a wait
    until binlog-stream stored the binlog up to it, so the drill can reach it at once (not retried: a
    second try would make a second mark); returns the mark's name."""
    from vaultflow.engines.mysql.binlog_mark import archive_mark_binlog, create_binlog_mark

    engine = mysql_database(database)
    assert engine is not None
    repo = resolve_repository(repository).open()
    made = create_binlog_mark(engine, repo, name)
    get_run_logger().info("mark %r of %r at %s:%d (GTID %s): %d tables", made.name, made.database,
                          made.binlog.file, made.binlog.position, made.binlog.gtid or "-", len(made.tables))
    archive_mark_binlog(engine, repo, made, archive_wait_seconds)
    return made.name


@task(name="pitr-mark", persist_result=False, cache_policy=NO_CACHE)
def mark_cluster(repository: RepositoryChoice | None, source: str, name: str | None, lock_timeout: float,
                 archive_wait_seconds: float) -> PitrMark:
    """A restore point and every table's statistics at it, then a WAL switch and a wait until the
    mark's segment is in the repository, so the drill can reach it at once (not retried: a second try
    would make a second restore point)."""
    engine = resolve_server(source)
    if not isinstance(engine, PostgresEngine):
        raise InputError(f"{engine.describe()} is not PostgreSQL; PITR drills are PostgreSQL's",
                         "give a postgresql:// server or a PostgresServer block")
    repo = resolve_repository(repository).open()
    mark = create_mark(engine, repo, name, lock_timeout=lock_timeout)
    get_run_logger().info("mark %r at %s (timeline %d): %d tables, writers paused %.2f s", mark.name, mark.lsn,
                          mark.timeline, mark.table_count, mark.writers_paused_seconds)
    archive_mark_wal(engine, repo, mark, archive_wait_seconds)
    return mark


@task(name="pitr-drill", task_run_name="pitr-drill-{cluster}", **RETRIED, persist_result=False,
      cache_policy=NO_CACHE)
def drill_mark(repository: RepositoryChoice | None, cluster: str, mark: str | None, wal_command: str | None,
               wal_repository: str | None, scratch_dir: str | None, bin_dir: str | None, user: str) -> DrillReport:
    """Recover to the mark (the newest without one) in a scratch directory, compare, remove it. The
    scratch server's restore_command reads `wal_repository` (default: the repository's location, which
    must then be a path or URL) with the repository's passphrase from a 0600 file in the scratch
    directory."""
    ref = resolve_repository(repository)
    repo = ref.open()
    if ref.passphrase is None:
        raise InputError("the repository has no passphrase to hand to the scratch server",
                         "set VAULTFLOW_PASSPHRASE or use a BackupRepository block")
    location = wal_repository or ref.location
    if ref.storage is not None and not wal_repository:
        raise InputError(f"the repository of block {ref.block_name!r} is an object-storage block, which the "
                         "scratch server's restore_command (vaultflow-wal) cannot read",
                         "set wal_repository to the s3:// or az:// URL vaultflow-wal reads (with its environment)")
    if "://" not in location:
        location = str(Path(location).expanduser().absolute())
    chosen = pick_mark(repo, cluster, mark)
    report = run_pitr_drill(repo, chosen, wal_command=Path(wal_command) if wal_command else
                            Path(sys.executable).parent / "vaultflow-wal", repository_location=location,
                            passphrase=ref.passphrase.get_secret_value(),
                            scratch_parent=Path(scratch_dir) if scratch_dir else None,
                            bin_dir=Path(bin_dir) if bin_dir else None, login=PostgresConnection(user=user))
    (get_run_logger().info if report.passed else get_run_logger().error)(report.summary())
    return report


@task(name="pitr-drill-binlog", task_run_name="pitr-drill-{database}", **RETRIED, persist_result=False,
      cache_policy=NO_CACHE)
def drill_binlog_mark(repository: RepositoryChoice | None, database: str, mark: str | None,
                      scratch: str | None) -> DrillReport:
    """Restore a MySQL/MariaDB database to its mark (the newest without one) in a vaultflow_drill_*
    database on `scratch` (a server URL or block; default: the database's own server), compare, drop it."""
    from vaultflow.engines.mysql.binlog_mark import pick_binlog_mark, run_binlog_drill

    source = mysql_database(database)
    assert source is not None
    host = resolve_server(scratch) if scratch else source
    if not isinstance(host, MySQLEngine):
        raise InputError(f"scratch {scratch} is not a MySQL/MariaDB server", "give mysql://user@host:port")
    repo = resolve_repository(repository).open()
    report = run_binlog_drill(repo, pick_binlog_mark(repo, source.server_label(), source.conn.database, mark), host)
    (get_run_logger().info if report.passed else get_run_logger().error)(report.summary())
    return report
