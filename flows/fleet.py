"""The `backup_fleet` flow: every discovered database of some or all servers."""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Annotated, Literal

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_table_artifact
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from blocks.resolve import database_ref, resolve_server
from flows.discovery import servers_or_saved
from flows.run_states import backup_cancelled, backup_crashed, end_backup_rows
from tasks.discovery import discover_databases
from tasks.fleet import backup_one, ensure_server_limit, server_limit_name
from vaultflow.catalog import SnapshotStatus, catalog_url_for_parameters
from vaultflow.errors import VaultflowError
from vaultflow.requests import BackupRequest


@flow(name="backup-fleet", validate_parameters=True, task_runner=ThreadPoolTaskRunner(max_workers=32),  # type: ignore[arg-type]
      on_cancellation=[backup_cancelled], on_crashed=[backup_crashed])
def backup_fleet(
    servers: Annotated[list[str], Field(description="Engine block names or server URLs; every saved "
                                                    "vaultflow engine block if empty")] = [],  # noqa: B006
    repository: Annotated[str | None, Field(description="BackupRepository block name or a local path; "
                                                        "VAULTFLOW_REPO if empty")] = None,
    kind: Annotated[Literal["full", "incremental", "differential"], Field(description="Backup kind")] = "full",
    include: Annotated[list[str], Field(description="Globs of database names; all if empty")] = [],  # noqa: B006
    exclude: Annotated[list[str], Field(description="Globs of database names to skip")] = [],  # noqa: B006
    include_system: Annotated[bool, Field(description="Back up postgres/mysql/sys... too")] = False,
    max_per_server: Annotated[int, Field(ge=1, le=64, description="Dumps at once on one server (sets the "
                                                                  "server's global concurrency limit)")] = 2,
    options: Annotated[BackupRequest, Field(description="How to back up each database")] = BackupRequest(),  # noqa: B008
    catalog_url: Annotated[str | None, Field(description="Catalog URL for discovery")] = None,
) -> list[dict[str, object]]:
    """Discover, then back up each database; a server never runs more than `max_per_server`
    dumps at once (a Prefect global concurrency limit named after it, shared with every other
    run). One failing database does not stop the others; the run then fails naming them."""
    logger = get_run_logger()
    catalog_url = catalog_url_for_parameters(catalog_url)
    names = servers_or_saved(servers)
    futures: dict[str, PrefectFuture[dict[str, object]]] = {}
    failed: list[str] = []
    # A server's databases wait here, not in the limit: a task denied a slot polls for it
    # with a back-off of seconds, so only as many are submitted as the limit lets run. The
    # limit still holds the tasks of other runs that use the same server.
    waiting: dict[str, deque[str]] = {}
    active: dict[str, int] = {}
    finished: queue.SimpleQueue[str] = queue.SimpleQueue()
    stop = threading.Event()

    def submit(limit: str) -> None:
        source = waiting[limit].popleft()
        future = backup_one.submit(source, repository, kind, limit, options, stop)
        future.add_done_callback(lambda _: finished.put(limit))
        futures[source] = future
        active[limit] += 1

    try:
        for name in names:
            try:
                found = discover_databases(name, include, exclude, include_system, catalog_url)
            except VaultflowError as exc:
                failed.append(f"{name}: {exc.line()}")
                continue
            limit = server_limit_name(resolve_server(name))
            ensure_server_limit(limit, max_per_server)
            waiting.setdefault(limit, deque()).extend(database_ref(name, database) for database in found.databases)
            active.setdefault(limit, 0)
            while waiting[limit] and active[limit] < max_per_server:
                submit(limit)
        while any(active.values()):
            limit = finished.get()
            active[limit] -= 1
            if waiting[limit]:
                submit(limit)
    except TerminationSignal:
        # Cancelled (the runner's SIGTERM reached this thread): the dumps in task threads stop at
        # their next progress report and the databases still waiting never start. The rows end
        # Cancelled now, since the process may be killed before the cancellation hook runs.
        stop.set()
        end_backup_rows(str(runtime.flow_run.id), repository, SnapshotStatus.CANCELLED, "cancelled")
        raise
    rows = []
    for source, future in futures.items():
        try:
            rows.append(future.result())
        except BaseException as exc:  # noqa: BLE001 - every failure is named in the run's final error
            line = exc.line() if isinstance(exc, VaultflowError) else f"{type(exc).__name__}: {exc}"
            logger.error("%s: %s", source, line)
            failed.append(f"{source}: {line}")
    create_table_artifact(key="vaultflow-fleet-backup", table=rows or [{"database": "-"}],
                          description=f"{len(rows)} database(s) backed up, {len(failed)} failed")
    if failed:
        raise VaultflowError(f"{len(failed)} of {len(futures)} database backup(s) failed: " + "; ".join(failed))
    return rows
