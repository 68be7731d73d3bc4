"""Discovery in the core: a user who may see no databases, unknown server URL schemes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from tests.conftest import my_admin
from vaultflow.discovery import discover_server
from vaultflow.engines import server_from_url
from vaultflow.engines.mysql.config import MySQLConnection
from vaultflow.engines.mysql.engine import MySQLEngine
from vaultflow.errors import InputError


@pytest.fixture
def powerless_user(mariadb_available: None) -> Iterator[str]:
    name = f"vft_{uuid.uuid4().hex[:8]}"
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", ("pw-123",))
    yield name
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")


def test_a_user_who_may_see_no_database_gets_a_warning(powerless_user: str) -> None:
    engine = MySQLEngine(MySQLConnection(user=powerless_user, password=SecretStr("pw-123"), database="mysql"))
    found = discover_server(engine, "mysql://powerless@127.0.0.1:3306")
    assert found.databases == []
    assert any("lists no databases" in w and "privilege" in w for w in found.warnings)


@pytest.mark.parametrize("url", ["sqlite:///x.db", "oracle://scott@db:1521", "db2://db2inst1@db:50000"])
def test_server_urls_of_other_kinds_are_refused(url: str) -> None:
    with pytest.raises(InputError, match="do not name a server"):
        server_from_url(url)


def test_server_url_without_a_database() -> None:
    assert server_from_url("mysql://backup@db3:3307").server_label() == "db3:3307"
    assert server_from_url("postgresql://postgres@db1").database == "postgres"
