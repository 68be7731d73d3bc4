"""Automations applied to a real server (with its trigger services) alert a local webhook."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployments.automations import DEFAULT_DIR
from tests.deployments.conftest import PrefectServer

VAULTFLOW = [sys.executable, "-m", "vaultflow.cli.main"]
SHIPPED = ("vaultflow-flow-run-failed", "vaultflow-backup-overdue", "vaultflow-drill-failed",
           "vaultflow-credentials-expiring", "vaultflow-credentials-expired", "vaultflow-coverage-gap",
           "vaultflow-intake-trouble", "vaultflow-intake-silent", "vaultflow-wal-archive-behind")


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[str] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                received.append(self.rfile.read(length).decode("utf-8", "replace"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, *needles: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.bodies):
                if all(n in body for n in needles):
                    return body
            time.sleep(1)
        raise AssertionError(f"no alert with {needles} within {timeout} s; received: {self.bodies}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_failed_backup_alerts_the_webhook(prefect_server: PrefectServer, receiver: Receiver, repo_path: Path,
                                          pg_available: None) -> None:
    first = prefect_server.run(*VAULTFLOW, "automations", "apply", "--webhook-url", receiver.url, "--json")
    assert first.returncode == 0, first.stderr
    outcomes = {o["name"]: o["outcome"] for o in json.loads(first.stdout)}
    assert set(outcomes) == set(SHIPPED)
    assert set(outcomes.values()) == {"created"}
    again = prefect_server.run(*VAULTFLOW, "automations", "apply", "--json")
    assert again.returncode == 0, again.stderr
    assert {o["outcome"] for o in json.loads(again.stdout)} == {"unchanged"}

    database = f"vft_missing_{uuid.uuid4().hex[:8]}"
    failed = prefect_server.run(*VAULTFLOW, "backup", f"postgresql://postgres@127.0.0.1:5432/{database}",
                                "--repo", str(repo_path))
    assert failed.returncode == 2 and "does not exist" in failed.stderr, failed.stderr
    started = time.monotonic()
    alert = receiver.wait_for(database, "does not exist", timeout=90)
    print(f"failed-run alert {time.monotonic() - started:.1f} s after the CLI returned")
    assert "backup" in alert and "Failed" in alert


def test_overdue_backup_alerts_per_database(prefect_server: PrefectServer, receiver: Receiver, repo_path: Path,
                                            tmp_path: Path) -> None:
    from vaultflow.sample_data import create

    rules = tmp_path / "automations"
    rules.mkdir()
    text = (DEFAULT_DIR / "backup-overdue.yaml").read_text()
    (rules / "overdue.yaml").write_text(text.replace("name: vaultflow-backup-overdue", "name: test-overdue")
                                        .replace("within: 26h", "within: 15s"))
    shipped = prefect_server.run(*VAULTFLOW, "automations", "apply", "--webhook-url", receiver.url)
    assert shipped.returncode == 0, shipped.stderr
    # --prune: only the automations of this directory stay (the shipped ones go).
    applied = prefect_server.run(*VAULTFLOW, "automations", "apply", "--dir", str(rules), "--prune", "--json")
    assert applied.returncode == 0, applied.stderr
    outcomes = {o["name"]: o["outcome"] for o in json.loads(applied.stdout)}
    assert outcomes.pop("test-overdue") == "created"
    assert outcomes == {name: "deleted" for name in SHIPPED}
    db = create(tmp_path / f"rpo_{uuid.uuid4().hex[:6]}.db", rows=100)
    done = prefect_server.run(*VAULTFLOW, "backup", f"sqlite:///{db}", "--repo", str(repo_path))
    assert done.returncode == 0, done.stderr
    started = time.monotonic()
    alert = receiver.wait_for("backup overdue", db.name, timeout=90)
    print(f"overdue alert {time.monotonic() - started:.1f} s after the backup (RPO 15 s)")
    assert "sqlite" in alert


def test_apply_refuses_a_missing_notification_block(prefect_server: PrefectServer) -> None:
    done = prefect_server.run(*VAULTFLOW, "automations", "apply", "--notify-block", "slack-webhook/nope")
    assert done.returncode == 2
    assert "no notification block slack-webhook/nope" in done.stderr and "Blocks" in done.stderr


def test_every_flow_is_watched_by_the_failed_run_automation() -> None:
    """A new flow that the failed-run automation's name globs miss would fail silently."""
    import fnmatch
    import importlib
    import pkgutil

    import yaml
    from prefect import Flow

    import flows

    rule = yaml.safe_load((DEFAULT_DIR / "flow-run-failed.yaml").read_text())
    globs = rule["trigger"]["match_related"]["prefect.resource.name"]
    names = set()
    for info in pkgutil.iter_modules(flows.__path__):
        module = importlib.import_module(f"flows.{info.name}")
        names |= {obj.name for obj in vars(module).values() if isinstance(obj, Flow)}
    assert {"backup", "restore", "coverage", "validate-restore", "drill-latest"} <= names
    assert [n for n in sorted(names) if not any(fnmatch.fnmatchcase(n, g) for g in globs)] == []


