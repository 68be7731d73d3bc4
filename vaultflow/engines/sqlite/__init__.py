"""SQLite: the database file copied with the online backup API, restored by an atomic
rename. Declaration only: importing this package imports no driver."""

from vaultflow.engines.capabilities import Capabilities, ExportFormat
from vaultflow.engines.registry import EngineSpec

SPEC = EngineSpec(
    name="sqlite",
    title="SQLite",
    schemes=("sqlite",),
    url_example="sqlite:///file.db",
    block_types=("vaultflow-sqlite-database",),
    stream_formats=("sqlite3-file",),
    system_databases=(),
    server_database=None,
    capabilities=Capabilities(
        change_fingerprint=True, drills=True, expectations=True, archival=True,
        export=ExportFormat("SQLite database file", ".db", "sqlite3 FILE"),
    ),
    engine_class="vaultflow.engines.sqlite.engine:SqliteEngine",
    url_parser="vaultflow.engines.sqlite.config:engine_from_url",
    archive_source="vaultflow.engines.sqlite.archive:SqliteSource",
)
