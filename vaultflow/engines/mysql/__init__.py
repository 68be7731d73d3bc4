"""MySQL and MariaDB: one mariadb-dump/mysqldump stream per snapshot, restored through the
client into a staging database. Declaration only: importing this package imports no driver."""

from vaultflow.engines.capabilities import Capabilities, ExportFormat
from vaultflow.engines.registry import EngineSpec

SPEC = EngineSpec(
    name="mysql",
    title="MySQL/MariaDB",
    schemes=("mysql", "mariadb"),
    url_example="mysql://user@host:port/db",
    block_types=("vaultflow-mysql-server",),
    stream_formats=("mysqldump-sql", "mysql-accounts-sql"),
    system_databases=("information_schema", "mysql", "performance_schema", "sys"),
    server_database="mysql",
    capabilities=Capabilities(
        change_fingerprint=True, table_subsets=True, table_restore=True, globals=True, drills=True,
        expectations=True, archival=True, server_locale=True, discovery=True,
        export=ExportFormat("MySQL SQL script", ".sql", "mariadb DBNAME < FILE (create DBNAME first)"),
    ),
    engine_class="vaultflow.engines.mysql.engine:MySQLEngine",
    url_parser="vaultflow.engines.mysql.config:engine_from_url",
    archive_source="vaultflow.engines.mysql.archive:MySQLSource",
    log_archive="vaultflow.engines.mysql.binlog_retention:BINLOG_ARCHIVE",
)
