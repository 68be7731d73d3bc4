"""Files: a directory tree (uploads, configuration) as one pax tar stream, restored into a
staging directory swapped in by rename. Declaration only: importing this package imports
nothing but the registry."""

from vaultflow.engines.capabilities import Capabilities, ExportFormat
from vaultflow.engines.registry import EngineSpec

SPEC = EngineSpec(
    name="files",
    title="File trees",
    schemes=("file",),
    url_example="file:///absolute/path/to/dir",
    block_types=("vaultflow-file-tree",),
    stream_formats=("vaultflow-files-tar",),
    system_databases=(),
    server_database=None,
    capabilities=Capabilities(
        change_fingerprint=True, table_subsets=True, skip_unreadable=True,
        export=ExportFormat("tar archive", ".tar", "tar -xpf FILE -C DIR"),
    ),
    engine_class="vaultflow.engines.files.engine:FileTreeEngine",
    url_parser="vaultflow.engines.files.config:engine_from_url",
)