EMIT = """
import sys
from prefect.events import emit_event
resource = {"prefect.resource.id": sys.argv[2], "prefect.resource.name": sys.argv[3],
            "vaultflow.engine": "postgresql", "vaultflow.server": "db9:5432",
            "vaultflow.system_identifier": "7715524083311005561"}
emit_event(event=sys.argv[1], resource=resource,
           payload={"message": "SAS expired at 2026-12-01 00:00 UTC", "error": "row count differs in public.t",
                    "snapshot": "1a2b3c4d", "last_success": None, "newest_segment": "000000010000000000000007",
                    "detail": "newest archived segment 000000010000000000000007 is 42.0 min old (limit 15 min)"})
"""


@pytest.mark.parametrize(("event", "resource", "subject"), [
    ("vaultflow.drill.failed", "vaultflow.database.postgresql.db9:5432.{name}", "restore drill failed for {name}"),
    ("vaultflow.credentials.expiring", "vaultflow.repository.{name}", "credentials of {name} expire soon"),
    ("vaultflow.credentials.expired", "vaultflow.repository.{name}", "credentials of {name} have EXPIRED"),
    ("vaultflow.coverage.gap", "vaultflow.database.postgresql.db9:5432.{name}", "no recent backup of {name}"),
    ("vaultflow.wal-receiver.restarted", "vaultflow.server.postgresql.{name}", "wal-receiver.restarted on {name}"),
    ("vaultflow.binlog-stream.gap", "vaultflow.server.mysql.{name}", "binlog-stream.gap on {name}"),
    ("vaultflow.wal.lagging", "vaultflow.server.postgresql.{name}",
     "WAL archive of {name} is behind (vaultflow.wal.lagging)"),
    ("vaultflow.wal.gap", "vaultflow.server.postgresql.{name}", "WAL archive of {name} is behind (vaultflow.wal.gap)"),
])
def test_each_event_automation_alerts_the_webhook(prefect_server: PrefectServer, receiver: Receiver, event: str,
                                                  resource: str, subject: str) -> None:
    applied = prefect_server.run(*VAULTFLOW, "automations", "apply", "--webhook-url", receiver.url)
    assert applied.returncode == 0, applied.stderr
    name = f"vft{uuid.uuid4().hex[:8]}"
    emitted = prefect_server.run(sys.executable, "-c", EMIT, event, resource.format(name=name), name)
    assert emitted.returncode == 0, emitted.stderr
    receiver.wait_for(subject.format(name=name), timeout=90)


def test_a_silent_intake_alerts_after_its_last_heartbeat(prefect_server: PrefectServer, receiver: Receiver,
                                                         tmp_path: Path) -> None:
    rules = tmp_path / "automations"
    rules.mkdir()
    text = (DEFAULT_DIR / "intake-silent.yaml").read_text()
    (rules / "silent.yaml").write_text(text.replace("name: vaultflow-intake-silent", "name: test-silent")
                                       .replace("within: 5m", "within: 15s"))
    applied = prefect_server.run(*VAULTFLOW, "automations", "apply", "--dir", str(rules), "--webhook-url",
                                 receiver.url)
    assert applied.returncode == 0, applied.stderr
    name = f"vft{uuid.uuid4().hex[:8]}"
    emitted = prefect_server.run(sys.executable, "-c", EMIT, "vaultflow.wal-receiver.healthy",
                                 f"vaultflow.server.postgresql.{name}", name)
    assert emitted.returncode == 0, emitted.stderr
    alert = receiver.wait_for("no heartbeat from the intake of", name, timeout=90)
    assert "vaultflow.wal-receiver.healthy" in alert
