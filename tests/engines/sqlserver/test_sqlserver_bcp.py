"""The SQL Server logical path: bcp argv and FIFO streaming.

NOT RUN AGAINST A REAL SQL SERVER, AND NOT WITH THE REAL bcp: neither exists on these
machines. The argv is checked as text; the FIFO streaming runs for real with a STAND-IN
`bcp` shell script put on the engine's bin_dir by the test, which records its argv and
writes deterministic bytes to the file bcp would write (the FIFO). The catalog queries go
to the same fake SQL Server as in test_sqlserver_engine.py.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.engines.sqlserver.stand_in import FakeSqlServer, client_factory
from vaultflow.engines.sqlserver.bcp import BCP_FORMAT, bcp_queryout_argv
from vaultflow.engines.sqlserver.config import SqlServerConnection
from vaultflow.engines.sqlserver.engine import SqlServerEngine
from vaultflow.engines.sqlserver.sql import TABLE_STATS
from vaultflow.errors import ConnectionFailed, InputError, ToolFailed

STAND_IN_BCP = """#!/bin/sh
# STAND-IN for Microsoft's bcp, for tests only: not the real tool.
printf '%s\\n' "$@" >> "$BCP_ARGV_LOG"
echo "----" >> "$BCP_ARGV_LOG"
odbc="[Microsoft][ODBC Driver 18 for SQL Server]"
case "$1" in
  *fail_early*) echo "SQLState = 08001, NativeError = 2 Error = ${odbc}Login timeout expired" >&2; exit 1 ;;
esac
rows='import random, sys; sys.stdout.buffer.write(random.Random(sys.argv[1]).randbytes(3 * 1024 * 1024 + 7))'
"$BCP_PYTHON" -c "$rows" "$1" > "$3" || exit 1
case "$1" in
  *fail_late*) echo "SQLState = 08S01, NativeError = 0 Error = ${odbc}Communication link failure" >&2; exit 1 ;;
esac
echo "3 rows copied."
"""


def rows_for(query: str) -> bytes:
    import random

    return random.Random(query).randbytes(3 * 1024 * 1024 + 7)


@pytest.fixture
def bcp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "bcp"
    tool.write_text(STAND_IN_BCP)
    tool.chmod(0o755)
    monkeypatch.setenv("BCP_ARGV_LOG", str(tmp_path / "argv.log"))
    monkeypatch.setenv("BCP_PYTHON", sys.executable)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the FIFO directory goes
    return bindir


KERBEROS = SqlServerConnection(host="sql1", user="CORP\\svc-backup", database="sales")


def test_bcp_argv_has_no_password_and_orders_by_the_key() -> None:
    argv = bcp_queryout_argv("/opt/mssql-tools18/bin/bcp", KERBEROS, "trusted", "dbo", "or]ders",
                                ["region", "id"], "/tmp/x/rows")
    assert argv == ["/opt/mssql-tools18/bin/bcp", "SELECT * FROM [sales].[dbo].[or]]ders] ORDER BY [region], [id]",
                    "queryout", "/tmp/x/rows", "-n", "-S", "tcp:sql1,1433", "-d", "sales", "-T"]
    entra = SqlServerConnection(host="mi1.database.windows.net", database="sales", trust_server_certificate=True)
    argv = bcp_queryout_argv("bcp", entra, "entra", "dbo", "t", [], "/f")
    assert argv[1] == "SELECT * FROM [sales].[dbo].[t]" and argv[-2:] == ["-G", "-u"]
    assert "-P" not in argv and "-U" not in argv


@pytest.mark.parametrize("auth, password", [("trusted", "s3cret-pw"), (None, None), ("sql", None)])
def test_bcp_refuses_sql_password_logins_with_one_line(auth: str | None, password: str | None) -> None:
    conn = SqlServerConnection(host="sql1", user="backup", password=SecretStr(password) if password else None,
                                  database="sales")
    with pytest.raises(InputError) as err:
        bcp_queryout_argv("bcp", conn, auth, "dbo", "t", [], "/f")  # type: ignore[arg-type]
    line = err.value.line()
    assert "\n" not in line and "(-P)" in line and "native path" in line and "Kerberos" in line
    assert "Entra ID" in line and "s3cret" not in line


def engine(bcp_dir: Path, server: FakeSqlServer | None = None) -> SqlServerEngine:
    from dataclasses import replace

    return SqlServerEngine(replace(KERBEROS, bin_dir=str(bcp_dir)), None,
                              client_factory=client_factory(server or FakeSqlServer()))


def test_bcp_rows_stream_through_a_fifo_with_a_stand_in_bcp_not_run_against_a_real_sql_server(
        bcp_dir: Path, tmp_path: Path) -> None:
    sources = engine(bcp_dir).bcp_sources("trusted")
    assert [(s.name, s.format, s.meta["order"]) for s in sources] == [
        ("dbo.customers", BCP_FORMAT, "id"), ("dbo.orders", BCP_FORMAT, "region,id")]
    for source in sources:
        with source.open() as stream:
            assert not isinstance(stream, (bytes, str))
            assert os.path.basename(stream.name) == "rows"  # a FIFO, not a spooled file
            data = b""
            while block := stream.read(256 * 1024):
                data += block
        query = "SELECT * FROM [sales].[dbo].[orders] ORDER BY [region], [id]" if source.name == "dbo.orders" \
            else "SELECT * FROM [sales].[dbo].[customers] ORDER BY [id]"
        assert data == rows_for(query)
    argv_log = (tmp_path / "argv.log").read_text()
    assert argv_log.count("-T\n") == 2 and "-P" not in argv_log
    assert not list(tmp_path.glob("vaultflow-bcp-*"))  # the FIFO directories are gone


def test_bcp_that_never_opens_the_fifo_fails_at_once_not_run_against_a_real_sql_server(
        bcp_dir: Path, tmp_path: Path) -> None:
    class FailEarly(FakeSqlServer):
        def run(self, statement: str, database: str) -> list[tuple[object, ...]]:
            if statement == TABLE_STATS:
                return [("dbo", "fail_early", 1)]
            return super().run(statement, database)

    source = engine(bcp_dir, FailEarly()).bcp_sources("trusted")[0]
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as err, source.open() as stream:
        assert stream.read() == b""
    assert time.monotonic() - started < 20
    line = err.value.line()
    assert line.startswith("bcp of table dbo.fail_early of SQL Server database 'sales' on sql1:1433 failed: cannot "
                           "reach SQL Server at sql1:1433 (Login timeout expired (2))")
    assert "\n" not in line and err.value.transient
    assert not list(tmp_path.glob("vaultflow-bcp-*"))


def test_bcp_failing_mid_table_fails_when_the_stream_is_closed_not_run_against_a_real_sql_server(
        bcp_dir: Path, tmp_path: Path) -> None:
    class FailLate(FakeSqlServer):
        def run(self, statement: str, database: str) -> list[tuple[object, ...]]:
            if statement == TABLE_STATS:
                return [("dbo", "fail_late", 1)]
            return super().run(statement, database)

    source = engine(bcp_dir, FailLate()).bcp_sources("trusted")[0]
    with pytest.raises(ConnectionFailed, match="Communication link failure"), source.open() as stream:
        assert len(stream.read()) == 3 * 1024 * 1024 + 7
    assert not list(tmp_path.glob("vaultflow-bcp-*"))


def test_bcp_missing_names_the_tools(tmp_path: Path) -> None:
    with pytest.raises(ToolFailed, match="bcp not found in .*mssql-tools18"):
        engine(tmp_path).bcp_sources("trusted")
