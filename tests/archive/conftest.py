"""Archive fixtures: one case per engine (PostgreSQL, MariaDB, SQLite), a repository, a catalog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.archive.cases import MYSQL_HOST, MYSQL_PORT, ArchiveCase, make_case
from tests.conftest import PASSPHRASE, port_open, refuse_without_services
from vaultflow.repository import Repository
from vaultflow.storage import LocalStore

ENGINES = ["postgresql", "mysql", "sqlite"]


@pytest.fixture(scope="session")
def mysql_available() -> None:
    refuse_without_services("MariaDB")
    if not port_open(MYSQL_HOST, MYSQL_PORT):
        pytest.fail(f"MariaDB is not reachable on {MYSQL_HOST}:{MYSQL_PORT}; start it (service mariadb start)")


@pytest.fixture(params=ENGINES)
def acase(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArchiveCase]:
    if request.param == "postgresql":
        request.getfixturevalue("pg_available")
    if request.param == "mysql":
        request.getfixturevalue("mysql_available")
    c = make_case(request.param, tmp_path)
    yield c
    c.cleanup()


@pytest.fixture
def repo(repo_path: Path) -> Repository:
    return Repository.open(LocalStore(repo_path), PASSPHRASE)
