"""Archival connects through each engine's own connection settings and error mapping: a
rejected password is permanent (never retried), an unreachable server transient.

PostgreSQL password tests use the private scram-sha-256 cluster of the engine error tests
(the shared server on 127.0.0.1:5432 trusts everyone); MySQL ones a throw-away user on the
local MariaDB.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.archive.cases import MYSQL_HOST, MYSQL_PORT, mysql_admin
from tests.engines.postgres.test_errors import (  # noqa: F401 - private_cluster is a fixture
    WRONG_PASSWORD,
    PrivateCluster,
    assert_clean_error,
    free_port,
    private_cluster,
)
from vaultflow.archive import source_from_engine, source_from_url
from vaultflow.engines import CapabilityMissing, engine_from_url, engines
from vaultflow.engines.mysql.config import MySQLConnection
from vaultflow.engines.mysql.engine import MySQLEngine
from vaultflow.errors import AuthenticationFailed, ConnectionFailed, VaultflowError

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def no_ambient_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))


# -- PostgreSQL --------------------------------------------------------------------------------


def test_postgres_wrong_password_is_permanent_authentication_failed(
        private_cluster: PrivateCluster, no_ambient_password: None) -> None:  # noqa: F811
    source = source_from_engine(private_cluster.engine("postgres", password=WRONG_PASSWORD))
    with pytest.raises(AuthenticationFailed) as info:
        source.connect()
    assert info.value.transient is False
    assert_clean_error(info.value, names=[f"127.0.0.1:{private_cluster.port}"], secrets=[WRONG_PASSWORD])
    assert WRONG_PASSWORD not in repr(source)


def test_postgres_right_password_connects(private_cluster: PrivateCluster,  # noqa: F811
                                          no_ambient_password: None) -> None:
    conn = source_from_engine(private_cluster.engine("postgres")).connect()
    try:
        assert conn.query("SELECT current_setting('TimeZone')") == [("UTC",)]
    finally:
        conn.close()


def test_postgres_nothing_listening_is_transient_connection_failed(no_ambient_password: None) -> None:
    port = free_port()
    with pytest.raises(ConnectionFailed) as info:
        source_from_url(f"postgresql://postgres@127.0.0.1:{port}/postgres").connect()
    assert info.value.transient is True
    assert_clean_error(info.value, names=[f"127.0.0.1:{port}"])


def _run_archive_task(prefect_api: str, monkeypatch: pytest.MonkeyPatch, source: str,
                      repo_path: Path) -> tuple[BaseException, int]:
    """Run the archive-table task (with its own retry condition, no delay) in a flow; the
    error it ended with and how many attempts resolved the source."""
    from prefect import flow

    import tasks.archive
    from blocks.archive import ArchiveRule

    attempts = 0
    real_resolve = tasks.archive.resolve_source

    def counting_resolve(ref: str) -> Any:
        nonlocal attempts
        attempts += 1
        return real_resolve(ref)

    monkeypatch.setattr(tasks.archive, "resolve_source", counting_resolve)
    rule = ArchiveRule(source=source, table="events", age_column="created_at", archive_after_days=30)
    task = tasks.archive.archive_policy_rows.with_options(retry_delay_seconds=0, retry_jitter_factor=None)

    @flow(name="archive-task-retries")
    def run() -> object:
        return task(rule, str(repo_path), False)

    with pytest.raises(VaultflowError) as info:
        run()
    return info.value, attempts


def test_archive_task_does_not_retry_a_wrong_postgres_password(
        prefect_api: str, private_cluster: PrivateCluster, no_ambient_password: None,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, repo_path: Path) -> None:
    monkeypatch.setenv("PGPASSWORD", WRONG_PASSWORD)
    error, attempts = _run_archive_task(
        prefect_api, monkeypatch, f"postgresql://postgres@127.0.0.1:{private_cluster.port}/postgres", repo_path)
    assert isinstance(error, AuthenticationFailed)
    assert attempts == 1, "a rejected password was retried"


def test_archive_task_retries_an_unreachable_server(
        prefect_api: str, no_ambient_password: None, monkeypatch: pytest.MonkeyPatch, repo_path: Path) -> None:
    from tasks.retry_policy import RETRIES

    error, attempts = _run_archive_task(
        prefect_api, monkeypatch, f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", repo_path)
    assert isinstance(error, ConnectionFailed)
    assert attempts == RETRIES + 1


# -- MariaDB / MySQL ---------------------------------------------------------------------------


@pytest.fixture
def mysql_user(mysql_available: None) -> Iterator[tuple[str, str]]:
    """A throw-away MariaDB user with a password: (user, password)."""
    user, password = f"vfa_{uuid.uuid4().hex[:10]}", f"vf-right-{uuid.uuid4().hex}"
    with mysql_admin() as c, c.cursor() as cur:
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        cur.execute("CREATE USER %s@'localhost' IDENTIFIED BY %s", (user, password))
    try:
        yield user, password
    finally:
        with mysql_admin() as c, c.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
            cur.execute("DROP USER IF EXISTS %s@'localhost'", (user,))


def _mysql_source(user: str, password: str, port: int = MYSQL_PORT) -> Any:
    return source_from_engine(MySQLEngine(MySQLConnection(
        host=MYSQL_HOST, port=port, user=user, database="information_schema", password=SecretStr(password),
        connect_timeout=5)))


def test_mysql_wrong_password_is_permanent_authentication_failed(
        mysql_user: tuple[str, str], no_ambient_password: None) -> None:
    user, password = mysql_user
    _mysql_source(user, password).connect().close()  # the user exists and the right password works
    with pytest.raises(AuthenticationFailed) as info:
        _mysql_source(user, WRONG_PASSWORD).connect()
    assert info.value.transient is False
    assert_clean_error(info.value, names=[f"{MYSQL_HOST}:{MYSQL_PORT}", user], secrets=[WRONG_PASSWORD, password])


def test_mysql_nothing_listening_is_transient_connection_failed(no_ambient_password: None) -> None:
    port = free_port()
    with pytest.raises(ConnectionFailed) as info:
        _mysql_source("root", WRONG_PASSWORD, port).connect()
    assert info.value.transient is True
    assert_clean_error(info.value, names=[f"{MYSQL_HOST}:{port}"], secrets=[WRONG_PASSWORD])


# -- engines without archival ------------------------------------------------------------------


def test_engine_without_archival_is_refused_in_one_line() -> None:
    with pytest.raises(CapabilityMissing) as info:
        source_from_engine(engine_from_url("mssql://sa@db5:1433/erp"))
    assert_clean_error(info.value, names=["SQL Server", "row archival"])


def test_every_archival_engine_names_its_dialect() -> None:
    assert [s.name for s in engines() if s.capabilities.archival] == [
        s.name for s in engines() if s.archive_source is not None]
