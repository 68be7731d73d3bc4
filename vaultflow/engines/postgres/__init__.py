"""PostgreSQL: per-table COPY streams in one exported snapshot, segments and patches for big
tables, pg_restore/psql restores into a staging database. Declaration only: importing this
package imports no driver (the engine lives in `engine.py`); the stream formats are
declared here, for modules that must not import psycopg."""

from vaultflow.engines.capabilities import Capabilities, ExportFormat
from vaultflow.engines.registry import EngineSpec

LEGACY_FORMAT = "pg_dump-custom"  # one whole-database archive (format of the first release)
SCHEMA_FORMAT = "pg_dump-custom-schema"  # schema-only archive: pre-data and post-data sections
TABLE_FORMAT = "pg-copy-text"  # one table's rows, COPY text format
DATA_EXTRA_FORMAT = "pg_dump-custom-data-extra"  # sequence values and large objects
GLOBALS_FORMAT = "pg_dumpall-globals-sql"  # roles and tablespaces, pg_dumpall --globals-only
BASEBACKUP_FORMAT = "postgres-basebackup-tar"  # a whole cluster: pg_basebackup -Ft -X fetch to stdout (not
# a logical stream: restored into a data directory by `vaultflow pitr restore`, never by `restore`)

SPEC = EngineSpec(
    name="postgresql",
    title="PostgreSQL",
    schemes=("postgresql", "postgres"),
    url_example="postgresql://user@host:port/db",
    block_types=("vaultflow-postgres-server",),
    stream_formats=(LEGACY_FORMAT, SCHEMA_FORMAT, TABLE_FORMAT, DATA_EXTRA_FORMAT, GLOBALS_FORMAT),
    system_databases=("postgres", "template0", "template1"),
    server_database="postgres",
    capabilities=Capabilities(
        change_fingerprint=True, table_subsets=True, table_restore=True, parallel_restore=True, globals=True,
        drills=True, expectations=True, segment_patches=True, archival=True, server_locale=True, discovery=True,
        pitr="wal",  # WAL archiving (wal.py, pitr_check.py), base backups (basebackup.py), restore to a
        # moment (recovery.py) and the recoverable window (window.py)
        export=ExportFormat("plain SQL script", ".sql", "psql -v ON_ERROR_STOP=1 -d DBNAME -f FILE"),
    ),
    legacy_exports={LEGACY_FORMAT: ExportFormat("pg_dump custom archive", ".dump", "pg_restore -d DBNAME FILE")},
    exporter="vaultflow.engines.postgres.archive_reader:export_plain_sql",
    exporter_formats=(SCHEMA_FORMAT,),
    engine_class="vaultflow.engines.postgres.engine:PostgresEngine",
    url_parser="vaultflow.engines.postgres.config:engine_from_url",
    archive_source="vaultflow.engines.postgres.archive:PostgresSource",
    log_archive="vaultflow.engines.postgres.wal_retention:WAL_ARCHIVE",
)
