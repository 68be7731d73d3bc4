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


@pytest.fixture(scope="session")
def pg_available() -> None:
    if not port_open(PG_HOST, PG_PORT):
        pytest.fail(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}; start it "
                    "(pg_ctlcluster --skip-systemctl-redirect 15 main start)")


@pytest.fixture(scope="session")
def mariadb_available() -> None:
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
    from tests.object_servers import moto_server

    with moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    """Azurite's blob service on a free loopback port for the session."""
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
