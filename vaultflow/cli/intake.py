"""The long-running intake services, run by systemd, not as Prefect flow runs (the engine pages
have the units): `wal-receive SERVER --spool DIR` (PostgreSQL WAL) and `binlog-stream SERVER
--spool DIR` (MySQL/MariaDB binary logs).

Each health report is a log line on stderr and, when PREFECT_API_URL is set, a Prefect event
`vaultflow.wal-receiver.<event>` or `vaultflow.binlog-stream.<event>` on the server's resource
(events: started, restarted, healthy, stopped; slot-retaining for WAL, gap for binlogs), so an
automation can alert on restarts, gaps, a retaining slot, or heartbeats (`healthy`) that stop.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaultflow.cli.app import RepoOpt, handles_errors, open_repo
from vaultflow.errors import InputError

if TYPE_CHECKING:
    from vaultflow.engines import DatabaseEngine
    from vaultflow.engines.intake import HealthReport, IntakeHealth


@handles_errors
def wal_receive(
    server: Annotated[str, typer.Argument(help="postgresql://user@host:port or a saved PostgresServer block.")],
    spool: Annotated[Path, typer.Option(help="Local directory pg_receivewal writes into (0700); finished "
                                             "segments leave it once archived.")],
    repo: RepoOpt = None,
    slot: Annotated[str, typer.Option(help="Replication slot (created if missing).")] = "vaultflow",
    warn_retained_mb: Annotated[int, typer.Option(min=1, help="Report slot-retaining once the slot holds back "
                                                              "more WAL than this.")] = 1024,
    health_seconds: Annotated[float, typer.Option(min=1.0, help="Seconds between healthy heartbeats.")] = 60.0,
) -> None:
    """Stream WAL with a supervised `pg_receivewal --slot --synchronous` and archive each finished
    segment into the repository; runs until SIGTERM or Ctrl-C."""
    from vaultflow.engines.postgres.engine import PostgresEngine
    from vaultflow.engines.postgres.wal_receiver import WalReceiver

    engine = _server(server)
    if not isinstance(engine, PostgresEngine):
        raise InputError(f"{server} is not a PostgreSQL server", "give postgresql://user@host:port")
    repository, _ = open_repo(repo)
    receiver = WalReceiver(engine, repository, spool.absolute(), slot=slot,
                           retained_warn_bytes=warn_retained_mb << 20, health_every=health_seconds,
                           report=_reporter("wal-receive", "wal-receiver", engine.engine, engine.server_label()))
    _run_until_signal(receiver.run)


@handles_errors
def binlog_stream(
    server: Annotated[str, typer.Argument(help="mysql://user@host:port or a saved MySQLServer block.")],
    spool: Annotated[Path, typer.Option(help="Local directory mariadb-binlog writes into (0700); finished "
                                             "files leave it once archived.")],
    repo: RepoOpt = None,
    health_seconds: Annotated[float, typer.Option(min=1.0, help="Seconds between healthy heartbeats.")] = 60.0,
    push_interval: Annotated[float | None, typer.Option(
        min=1.0, help="Also store the growing binlog file every this many seconds (under keys that never "
                      "repeat; the finished file supersedes them). Default: finished files only.")] = None,
) -> None:
    """Copy the server's binary logs with a supervised `mariadb-binlog --read-from-remote-server --raw
    --stop-never` and archive each finished file into the repository; runs until SIGTERM or Ctrl-C."""
    from vaultflow.engines.mysql.binlog import BinlogStream
    from vaultflow.engines.mysql.engine import MySQLEngine

    engine = _server(server)
    if not isinstance(engine, MySQLEngine):
        raise InputError(f"{server} is not a MySQL/MariaDB server", "give mysql://user@host:port")
    repository, _ = open_repo(repo)
    stream = BinlogStream(engine, repository, spool.absolute(), health_every=health_seconds,
                          push_interval=push_interval,
                          report=_reporter("binlog-stream", "binlog-stream", engine.engine, engine.server_label()))
    _run_until_signal(stream.run)


def _server(server: str) -> DatabaseEngine:
    from vaultflow.engines import is_database_url, server_from_url

    if is_database_url(server):
        return server_from_url(server)
    from blocks.resolve import resolve_server

    return resolve_server(server)


def _run_until_signal(run: Callable[[threading.Event], None]) -> None:
    """Run a service until SIGTERM or SIGINT, then send the events still queued."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        run(stop)
    finally:
        if os.environ.get("PREFECT_API_URL"):
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=10)


def _reporter(command: str, event_prefix: str, engine: str, server: str) -> HealthReport:
    """Each health report as a stderr line, and as a Prefect event when an API is configured."""
    emit: HealthReport = lambda health: None  # noqa: E731
    if os.environ.get("PREFECT_API_URL"):
        from prefect.events import emit_event

        resource = {"prefect.resource.id": f"vaultflow.server.{engine}.{server}", "prefect.resource.name": server,
                    "vaultflow.engine": engine}

        def emit(health: IntakeHealth) -> None:
            emit_event(event=f"vaultflow.{event_prefix}.{health.event}", resource=resource,
                       payload={k: v for k, v in vars(health).items() if k != "event"})

    def report(health: IntakeHealth) -> None:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        print(f"{at} {command} {health.event}: {health.detail} (archived {health.archived}, restarts "
              f"{health.restarts})", file=sys.stderr, flush=True)
        emit(health)

    return report
