"""`vaultflow wal-receive SERVER --spool DIR`: the long-running WAL receiver (a service run by
systemd, not a Prefect flow run; docs/engines/postgresql.md has the unit).

Each health report is a log line on stderr and, when PREFECT_API_URL is set, a Prefect event
`vaultflow.wal-receiver.<started|restarted|healthy|slot-retaining|stopped>` on the server's
resource, so an automation can alert on restarts, on a retaining slot, or on heartbeats that
stop coming (a proactive trigger on `vaultflow.wal-receiver.healthy`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from vaultflow.cli.app import RepoOpt, handles_errors, open_repo


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
    from vaultflow.engines import is_database_url, server_from_url, spec
    from vaultflow.engines.postgres.engine import PostgresEngine
    from vaultflow.engines.postgres.wal_receiver import ReceiverHealth, WalReceiver

    if is_database_url(server):
        engine = server_from_url(server)
    else:
        from blocks.resolve import resolve_server

        engine = resolve_server(server)
    spec(engine.engine).require("pitr", "give a PostgreSQL server (postgresql://user@host:port)")
    assert isinstance(engine, PostgresEngine)
    repository, _ = open_repo(repo)
    emit = _event_emitter(engine.server_label())

    def report(health: ReceiverHealth) -> None:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        print(f"{at} wal-receive {health.event}: {health.detail} (archived {health.archived}, restarts "
              f"{health.restarts})", file=sys.stderr, flush=True)
        emit(health)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        WalReceiver(engine, repository, spool.absolute(), slot=slot, retained_warn_bytes=warn_retained_mb << 20,
                    health_every=health_seconds, report=report).run(stop)
    finally:
        if os.environ.get("PREFECT_API_URL"):
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=10)


def _event_emitter(server: str) -> Any:
    """Emit each report as a Prefect event when an API is configured; otherwise only log."""
    if not os.environ.get("PREFECT_API_URL"):
        return lambda health: None
    from prefect.events import emit_event

    resource = {"prefect.resource.id": f"vaultflow.server.postgresql.{server}", "prefect.resource.name": server,
                "vaultflow.engine": "postgresql"}

    def emit(health: Any) -> None:
        emit_event(event=f"vaultflow.wal-receiver.{health.event}", resource=resource,
                   payload={"detail": health.detail, "archived": health.archived, "restarts": health.restarts,
                            "retained_bytes": health.retained_bytes})

    return emit
