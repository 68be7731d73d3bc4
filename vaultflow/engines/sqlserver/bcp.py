"""The logical path: `bcp ... queryout` per table (data only; not wired into backups).

bcp takes a SQL login's password only as -P on its command line, where every user of the
host can read it (/proc/PID/cmdline, ps). vaultflow never puts a secret in argv, so bcp
runs only with logins that need no password from us: Windows/Kerberos (-T) or Entra ID
(-G). bcp writes to a file, never to stdout, so the rows come through a FIFO.

NEVER RUN AGAINST A REAL SERVER: the tests run a stand-in bcp script, not Microsoft's bcp.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from vaultflow.engines.base import StreamSource
from vaultflow.engines.sqlserver.client import map_error
from vaultflow.engines.sqlserver.config import SqlServerConnection
from vaultflow.engines.sqlserver.sql import quote_name
from vaultflow.errors import InputError, ToolFailed, VaultflowError

if TYPE_CHECKING:
    from vaultflow.engines.sqlserver.engine import SqlServerEngine

BCP_FORMAT = "mssql-bcp-native"  # one table's rows in bcp native format (-n), in primary key order; no schema
BCP_AUTHS = ("trusted", "entra")

def check_bcp_login(conn: SqlServerConnection, auth: str | None) -> str:
    """The bcp login kind, or one line saying why a SQL-password login cannot use bcp."""
    if auth not in BCP_AUTHS or conn.password is not None:
        raise InputError(
            f"bcp cannot log in to {conn.server_label()} as SQL login {conn.user!r} without putting its password "
            "on the command line (-P), where other users of this host can read it",
            "use the native path (BACKUP through staging), or a Kerberos/Windows login (bcp_auth=trusted) or an "
            "Entra ID login (bcp_auth=entra) without a password in vaultflow")
    return auth


def bcp_queryout_argv(tool: str, conn: SqlServerConnection, auth: str, schema: str, table: str,
                      key_columns: list[str], out_path: str) -> list[str]:
    """argv of `bcp "SELECT ... ORDER BY key" queryout FILE -n`: native format, rows in key
    order (so unchanged rows give the same bytes, and chunks, again). No password, ever."""
    auth = check_bcp_login(conn, auth)
    query = f"SELECT * FROM {quote_name(conn.database)}.{quote_name(schema)}.{quote_name(table)}"
    if key_columns:
        query += " ORDER BY " + ", ".join(quote_name(c) for c in key_columns)
    argv = [tool, query, "queryout", out_path, "-n", "-S", f"tcp:{conn.host},{conn.port}", "-d", conn.database]
    argv.append("-T" if auth == "trusted" else "-G")
    if conn.trust_server_certificate:
        argv.append("-u")  # mssql-tools18: trust the server certificate
    return argv


@contextmanager
def fifo_tool_stream(argv_for: Callable[[str], list[str]], what: str, timeout: float | None = None,
                     error: Callable[[str], VaultflowError] | None = None) -> Iterator[IO[bytes]]:
    """Run a tool that writes one file, given a FIFO as that file, and yield the FIFO's read
    end. The FIFO is in a private (0700) directory removed afterwards. A tool that exits
    without opening the FIFO does not leave the reader waiting: its exit is noticed and its
    last error line raised. Leaving the context checks the tool's exit status."""
    import shutil
    import subprocess
    import tempfile
    import threading

    from vaultflow.engines.process import ToolProcess

    workdir = tempfile.mkdtemp(prefix="vaultflow-bcp-")
    fifo = os.path.join(workdir, "rows")
    os.mkfifo(fifo, 0o600)
    try:
        with ToolProcess(argv_for(fifo), stdout=subprocess.DEVNULL, timeout=timeout) as proc:
            opened = threading.Event()

            def unblock_reader() -> None:
                proc.proc.wait()
                # If it never opened the FIFO, our open() below waits for a writer forever:
                # be that writer (until our open() is in, it fails with ENXIO) and close at once.
                while not opened.is_set():
                    try:
                        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                        return
                    except OSError:
                        opened.wait(0.01)

            threading.Thread(target=unblock_reader, daemon=True).start()
            with open(fifo, "rb") as stream:
                opened.set()
                yield stream
                while stream.read(1024 * 1024):
                    pass  # whatever the reader left, so the tool can finish
            code = proc.wait()
            if code != 0 or proc.timed_out:
                line = proc.last_error_line() or f"exit status {code}"
                if proc.timed_out:
                    line = f"killed after its {timeout:.0f} s deadline"
                raise error(line) if error else ToolFailed(f"{what} failed: {line[:300]}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bcp_sources(engine: SqlServerEngine, auth: str, timeout: float | None = None) -> list[StreamSource]:
    """One source per user table of `engine`'s database (see `SqlServerEngine.bcp_sources`)."""
    conn = engine.conn
    check_bcp_login(conn, auth)
    tool = engine._tool("bcp")
    client = engine.client()
    keys: dict[tuple[str, str], list[str]] = {}
    for schema, table, column in client.primary_keys(conn.database):
        keys.setdefault((schema, table), []).append(column)
    sources = []
    for schema, table, _ in client.table_stats(conn.database):
        key = keys.get((schema, table), [])

        def argv_for(path: str, schema: str = schema, table: str = table, key: list[str] = key) -> list[str]:
            return bcp_queryout_argv(tool, conn, auth, schema, table, key, path)

        def open_table(argv_for: Callable[[str], list[str]] = argv_for, schema: str = schema, table: str = table
                       ) -> Any:
            what = f"bcp of table {schema}.{table} of {engine.describe()}"
            return fifo_tool_stream(argv_for, what, timeout, lambda line: _bcp_error(engine, what, line))

        sources.append(StreamSource(f"{schema}.{table}", BCP_FORMAT, open_table,
                                    meta={"order": ",".join(key) or "none (no primary key)"}))
    return sources


def _bcp_error(engine: SqlServerEngine, what: str, line: str) -> VaultflowError:
    """bcp's last error line (`SQLState = 08001, NativeError = 2 Error = [...]...`) as the
    error map_error gives for the same SQLSTATE and native number, saying it was bcp."""
    state = re.search(r"SQLState = (\w+)", line)
    native = re.search(r"NativeError = (\d+)", line)
    text = re.search(r"NativeError = \d+,?\s*Error = (.*)", line)
    message = (text.group(1) if text else line) + (f" ({native.group(1)})" if native else "")
    mapped = map_error(Exception(state.group(1) if state else "", message), engine.server_label(),
                       engine.conn.database)
    return type(mapped)(f"{what} failed: {mapped.what}", mapped.fix)
