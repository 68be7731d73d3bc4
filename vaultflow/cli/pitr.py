"""`pitr` group: point-in-time recovery (PostgreSQL clusters; the mysql:// forms are MySQL/MariaDB's).

    pitr check SERVER                       what the server lacks for PITR (also MySQL/MariaDB binlogs)
    pitr base-backup SERVER                 a physical base backup of the whole cluster
    pitr window [CLUSTER]                   what each cluster can be restored to, and the gaps
    pitr restore CLUSTER --to-time T --pgdata DIR    a base backup laid out to recover to T
         ... --start --port P               and started: recovers, promotes, reports timeline and point
    pitr mark SERVER [--name N]             a restore point and every table's statistics at it
    pitr marks CLUSTER                      the cluster's marks
    pitr drill CLUSTER [--mark N]           recover to a mark in a scratch directory, compare, remove it
    pitr window mysql://host:port/db        MySQL/MariaDB: the database's window from its binlogs
    pitr mark mysql://host:port/db [--name N]        its tables and binlog position in one transaction snapshot
    pitr marks mysql://host:port[/db]       the server's (database's) marks
    pitr drill mysql://host:port/db [--mark N] [--scratch URL]   restore to a mark in vaultflow_drill_*, compare, drop
    pitr restore mysql://host:port/db --to-time T --into mysql://host:port/new   snapshot + binlog replay
         ... --to-position FILE:POS | --to-gtid D-S-N        up to a binlog position or a GTID's transaction

CLUSTER is a system identifier, a server (host:port or a postgresql:// URL) as its base backups
record it, or a base backup's snapshot id (restore then uses that one). These commands call the core
directly (no Prefect flow, no catalog row); `vaultflow backup SERVER --physical` takes the same base
backup through the `base-backup` flow (catalog row, events, artifacts), and the `pitr-drill` flow
drills like `pitr drill` with events and artifacts.

`wal-push` / `wal-fetch` are the same commands as the `vaultflow-wal` console script, reachable
from this CLI; the server's archive_command should use `vaultflow-wal`, which starts faster
(it imports neither typer nor rich; docs/engines/postgresql.md).

Exit codes of `pitr check`: 0 ready, 3 not ready (a check is missing), 1 the check could not
run (server unreachable), 2 bad input. `pitr window`: 0, or 3 when a gap cuts a window.
`base-backup` and `restore`: 0, 1 failed (the server does not archive here, a tool failed), 2 bad
input (a target outside the window, a non-empty --pgdata, a logical snapshot).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaultflow.cli.app import JsonOpt, RepoOpt, handles_errors, is_location, open_repo, require_repo
from vaultflow.cli.output import human_bytes, print_json, progress_bar, stdout
from vaultflow.errors import InputError

if TYPE_CHECKING:
    from vaultflow.drill import DrillReport
    from vaultflow.engines.mysql.engine import MySQLEngine
    from vaultflow.engines.postgres.engine import PostgresEngine
    from vaultflow.repository import Repository

NOT_READY_EXIT = 3

pitr_app = typer.Typer(no_args_is_help=True, help="Point-in-time recovery (PostgreSQL WAL, MySQL/MariaDB binlogs).")

_MARK = {"ok": "ok", "missing": "MISSING", "advisable": "advisable"}


ServerArg = Annotated[str, typer.Argument(help="postgresql://user@host:port[/db] or a saved PostgresServer block.")]
ClusterArg = Annotated[str, typer.Argument(help="System identifier, host:port or postgresql:// URL of the "
                                                "cluster, or a base backup's snapshot id.")]


def _postgres_server(server: str) -> PostgresEngine:
    from vaultflow.engines import is_database_url, server_from_url, spec
    from vaultflow.engines.postgres.engine import PostgresEngine

    if is_database_url(server):
        engine = server_from_url(server)
    else:
        from blocks.resolve import resolve_server

        engine = resolve_server(server)
    spec(engine.engine).require("pitr", "give a PostgreSQL server (postgresql://user@host:port)")
    if not isinstance(engine, PostgresEngine):
        raise InputError(f"{engine.describe()} is not PostgreSQL: base backups, the window and restores to a "
                         "moment of this group are PostgreSQL's", "give a postgresql:// server")
    return engine


@pitr_app.command("check")
@handles_errors
def check(server: ServerArg, json_out: JsonOpt = False) -> None:
    """Read the server's WAL (PostgreSQL) or binlog (MySQL/MariaDB) settings and the user's rights;
    print one line per check and the statements that fix what is missing. Exit 0 when ready, 3 when not."""
    from vaultflow.engines import is_database_url, server_from_url, spec

    if is_database_url(server):
        engine = server_from_url(server)
    else:
        from blocks.resolve import resolve_server

        engine = resolve_server(server)
    if engine.engine == "mysql":
        from vaultflow.engines.mysql.engine import MySQLEngine
        from vaultflow.engines.mysql.pitr_check import check_binlog_readiness

        assert isinstance(engine, MySQLEngine)
        result = check_binlog_readiness(engine)
    else:
        from vaultflow.engines.postgres.engine import PostgresEngine
        from vaultflow.engines.postgres.pitr_check import check_pitr_readiness

        spec(engine.engine).require("pitr", "give a PostgreSQL or MySQL/MariaDB server")
        assert isinstance(engine, PostgresEngine)
        result = check_pitr_readiness(engine)
    if json_out:
        print_json(result.as_dict())
    else:
        for item in result.checks:
            stdout.print(f"{_MARK[item.status]:<9} {item.name}: {item.value}"
                         + ("" if item.status == "ok" else f" (want {item.want})"), highlight=False)
        todo = [c for c in result.checks if c.status != "ok" and c.fix]
        if todo:
            stdout.print("\nto apply (as a superuser):", highlight=False)
            for item in todo:
                for line in item.fix:
                    stdout.print(f"  {line}", highlight=False)
            if any(c.apply == "config" for c in todo):
                stdout.print("  (and the [mysqld] lines in the server's config file, so they survive a restart)",
                             highlight=False)
            if any(c.apply == "reload" for c in todo):
                stdout.print("  SELECT pg_reload_conf();", highlight=False)
            restart = sorted(c.name for c in todo if c.apply == "restart")
            if restart:
                stdout.print(f"then restart the server (needed for {', '.join(restart)})", highlight=False)
        verdict = "ready for point-in-time recovery" if result.ready else "NOT ready for point-in-time recovery"
        flavour = "MySQL/MariaDB" if engine.engine == "mysql" else "PostgreSQL"
        stdout.print(f"\n{result.server} ({flavour} {result.version}): {verdict}", highlight=False)
        if result.note:
            stdout.print(f"note: {result.note}", highlight=False)
    if not result.ready:
        raise typer.Exit(NOT_READY_EXIT)


@pitr_app.command("base-backup")
@handles_errors
def base_backup(
    server: ServerArg,
    repo: RepoOpt = None,
    archive_check: Annotated[bool, typer.Option(
        "--archive-check/--no-archive-check",
        help="Refuse unless the server archives its WAL into this repository, and wait for the backup "
             "history file there (its STOP TIME is the recorded stop).")] = True,
    archive_wait: Annotated[float, typer.Option(help="Seconds to wait for the backup history file.")] = 60.0,
    timeout_minutes: Annotated[int, typer.Option(help="pg_basebackup is killed after this long.")] = 360,
    new_chain: Annotated[bool, typer.Option(
        help="Start a chain of its own (kind full) instead of joining the newest base backup's chain, whose "
             "chunks it would not store again.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Take a physical base backup of the whole cluster (pg_basebackup, tar with the WAL it needs) into
    the repository as one snapshot; restore it to a moment with `vaultflow pitr restore`."""
    from vaultflow.engines.postgres.pitr import take_base_backup
    from vaultflow.progress import ProgressMeter
    from vaultflow.repository import new_object_id

    engine = _postgres_server(server)
    opened, _ = open_repo(repo)
    meter = ProgressMeter("base backup", engine.server_label())
    with progress_bar(not json_out):
        manifest = take_base_backup(engine, opened, snapshot_id=new_object_id(), archive_check=archive_check,
                                    archive_wait=archive_wait, timeout=timeout_minutes * 60.0, progress=meter,
                                    new_chain=new_chain)
        meter.finish()
    info = manifest.base_backup
    assert info is not None
    parent = opened.load_manifest(manifest.parent) if manifest.parent else None
    row = {"snapshot": manifest.id, "server": manifest.server, "system_identifier": str(info.system_identifier),
           "timeline": info.timeline, "start_lsn": info.start_lsn, "stop_lsn": info.stop_lsn,
           "start_time": info.start_time.isoformat(), "stop_time": info.stop_time.isoformat(),
           "stop_time_source": info.stop_time_source, "logical_bytes": manifest.logical_size,
           "stored_bytes": manifest.stored_size, "added_bytes": manifest.added_size(parent),
           "kind": manifest.kind, "parent": manifest.parent, "duration_s": round(manifest.duration_seconds, 2)}
    if json_out:
        print_json(row)
        return
    stdout.print(f"base backup {manifest.short_id} saved: cluster {info.system_identifier} on {manifest.server}, "
                 f"timeline {info.timeline}, WAL {info.start_lsn} .. {info.stop_lsn}, stopped "
                 f"{info.stop_time.isoformat(sep=' ', timespec='seconds')}, {human_bytes(manifest.logical_size)} "
                 f"read, {human_bytes(manifest.added_size(parent))} newly stored ({manifest.kind}), "
                 f"{row['duration_s']} s", highlight=False)


