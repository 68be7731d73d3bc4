"""SQL Server: generated T-SQL, ODBC connection strings, error mapping, the missing driver.

No SQL Server runs here, so nothing in this file talks to one: these tests check text.
"""

from __future__ import annotations

import sys

import pytest
from pydantic import SecretStr

from vaultflow.engines.sqlserver.client import SqlServerClient, map_error
from vaultflow.engines.sqlserver.config import SqlServerConnection, connection_string
from vaultflow.engines.sqlserver.sql import (
    DEFAULT_PATHS,
    SERVER_INFO,
    backup_to_disk_sql,
    backup_to_url_sql,
    database_exists_sql,
    filelist_sql,
    restore_with_move_sql,
    sas_credential_sql,
    table_checksum_sql,
)
from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    InputError,
    TargetNotEmpty,
    ToolFailed,
)


def test_connection_string_escapes_and_hides_the_password() -> None:
    conn = SqlServerConnection(host="sql1.example", port=14330, user="backup;x", password=SecretStr("p}w;d"),
                                  database="sales db")
    text = connection_string(conn)
    assert text.startswith("DRIVER={ODBC Driver 18 for SQL Server};SERVER=tcp:sql1.example,14330;")
    assert "UID={backup;x};" in text and "PWD={p}}w;d};" in text and "DATABASE=sales db;" in text
    assert "Encrypt=yes;TrustServerCertificate=no;" in text
    safe = connection_string(conn, with_password=False)
    assert "p}}w;d" not in safe and "PWD={***}" in safe


def test_backup_to_disk_is_copy_only_with_checksum() -> None:
    sql = backup_to_disk_sql("sa]les", r"D:\backup\it's.bak", compression=True)
    assert sql == ("BACKUP DATABASE [sa]]les] TO DISK = N'D:\\backup\\it''s.bak' WITH COPY_ONLY, CHECKSUM, "
                   "COMPRESSION, FORMAT, INIT, STATS = 10")


def test_backup_to_url_stripes_and_credential() -> None:
    urls = [f"https://acct.blob.core.windows.net/bak/sales_{i}.bak" for i in range(2)]
    sql = backup_to_url_sql("sales", urls)
    assert sql.startswith("BACKUP DATABASE [sales] TO URL = N'https://acct.blob.core.windows.net/bak/sales_0.bak', "
                          "URL = N'https://acct.blob.core.windows.net/bak/sales_1.bak' WITH COPY_ONLY, CHECKSUM")
    assert "MAXTRANSFERSIZE = 4194304, BLOCKSIZE = 65536" in sql
    cred = sas_credential_sql("https://acct.blob.core.windows.net/bak/", SecretStr("?sv=2024&sig=a'b"))
    assert ("CREATE CREDENTIAL [https://acct.blob.core.windows.net/bak] "
            "WITH IDENTITY = 'SHARED ACCESS SIGNATURE'") in cred
    assert "SECRET = N'sv=2024&sig=a''b'" in cred
    with pytest.raises(InputError, match="without a query string"):
        backup_to_url_sql("sales", ["https://acct.blob.core.windows.net/bak/x.bak?sv=1"])


def test_restore_with_move_gives_every_file_a_new_name() -> None:
    files = [("sales", "D"), ("sales_2", "D"), ("sales_log", "L")]
    sql = restore_with_move_sql("sales_copy", files, data_dir="/var/opt/mssql/data", log_dir="/var/opt/mssql/log",
                                   disk="/backups/sales.bak")
    assert sql == ("RESTORE DATABASE [sales_copy] FROM DISK = N'/backups/sales.bak' WITH "
                   "MOVE N'sales' TO N'/var/opt/mssql/data/sales_copy.mdf', "
                   "MOVE N'sales_2' TO N'/var/opt/mssql/data/sales_copy_1.ndf', "
                   "MOVE N'sales_log' TO N'/var/opt/mssql/log/sales_copy_log.ldf', CHECKSUM, RECOVERY, STATS = 10")
    assert "REPLACE" not in sql
    win = restore_with_move_sql("c", [("d", "D")], data_dir="D:\\data\\", log_dir="L:\\", disk="x.bak")
    assert "MOVE N'd' TO N'D:\\data\\c.mdf'" in win
    with pytest.raises(InputError):
        filelist_sql()


@pytest.mark.parametrize("args, expected", [
    (("28000", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'bk'. (18456) "
      "(SQLDriverConnect)"), AuthenticationFailed),
    (("42000", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Cannot open database \"x\" requested by the "
      "login. The login failed. (4060) (SQLDriverConnect)"), DatabaseNotFound),
    (("HYT00", "[Microsoft][ODBC Driver 18 for SQL Server]Login timeout expired (0) (SQLDriverConnect)"),
     ConnectionFailed),
    (("42000", "[SQL Server]Database 'x' is not currently available. (40613)"), ConnectionFailed),
    (("42000", "[SQL Server]Database 'c' already exists. Choose a different database name. (1801)"), TargetNotEmpty),
    (("42000", "[SQL Server]Cannot open backup device 'D:\\b.bak'. Operating system error 5. (3201)"), ToolFailed),
    (("01000", "[unixODBC][Driver Manager]Can't open lib 'ODBC Driver 18 for SQL Server' : file not found (0) "
      "(SQLDriverConnect)"), ToolFailed),
])
def test_error_mapping(args: tuple[str, str], expected: type[Exception]) -> None:
    err = map_error(Exception(*args), "sql1:1433", "x")
    assert type(err) is expected
    assert "\n" not in err.line() and "sql1:1433" in err.line() or "msodbcsql18" in err.line()
    assert ConnectionFailed is not expected or err.transient


def test_missing_pyodbc_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyodbc", None)  # import fails as if not installed
    with pytest.raises(ToolFailed) as err:
        SqlServerClient(SqlServerConnection(host="sql1")).list_databases()
    line = err.value.line()
    assert "pyodbc" in line and "msodbcsql18" in line and "unixodbc" in line


def test_block_connection_strings() -> None:
    from blocks import SqlServer

    block = SqlServer(host="sql1", password=SecretStr("x"))
    assert "PWD={x}" in connection_string(block.connection("sales")) and "DATABASE=sales" in \
        connection_string(block.connection("sales"))


def test_restore_from_url_and_catalog_queries() -> None:
    url = "https://acct.blob.core.windows.net/bak/vaultflow-staging/vf-1-sales.bak"
    assert filelist_sql(urls=[url]) == f"RESTORE FILELISTONLY FROM URL = N'{url}'"
    sql = restore_with_move_sql("new", [("sales", "D"), ("sales_log", "L")], data_dir="/d", log_dir="/l",
                                   urls=[url])
    assert sql.startswith(f"RESTORE DATABASE [new] FROM URL = N'{url}' WITH MOVE N'sales' TO N'/d/new.mdf'")
    assert database_exists_sql("it's") == "SELECT DB_ID(N'it''s')"
    assert table_checksum_sql("dbo", "a]b") == ("SELECT COUNT_BIG(*), CHECKSUM_AGG(BINARY_CHECKSUM(*)) "
                                                   "FROM [dbo].[a]]b]")
    assert "EngineEdition" in SERVER_INFO and "InstanceDefaultDataPath" in DEFAULT_PATHS
