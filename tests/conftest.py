"""Shared fixtures: real PostgreSQL, one Prefect test harness, isolated homes, the CLI.

A missing service fails the test that needs it (never a skip): these tests are only
meaningful against the real components.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

if TYPE_CHECKING:
    from tests.engines.cases import EngineCase
    from tests.object_servers import AzuriteServer, S3Server

PG_HOST, PG_PORT = "127.0.0.1", 5432
MY_HOST, MY_PORT = "127.0.0.1", 3306
PASSPHRASE = "correct horse battery staple"
ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


SERVICE_FIXTURES = frozenset({
    "pg_available", "mariadb_available", "mysql_available", "prefect_api", "prefect_server", "s3_server", "azurite",
    "private_cluster", "archiving_cluster", "s3_with_auth",  # a PostgreSQL cluster / moto server of the test's own
})
"""Fixtures that reach a server (PostgreSQL, MariaDB, a Prefect API, moto's S3, Azurite): a test that
uses one, directly or through another fixture, is marked `services`."""
SERVICE_PARAMS = frozenset({"postgresql", "mariadb", "mysql", "s3", "azure"})
"""Parameter values that pick a server (the `case`, `acase`, `store`, `remote` fixtures ask for its
fixture with request.getfixturevalue, which collection cannot see)."""
SERVICE_FIXTURE_PARAMS = frozenset({("setup", "url")})
"""(fixture, parameter) pairs that pick a server under a name too general for SERVICE_PARAMS
(SQL Server staging TO URL goes through Azurite)."""
SLOW_TESTS = frozenset({
    "tests/deployments/test_specs.py::test_automations_compare_equal_whatever_the_hash_seed",
    "tests/deployments/test_specs.py::test_deploy_check_refuses_with_exit_2",
    "tests/test_backup.py::test_chain_of_kinds",
    "tests/catalog/test_catalog.py::test_drills_are_recorded_and_stats_show_last_proven_restorable",
    "tests/repository/test_repository.py::test_memory_is_bounded_by_chunk_size",
    "tests/engines/test_roundtrip.py::test_backup_during_concurrent_writes_is_consistent",
    "tests/archive/test_crash_safety.py::test_row_changed_after_verify_stays_in_source",
    "tests/archive/test_crash_safety.py::test_killed_run_then_rerun_holds_every_row_once",
    "tests/test_prune.py::test_backup_running_during_prune_loses_nothing",
    "tests/archive/test_roundtrip.py::test_archive_read_unarchive_roundtrip",
    "tests/storage/test_faults.py::test_backup_and_restore_round_trip_under_ten_percent_transient_failures",
})
"""Service-free tests that took over 4 s each on two busy cores: marked `slow`, left out of
`make check` (which stays near a minute) and run by `make test`."""
LONGEST_FILES = ("tests/deployments/test_deploy_all.py", "tests/deployments/test_serve.py",
                 "tests/deployments/test_automations.py", "tests/flows/test_discovery_fleet.py",
                 "tests/cli/test_cli.py")
"""Collected first, in this order: `make test` hands out whole files (`--dist loadfile`) in
collection order (`--no-loadscope-reorder`; xdist would otherwise start the files with the most
tests first), so the files that take minutes start at once instead of last."""
NO_SERVICES_ENV = "VAULTFLOW_TESTS_NO_SERVICES"
"""Set by `make check`: a service fixture then fails, so a test that needs a server but is not
marked `services` shows up instead of quietly using one."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "services: needs PostgreSQL, MariaDB, a Prefect API, S3 or Azurite "
                                       "(set automatically; `make check` runs -m 'not services and not slow')")
    config.addinivalue_line("markers", "slow: service-free but takes seconds (SLOW_TESTS); only `make test` runs it")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `services` every test that uses a service fixture or a server-picking parameter,
    and `slow` the tests of SLOW_TESTS."""
    for item in items:
        if item.nodeid.split("[", 1)[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        callspec = getattr(item, "callspec", None)
        params = callspec.params.items() if callspec is not None else ()
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())) or any(
                isinstance(value, str) and (value in SERVICE_PARAMS or (name, value) in SERVICE_FIXTURE_PARAMS)
                for name, value in params):
            item.add_marker(pytest.mark.services)
    first = {path: rank for rank, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: first.get(item.nodeid.split("::", 1)[0], len(first)))


def refuse_without_services(service: str) -> None:
    """Fail when `make check` (no services) reaches a fixture that needs `service`."""
    if os.environ.get(NO_SERVICES_ENV):
        pytest.fail(f"{service} is needed by a test not marked `services` ({NO_SERVICES_ENV} is set): add the "
                    "fixture to SERVICE_FIXTURES or the parameter to SERVICE_PARAMS in tests/conftest.py")


@pytest.fixture(scope="session")
def pg_available() -> None:
    refuse_without_services("PostgreSQL")
    if not port_open(PG_HOST, PG_PORT):
        pytest.fail(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}; start it "
                    "(pg_ctlcluster --skip-systemctl-redirect 15 main start)")


@pytest.fixture(scope="session")
def mariadb_available() -> None:
    refuse_without_services("MariaDB")
    if not port_open(MY_HOST, MY_PORT):
        pytest.fail(f"MariaDB is not reachable on {MY_HOST}:{MY_PORT}; start it (service mariadb start)")


def my_admin(database: str | None = None) -> Any:
    """A pymysql connection as root (autocommit)."""
    import pymysql

    return pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", password="", database=database,
                           autocommit=True, charset="utf8mb4")


def drop_my_database(name: str) -> None:
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def my_url(database: str) -> str:
    return f"mysql://root@{MY_HOST}:{MY_PORT}/{database}"


def pg_admin() -> psycopg.Connection:  # type: ignore[type-arg]
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                           autocommit=True)


def drop_pg_database(name: str) -> None:
    with pg_admin() as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database(pg_available: None) -> Iterator[Callable[..., str]]:
    """Factory: create=True makes an empty database; every name is dropped afterwards."""
    names: list[str] = []

    def make(create: bool = True) -> str:
        name = f"vft_{uuid.uuid4().hex[:10]}"
        names.append(name)
        if create:
            with pg_admin() as c:
                c.execute(f'CREATE DATABASE "{name}"')
        return name

    yield make
    for name in names:
        drop_pg_database(name)


def pg_url(database: str) -> str:
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{database}"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own catalog home; the repository passphrase is set."""
    home = tmp_path_factory.mktemp("vfhome")
    monkeypatch.setenv("VAULTFLOW_HOME", str(home))
    monkeypatch.delenv("VAULTFLOW_CATALOG_URL", raising=False)
    monkeypatch.delenv("VAULTFLOW_REPO", raising=False)
    monkeypatch.setenv("VAULTFLOW_PASSPHRASE", PASSPHRASE)
    return home


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    """An initialised local repository."""
    from vaultflow.repository import Repository
    from vaultflow.storage import LocalStore

    path = tmp_path / "repo"
    Repository.init(LocalStore(path), PASSPHRASE)
    return path


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect test harness for the session; yields its API URL (for subprocesses too)."""
    refuse_without_services("a Prefect API")
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            url = PREFECT_API_URL.value()
            assert url, "the Prefect test harness did not set an API URL"
            yield url


@pytest.fixture
def cli(prefect_api: str, isolated_home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `vaultflow` command against the session's Prefect API."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        if CLI_IN_PROCESS:
            return _run_cli_in_process(list(args), {"PREFECT_API_URL": prefect_api, **(env or {})}, input)
        full_env = dict(os.environ)
        full_env["PREFECT_API_URL"] = prefect_api
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "vaultflow.cli.main", *args], env=full_env, cwd=ROOT,
            capture_output=True, text=True, timeout=timeout, input=input,
        )

    return run


# The `cli` fixture runs the command in this process (typer's runner): a new interpreter
# per call costs ~2-3 s of imports, most of the suite's time. VAULTFLOW_TEST_CLI=subprocess
# runs each call as its own process instead, exactly as a user would.
CLI_IN_PROCESS = os.environ.get("VAULTFLOW_TEST_CLI", "in-process") != "subprocess"


def _run_cli_in_process(args: list[str], env: dict[str, str], input: str | None
                        ) -> subprocess.CompletedProcess[str]:
    """One CLI call with the environment it would get as a process, restored afterwards (the
    CLI sets variables for the flows it runs); an uncaught exception prints its traceback to
    stderr and exits 1, as the interpreter would."""
    import traceback

    from typer.testing import CliRunner

    from vaultflow.cli.main import app

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        result = CliRunner().invoke(app, args, input=input, catch_exceptions=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    stderr = result.stderr
    code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
        code = 1
    return subprocess.CompletedProcess(["vaultflow", *args], code, result.stdout, stderr)


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def case(request: pytest.FixtureRequest) -> Iterator[EngineCase]:
    """One engine test case per engine: every engine test runs against each of them."""
    from tests.engines.cases import ENGINE_CASES

    assert sorted(ENGINE_CASES) == ["mariadb", "postgresql", "sqlite"], "add the new engine to this fixture's params"
    if request.param == "postgresql":
        request.getfixturevalue("pg_available")
    if request.param == "mariadb":
        request.getfixturevalue("mariadb_available")
    c = ENGINE_CASES[request.param]()
    yield c
    c.cleanup()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port for the session."""
    refuse_without_services("moto's S3 server")
    from tests.object_servers import moto_server

    with moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    """Azurite's blob service on a free loopback port for the session."""
    refuse_without_services("Azurite")
    from tests.object_servers import azurite_server

    with azurite_server() as server:
        yield server


@pytest.fixture
def s3_repo(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """An initialised repository in a new moto bucket; the AWS environment points at it."""
    from vaultflow.repository import Repository
    from vaultflow.storage import open_store

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    location = f"s3://{s3_server.new_bucket()}/repo"
    Repository.init(open_store(location), PASSPHRASE)
    return location


@pytest.fixture
def azure_repo(azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """An initialised repository in a new Azurite container; the connection string is set."""
    from vaultflow.repository import Repository
    from vaultflow.storage import open_store

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    location = f"az://{azurite.new_container()}/repo"
    Repository.init(open_store(location), PASSPHRASE)
    return location
