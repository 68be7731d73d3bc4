"""The quick tier (`make check`): tests reaching a server are marked `services` and left out."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import NO_SERVICES_ENV, ROOT


def collected(*args: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k != NO_SERVICES_ENV}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                          "-p", "no:xdist", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return {line.split("::", 1)[1] for line in out.stdout.splitlines() if "::" in line}


def test_tests_using_a_server_are_marked_services() -> None:
    module = "tests/engines/conformance/test_conformance.py"
    services = collected(module, "-m", "services", "-k", "round_trip or lists_its")
    assert services == {f"{name}[{engine}]" for name in ("test_lists_its_databases",
                                                         "test_round_trip_of_the_nasty_fixture")
                        for engine in ("postgresql", "mysql")}
    quick = collected(module, "tests/engines/sqlserver/test_sqlserver_engine.py", "-m", "not services",
                      "-k", "round_trip")
    assert quick == {"test_round_trip_of_the_nasty_fixture[sqlite]", "test_round_trip_of_the_nasty_fixture[files]",
                     "test_round_trip_of_the_nasty_fixture[sqlserver-stand-in-not-a-real-server]",
                     "test_native_backup_round_trip_not_run_against_a_real_sql_server[disk]"}
