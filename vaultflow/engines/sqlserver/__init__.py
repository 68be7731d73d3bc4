"""SQL Server and Azure SQL Managed Instance: native COPY_ONLY backups through a staging
place. NEVER RUN AGAINST A REAL SERVER (docs/engines/sqlserver.md). Declaration only:
importing this package imports no driver."""

from vaultflow.engines.capabilities import Capabilities, ExportFormat
from vaultflow.engines.registry import EngineSpec

SPEC = EngineSpec(
    name="sqlserver",
    title="SQL Server",
    schemes=("mssql", "sqlserver"),
    url_example="mssql://user@host:port/db",
    block_types=("vaultflow-sqlserver",),
    stream_formats=("mssql-native-bak",),
    system_databases=("master", "tempdb", "model", "msdb"),
    server_database="master",
    capabilities=Capabilities(
        discovery=True,
        export=ExportFormat("SQL Server native backup", ".bak",
                            "RESTORE DATABASE DBNAME FROM DISK = 'FILE' WITH MOVE ... (on the server)"),
    ),
    engine_class="vaultflow.engines.sqlserver.engine:SqlServerEngine",
    url_parser="vaultflow.engines.sqlserver.config:engine_from_url",
)
