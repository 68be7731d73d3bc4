"""PostgreSQL: per-table COPY streams in one exported snapshot, segments and patches for big
tables, pg_restore/psql restores into a staging database. Declaration only: importing this
package imports no driver (the engine lives in `engine.py`)."""

from vaultflow.engines.capabilities import Capabilities, ExportFormat
from vaultflow.engines.registry import EngineSpec

SPEC = EngineSpec(
    name="postgresql",
    title="PostgreSQL",
    schemes=("postgresql", "postgres"),
    url_example="postgresql://user@host:port/db",
    block_types=("vaultflow-postgres-server",),
    stream_formats=("pg_dump-custom", "pg_dump-custom-schema", "pg-copy-text", "pg_dump-custom-data-extra",
                    "pg_dumpall-globals-sql"),
    system_databases=("postgres", "template0", "template1"),
    server_database="postgres",
    capabilities=Capabilities(
        change_fingerprint=True, table_subsets=True, table_restore=True, parallel_restore=True, globals=True,
        drills=True, expectations=True, segment_patches=True, archival=True, server_locale=True, discovery=True,
        export=ExportFormat("plain SQL script", ".sql", "psql -v ON_ERROR_STOP=1 -d DBNAME -f FILE"),
    ),
    legacy_exports={"pg_dump-custom": ExportFormat("pg_dump custom archive", ".dump", "pg_restore -d DBNAME FILE")},
    exporter="vaultflow.engines.postgres.engine:export_plain_sql",
    exporter_formats=("pg_dump-custom-schema",),
    engine_class="vaultflow.engines.postgres.engine:PostgresEngine",
    url_parser="vaultflow.engines.postgres.config:engine_from_url",
    archive_source="vaultflow.engines.postgres.archive:PostgresSource",
)