@pitr_app.command("window")
@handles_errors
def window(
    cluster: Annotated[str | None, typer.Argument(help="System identifier, host:port or base backup snapshot id "
                                                       "(default: every cluster of the repository).")] = None,
    repo: RepoOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Per cluster: the moments it can be restored to (each base backup's stop to the end of the unbroken
    WAL after it, by the archive time of the last segment), its base backups and the missing segments.
    For mysql://host:port/db: the database's window from its snapshots and archived binlogs.
    Exit 0, or 3 when a gap cuts the window."""
    from vaultflow.engines.postgres.pitr import windows

    opened, _ = open_repo(repo)
    if cluster and cluster.startswith(_MYSQL_SCHEMES):
        _binlog_window(opened, cluster, json_out)
        return
    found = windows(opened, cluster)
    if json_out:
        print_json([w.as_dict() for w in found])
    else:
        if not found:
            stdout.print("no cluster has WAL or base backups in this repository", highlight=False)
        for w in found:
            servers = ", ".join(w.servers) or "(no base backup)"
            stdout.print(f"cluster {w.system_identifier} ({servers}): restorable {w.range_text()}", highlight=False)
            for m, c in zip(w.base_backups, w.coverage, strict=True):
                b = m.base_backup
                assert b is not None
                stdout.print(f"  base backup {m.short_id}: stopped {b.stop_time.isoformat(sep=' ', timespec='seconds')}"
                             f" at {b.stop_lsn} (timeline {b.timeline}); WAL reaches {c.last_segment}, archived "
                             f"{c.to_time.isoformat(sep=' ', timespec='seconds')}", highlight=False)
            for g in w.gaps:
                stdout.print(f"  GAP {g.describe()}", highlight=False)
            if w.newest_segment:
                when = w.newest_time.isoformat(sep=" ", timespec="seconds") if w.newest_time else "time unknown"
                stdout.print(f"  newest archived segment {w.newest_segment} ({when})", highlight=False)
    if any(w.gaps for w in found):
        raise typer.Exit(NOT_READY_EXIT)


@pitr_app.command("restore")
@handles_errors
def restore(
    cluster: ClusterArg,
    pgdata: Annotated[Path | None, typer.Option(help="A new or empty directory for the restored cluster (made "
                                                     "0700; PostgreSQL).")] = None,
    into: Annotated[str | None, typer.Option(help="MySQL/MariaDB: the database to restore into "
                                                  "(mysql://user@host:port/db, new or empty).")] = None,
    to_time: Annotated[str | None, typer.Option(help="Recover to this moment, with its offset: "
                                                     "'2026-12-02 10:14:00+01:00' (or ...Z).")] = None,
    to_lsn: Annotated[str | None, typer.Option(help="Recover to this LSN, e.g. 0/3000060.")] = None,
    to_position: Annotated[str | None, typer.Option(
        help="MySQL/MariaDB: replay the binlog up to this position FILE:POS (exclusive; where no transaction is "
             "open, e.g. from SHOW MASTER STATUS).")] = None,
    to_gtid: Annotated[str | None, typer.Option(
        help="MariaDB: replay up to and including the transaction of this GTID D-S-N (every domain's "
             "transactions logged before it too).")] = None,
    to_name: Annotated[str | None, typer.Option(
        "--to-name", "--to-restore-point",
        help="Recover to this restore point (pg_create_restore_point), replaying from the oldest base backup "
             "whose WAL reaches farthest, or from the one given as CLUSTER.")] = None,
    to_xid: Annotated[str | None, typer.Option(
        help="Recover to just after this transaction committed (pg_current_xact_id()), from the base backup "
             "chosen as for --to-name.")] = None,
    latest: Annotated[bool, typer.Option(
        "--latest", help="Recover to the end of the archived WAL from the newest base backup (refused when a gap "
                         "would stop it short).")] = False,
    repo: RepoOpt = None,
    wal_command: Annotated[Path | None, typer.Option(
        help="The vaultflow-wal the restored server runs as restore_command (default: the one beside this "
             "vaultflow; the server's OS user must be able to run it: make wal-venv).")] = None,
    passphrase_file: Annotated[Path | None, typer.Option(
        envvar="VAULTFLOW_PASSPHRASE_FILE",
        help="The 0600 passphrase file the restored server's restore_command reads (never the passphrase).")] = None,
    keep_archiving: Annotated[bool, typer.Option(
        help="Leave archive_mode as the backup had it, so the promoted copy archives its new timeline into the "
             "repository (for a copy that replaces the primary); by default it is set off.")] = False,
    start: Annotated[bool, typer.Option(
        help="Start the server on --port (127.0.0.1), wait until it recovered to the target and promoted, and "
             "report the timeline and the point reached.")] = False,
    port: Annotated[int | None, typer.Option(help="With --start: the port the restored server listens on.")] = None,
    bin_dir: Annotated[Path | None, typer.Option(
        help="With --start: the PostgreSQL bin directory (default /usr/lib/postgresql/<major>/bin, else PATH); "
             "its major version must be the base backup's.")] = None,
    user: Annotated[str, typer.Option(help="With --start: the role to connect as to watch the recovery.")]
    = "postgres",
    start_timeout: Annotated[float, typer.Option(help="With --start: seconds to wait for the target.")] = 3600.0,
    json_out: JsonOpt = False,
) -> None:
    """Lay out the newest base backup that stopped before the target in --pgdata, with recovery.signal
    and the recovery settings; start the server there (pg_ctl -D DIR start) and it recovers to the target
    and promotes. For CLUSTER mysql://host:port/db: restore the newest snapshot of that database that
    finished before --to-time into --into, then replay the archived binlogs up to --to-time."""
    from vaultflow.engines.postgres.pitr import parse_target, plan_recovery, restore_to_point
    from vaultflow.engines.postgres.recovery import restore_command

    if cluster.startswith(_MYSQL_SCHEMES):
        if to_lsn or to_name or to_xid or latest or pgdata:
            raise InputError("--to-lsn, --to-name, --to-xid, --latest and --pgdata are PostgreSQL's",
                             "give --to-time, --to-position or --to-gtid and --into for a MySQL/MariaDB database")
        _binlog_restore(cluster, into, to_time, to_position, to_gtid, repo, json_out)
        return
    if to_position or to_gtid:
        raise InputError("--to-position and --to-gtid are MySQL/MariaDB's",
                         "give --to-time, --to-lsn, --to-name, --to-xid or --latest")
    if pgdata is None or into is not None:
        raise InputError("a PostgreSQL restore to a moment lays out a data directory",
                         "give --pgdata DIR (and no --into)")
    if start != (port is not None):
        raise InputError("--start and --port go together", "give both to start the restored server, or neither")
    target = parse_target(to_time, to_lsn, to_name, to_xid, latest)
    location = _wal_location(repo)
    if passphrase_file is None:
        raise InputError("the restored server needs the repository passphrase in a file it can read",
                         "pass --passphrase-file (or set VAULTFLOW_PASSPHRASE_FILE) to a 0600 file owned by its "
                         "OS user")
    command = restore_command(wal_command or Path(sys.executable).parent / "vaultflow-wal", location,
                              passphrase_file)
    opened, _ = open_repo(repo)
    plan = plan_recovery(opened, cluster, target)
    info = plan.manifest.base_backup
    assert info is not None
    settings: dict[str, str] = {}
    if port is not None:
        from vaultflow.engines.postgres.started_cluster import check_port_free, server_binaries

        check_port_free(port)
        binaries = server_binaries(info.server_version, bin_dir)
        settings = {"port": str(port), "listen_addresses": "127.0.0.1"}
    with progress_bar(not json_out):
        lines = restore_to_point(opened, plan, pgdata.expanduser().absolute(), target, command=command,
                                 archive=keep_archiving, settings=settings)
    row: dict[str, object] = {"snapshot": plan.manifest.id, "system_identifier": str(info.system_identifier),
                              "pgdata": str(pgdata.absolute()), "target": target.describe(), "settings": lines,
                              "window": plan.window.range_text()}
    if port is not None:
        from vaultflow.engines.postgres.config import PostgresConnection
        from vaultflow.engines.postgres.started_cluster import start_restored

        outcome = start_restored(pgdata.expanduser().absolute(), port, binaries, login=PostgresConnection(user=user),
                                 timeout=start_timeout)
        row |= {"port": port, "timeline": outcome.timeline, "switch_lsn": outcome.switch_lsn,
                "reached": outcome.reason,
                "last_transaction": outcome.last_transaction.isoformat() if outcome.last_transaction else None}
        if json_out:
            print_json(row)
            return
        stdout.print(f"base backup {plan.manifest.short_id} restored in {row['pgdata']} to {target.describe()} "
                     f"and running on 127.0.0.1:{port}: {outcome.describe()}", highlight=False)
        return
    if json_out:
        print_json(row)
        return
    stopped = info.stop_time.isoformat(sep=" ", timespec="seconds")
    stdout.print(f"base backup {plan.manifest.short_id} (stopped {stopped}) laid out in {row['pgdata']} to "
                 f"recover to {target.describe()}; start it with: "
                 f"pg_ctl -D {row['pgdata']} start", highlight=False)


@pitr_app.command("mark")
@handles_errors
def mark(
    server: ServerArg,
    name: Annotated[str | None, typer.Option(help="The restore point's name (default vaultflow-<UTC time>); "
                                                  "letters, digits, '.', '_', '-'.")] = None,
    repo: RepoOpt = None,
    lock_timeout: Annotated[float, typer.Option(help="Seconds to wait for each database's table locks.")] = 10.0,
    jobs: Annotated[int, typer.Option(min=1, max=16, help="Tables read at once per database.")] = 2,
    archive_check: Annotated[bool, typer.Option(
        "--archive-check/--no-archive-check", help="Refuse unless the server archives its WAL into this "
                                                   "repository.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Create a named restore point and store, in the repository, the row count and checksum of every
    table of every database at exactly that point (writers pause while the tables are locked and the
    point is created); `vaultflow pitr drill` later recovers to it and compares. For mysql://host:port/db:
    the database's tables and the binlog position of one transaction snapshot (writers do not pause)."""
    from vaultflow.engines.postgres.pitr_mark import create_mark

    if server.startswith(_MYSQL_SCHEMES):
        _binlog_mark(server, name, repo, archive_check, json_out)
        return
    engine = _postgres_server(server)
    opened, _ = open_repo(repo)
    made = create_mark(engine, opened, name, lock_timeout=lock_timeout, jobs=jobs, archive_check=archive_check)
    row = {"name": made.name, "system_identifier": str(made.system_identifier), "lsn": made.lsn,
           "timeline": made.timeline, "wal_file": made.wal_file, "databases": len(made.databases),
           "tables": made.table_count, "writers_paused_s": made.writers_paused_seconds,
           "created_at": made.created_at.isoformat()}
    if json_out:
        print_json(row)
        return
    stdout.print(f"mark {made.name!r} of cluster {made.system_identifier}: restore point at {made.lsn} (timeline "
                 f"{made.timeline}), {made.table_count} tables in {len(made.databases)} databases recorded, writers "
                 f"paused {made.writers_paused_seconds:.2f} s", highlight=False)


@pitr_app.command("marks")
@handles_errors
def list_marks(cluster: ClusterArg, repo: RepoOpt = None, json_out: JsonOpt = False) -> None:
    """The cluster's marks, oldest first."""
    from vaultflow.engines.postgres.pitr import resolve_cluster
    from vaultflow.engines.postgres.pitr_mark import marks

    if cluster.startswith(_MYSQL_SCHEMES):
        _binlog_marks(cluster, repo, json_out)
        return
    opened, _ = open_repo(repo)
    found = marks(opened, resolve_cluster(opened, list(opened.manifests()), cluster))
    if json_out:
        print_json([m.model_dump(mode="json", by_alias=True, exclude={"databases"}) | {"tables": m.table_count}
                    for m in found])
        return
    for m in found:
        stdout.print(f"{m.name}  {m.created_at.isoformat(sep=' ', timespec='seconds')}  {m.lsn} (timeline "
                     f"{m.timeline})  {m.table_count} tables", highlight=False)
    if not found:
        stdout.print("no marks", highlight=False)


@pitr_app.command("drill")
@handles_errors
def drill(
    cluster: ClusterArg,
    mark_name: Annotated[str | None, typer.Option("--mark", help="The mark to drill (default: the newest).")] = None,
    repo: RepoOpt = None,
    wal_command: Annotated[Path | None, typer.Option(
        help="The vaultflow-wal the scratch server runs as restore_command (default: the one beside this "
             "vaultflow).")] = None,
    passphrase_file: Annotated[Path | None, typer.Option(
        envvar="VAULTFLOW_PASSPHRASE_FILE",
        help="The 0600 passphrase file the scratch server's restore_command reads.")] = None,
    scratch_dir: Annotated[Path | None, typer.Option(
        help="Where the scratch directory is made (default: the system's temp directory).")] = None,
    bin_dir: Annotated[Path | None, typer.Option(help="The PostgreSQL bin directory of the base backup's major "
                                                      "version.")] = None,
    user: Annotated[str, typer.Option(help="The role to read the scratch server's tables as.")] = "postgres",
    jobs: Annotated[int, typer.Option(min=1, max=16, help="Tables read at once per database.")] = 2,
    scratch: Annotated[str | None, typer.Option(
        help="MySQL/MariaDB: the server that hosts the scratch database (mysql://user@host:port; default: the "
             "server of the URL given).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Recover the cluster to a mark in a scratch data directory on a free port (paused at the restore
    point, not promoted), compare every table of every database with the mark, stop the server and
    remove the directory, and report the RTO. For mysql://host:port/db: restore the newest snapshot before
    the mark and replay the binlogs to its position in a vaultflow_drill_* database, compare, drop it.
    Exit 1 when the drill failed."""
    from vaultflow.engines.postgres.config import PostgresConnection
    from vaultflow.engines.postgres.pitr_drill import pick_mark, run_pitr_drill

    if cluster.startswith(_MYSQL_SCHEMES):
        _binlog_drill(cluster, mark_name, scratch, repo, json_out)
        return
    if scratch is not None:
        raise InputError("--scratch is MySQL/MariaDB's", "give --scratch-dir for a PostgreSQL drill")
    location = _wal_location(repo)
    if passphrase_file is None:
        raise InputError("the scratch server needs the repository passphrase in a file it can read",
                         "pass --passphrase-file (or set VAULTFLOW_PASSPHRASE_FILE) to a 0600 file")
    opened, catalog_url = open_repo(repo)
    chosen = pick_mark(opened, cluster, mark_name)
    report = run_pitr_drill(opened, chosen, wal_command=wal_command or Path(sys.executable).parent / "vaultflow-wal",
                            repository_location=location, passphrase_file=passphrase_file, scratch_parent=scratch_dir,
                            bin_dir=bin_dir, login=PostgresConnection(user=user), jobs=jobs)
    _finish_drill(report, catalog_url, opened.id, json_out)


def _finish_drill(report: DrillReport, catalog_url: str | None, repository_id: str, json_out: bool) -> None:
    """Record the drill in the catalog, print it (or its JSON), and exit non-zero when it failed."""
    from vaultflow.catalog import Catalog
    from vaultflow.drill import DrillFailed

    Catalog(catalog_url).record_drill(report, repository_id=repository_id)
    if json_out:
        print_json(report.model_dump(mode="json") | {"passed": report.passed, "summary": report.summary()})
    else:
        stdout.print(report.summary(), highlight=False)
    if not report.passed:
        raise DrillFailed.from_report(report)


def _wal_location(repo: str | None) -> str:
    """The repository as vaultflow-wal reads it: a path (made absolute) or URL, never a block name."""
    location = require_repo(repo)
    if not is_location(location):
        raise InputError(f"repository {location!r} is a block name, which the server's restore_command "
                         "(vaultflow-wal) cannot read", "give --repo as the repository's path or URL")
    return location if "://" in location else str(Path(location).expanduser().absolute())


_MYSQL_SCHEMES = ("mysql://", "mariadb://")


def _mysql_database(url: str) -> MySQLEngine:
    from vaultflow.engines import engine_from_url
    from vaultflow.engines.mysql.engine import MySQLEngine

    engine = engine_from_url(url)
    if not isinstance(engine, MySQLEngine) or not engine.database:
        raise InputError(f"{url} names no MySQL/MariaDB database", "give mysql://user@host:port/database")
    return engine


def _binlog_window(opened: Repository, url: str, json_out: bool) -> None:
    from vaultflow.engines.mysql.binlog_window import binlog_window

    source = _mysql_database(url)
    found = binlog_window(opened, source.server_label(), source.database, source._tool("mariadb-binlog", "mysqlbinlog"))
    if json_out:
        print_json(found.as_dict())
    else:
        span = found.recoverable
        text = (f"{span[0].isoformat(sep=' ', timespec='seconds')} .. {span[1].isoformat(sep=' ', timespec='seconds')}"
                if span else "empty")
        stdout.print(f"{source.database} on {found.server}: restorable {text}", highlight=False)
        for r in found.reach:
            to = r.reaches_to.isoformat(sep=" ", timespec="seconds") if r.reaches_to else "-"
            stdout.print(f"  snapshot {r.snapshot.short_id}: finished "
                         f"{r.snapshot.finished_at.isoformat(sep=' ', timespec='seconds')}, binlogs reach "
                         f"{r.reaches_file or 'nothing (its file is not archived)'} ({to})", highlight=False)
        if found.missing:
            stdout.print(f"  GAP binlog file number(s) {', '.join(map(str, found.missing))} missing", highlight=False)
    if found.missing:
        raise typer.Exit(NOT_READY_EXIT)


def _binlog_restore(source_url: str, into: str | None, to_time: str | None, to_position: str | None,
                    to_gtid: str | None, repo: str | None, json_out: bool) -> None:
    from datetime import datetime

    from vaultflow.engines.mysql.binlog_events import parse_gtid
    from vaultflow.engines.mysql.binlog_replay import (
        archived_binlogs,
        parse_binlog_position,
        pick_snapshot,
        plan_to_gtid,
        plan_to_position,
        restore_to_position,
        restore_to_time,
    )
    from vaultflow.operations.restore import restore_snapshot
    from vaultflow.requests import RestoreRequest

    if not into or sum(t is not None for t in (to_time, to_position, to_gtid)) != 1:
        raise InputError("a MySQL/MariaDB restore to a moment needs --into and one of --to-time, --to-position and "
                         "--to-gtid", "give --to-time '2026-12-02 10:14:00+01:00' (or --to-position FILE:POS, "
                                      "--to-gtid D-S-N) --into mysql://user@host:port/newdb")
    source, target = _mysql_database(source_url), _mysql_database(into)
    if to_time is not None:
        try:
            moment = datetime.fromisoformat(to_time)
        except ValueError:
            raise InputError(f"--to-time {to_time!r} is not a moment",
                             "write it as 2026-12-02 10:14:00+01:00") from None
        opened, _ = open_repo(repo)
        snapshot = pick_snapshot(opened, source.server_label(), source.database, moment)
        result = restore_to_time(opened, snapshot, target, moment,
                                 lambda: restore_snapshot(opened, snapshot.id, target, RestoreRequest()))
        reached = moment.isoformat(sep=" ")
    else:
        position = parse_binlog_position(to_position) if to_position is not None else None
        gtid = parse_gtid(to_gtid) if to_gtid is not None else None
        opened, _ = open_repo(repo)
        with archived_binlogs(opened, source.server_label()) as archive:
            if position is not None:
                plan = plan_to_position(archive, source.database, *position)
            else:
                assert gtid is not None
                plan = plan_to_gtid(archive, source.database, gtid)
            snapshot = plan.snapshot
            result = restore_to_position(archive, plan, target,
                                         lambda: restore_snapshot(opened, snapshot.id, target, RestoreRequest()))
        reached = plan.describe()
    last = result.last_event_at.isoformat(sep=" ", timespec="seconds") if result.last_event_at else None
    row = {"snapshot": snapshot.id, "into": target.describe(), "target": to_time or to_position or to_gtid,
           "binlog_files": result.files, "last_event_at": last, "last_event_position": result.last_event_position,
           "last_gtid": result.last_gtid}
    if json_out:
        print_json(row)
        return
    gtid_text = f", GTID {result.last_gtid}" if result.last_gtid else ""
    applied = (f"last event applied {last} (end position {result.last_event_position}{gtid_text})" if last
               else "no binlog event needed")
    stdout.print(f"restored snapshot {snapshot.short_id} into {target.describe()} and replayed its binlogs to "
                 f"{reached}: {applied}", highlight=False)


def _binlog_mark(url: str, name: str | None, repo: str | None, archive_check: bool, json_out: bool) -> None:
    from vaultflow.engines.mysql.binlog_mark import create_binlog_mark

    engine = _mysql_database(url)
    opened, _ = open_repo(repo)
    made = create_binlog_mark(engine, opened, name, archive_check=archive_check)
    position = made.binlog
    row = {"name": made.name, "server": made.server, "database": made.database, "binlog_file": position.file,
           "binlog_position": position.position, "gtid": position.gtid, "tables": len(made.tables),
           "created_at": made.created_at.isoformat()}
    if json_out:
        print_json(row)
        return
    stdout.print(f"mark {made.name!r} of {made.database!r} on {made.server}: binlog position {position.file}:"
                 f"{position.position} (GTID {position.gtid or '-'}), {len(made.tables)} tables recorded",
                 highlight=False)


def _binlog_marks(url: str, repo: str | None, json_out: bool) -> None:
    from vaultflow.engines import engine_from_url
    from vaultflow.engines.mysql.binlog_mark import binlog_marks
    from vaultflow.engines.mysql.engine import MySQLEngine

    engine = engine_from_url(url)
    assert isinstance(engine, MySQLEngine)
    opened, _ = open_repo(repo)
    found = binlog_marks(opened, engine.server_label(), engine.conn.database or None)
    if json_out:
        print_json([m.model_dump(mode="json", exclude={"tables"}) | {"tables": len(m.tables)} for m in found])
        return
    for m in found:
        stdout.print(f"{m.name}  {m.created_at.isoformat(sep=' ', timespec='seconds')}  {m.database}  "
                     f"{m.binlog.file}:{m.binlog.position} (GTID {m.binlog.gtid or '-'})  {len(m.tables)} tables",
                     highlight=False)
    if not found:
        stdout.print("no marks", highlight=False)


def _binlog_drill(url: str, mark_name: str | None, scratch: str | None, repo: str | None, json_out: bool) -> None:
    from vaultflow.engines import engine_from_url
    from vaultflow.engines.mysql.binlog_mark import pick_binlog_mark, run_binlog_drill
    from vaultflow.engines.mysql.engine import MySQLEngine

    source = _mysql_database(url)
    host = source
    if scratch is not None:
        given = engine_from_url(scratch)
        if not isinstance(given, MySQLEngine):
            raise InputError(f"--scratch {scratch} is not a MySQL/MariaDB server", "give mysql://user@host:port")
        host = given
    opened, catalog_url = open_repo(repo)
    chosen = pick_binlog_mark(opened, source.server_label(), source.database, mark_name)
    report = run_binlog_drill(opened, chosen, host)
    _finish_drill(report, catalog_url, opened.id, json_out)


def wal_push(
    path: Annotated[str, typer.Argument(help="%p: the WAL file to archive.")],
    repo: Annotated[str | None, typer.Option("--repo", "-r", help="Repository path or URL (default: $VAULTFLOW_REPO).")]
    = None,
    pgdata: Annotated[str | None, typer.Option(help="The cluster's data directory (default: the one of pg_wal/).")]
    = None,
) -> None:
    """archive_command: store one WAL file durably (same as `vaultflow-wal push %p`)."""
    from vaultflow.wal.command import run_push

    raise typer.Exit(run_push(path, repo=repo, pgdata=pgdata))


def wal_fetch(
    name: Annotated[str, typer.Argument(help="%f: the WAL file name to restore.")],
    path: Annotated[str, typer.Argument(help="%p: where to write it.")],
    repo: Annotated[str | None, typer.Option("--repo", "-r", help="Repository path or URL (default: $VAULTFLOW_REPO).")]
    = None,
    pgdata: Annotated[str | None, typer.Option(help="The cluster's data directory (default: the one of pg_wal/).")]
    = None,
) -> None:
    """restore_command: write one archived WAL file (same as `vaultflow-wal fetch %f %p`): exit 1 when
    it is not archived, 126 (fatal for PostgreSQL) on any other error."""
    from vaultflow.wal.command import run_fetch

    raise typer.Exit(run_fetch(name, path, repo=repo, pgdata=pgdata))
