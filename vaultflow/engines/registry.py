"""The lazy engine registry: URL scheme, block type, stream format and export suffix to an
engine, without importing any engine module until one is used.

Each engine package (`vaultflow/engines/<name>/__init__.py`) declares one `EngineSpec`;
its `__init__` imports nothing heavier than this module and `capabilities`, so asking the
registry what exists, or what an engine can do, costs no driver import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, cast
from urllib.parse import SplitResult, parse_qs, urlsplit

from vaultflow.engines.capabilities import Capabilities, CapabilityName, ExportFormat
from vaultflow.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO

    from vaultflow.archive.sources import ArchiveSource
    from vaultflow.engines.base import DatabaseEngine, StreamReader
    from vaultflow.repository.manifest import StreamManifest

    Exporter = Callable[[list[StreamManifest], StreamReader, IO[bytes]], None]

ENGINE_PACKAGES = ("postgres", "mysql", "sqlite", "sqlserver", "files")
"""The engine packages under vaultflow/engines/, in the order they are listed to users."""


@dataclass(frozen=True)
class EngineSpec:
    """Everything vaultflow needs to know about an engine before it imports it.

    `name` is the engine's name in manifests, the catalog and events. `url_parser`,
    `engine_class` and `archive_source` are "module:attribute" references, imported on
    first use.
    """

    name: str
    title: str
    schemes: tuple[str, ...]
    url_example: str
    block_types: tuple[str, ...]  # Prefect block type slugs whose blocks build this engine
    stream_formats: tuple[str, ...]  # the formats of the streams its snapshots hold
    system_databases: tuple[str, ...]  # left out of discovery unless asked for
    server_database: str | None  # the database a server URL without one connects to (listing)
    capabilities: Capabilities
    engine_class: str
    url_parser: str
    legacy_exports: dict[str, ExportFormat] = field(default_factory=dict)  # older stream formats' exports
    exporter: str | None = None  # "module:function(streams, read, out)" writing the export; None: the first stream
    exporter_formats: tuple[str, ...] = ()  # first-stream formats the exporter handles (default: all)
    archive_source: str | None = None  # "module:class(engine)": its archival dialect, when capabilities.archival
    log_archive: str | None = None  # "module:attribute": its archived change log (engines/log_archive.py LogArchive)

    def export_format(self, first_stream_format: str) -> ExportFormat | None:
        """What an export of a snapshot whose first stream has this format writes."""
        return self.legacy_exports.get(first_stream_format, self.capabilities.export)

    def load(self) -> type[DatabaseEngine]:
        return cast("type[DatabaseEngine]", _resolve(self.engine_class))

    def from_url(self, url: str, parts: SplitResult) -> DatabaseEngine:
        parser = cast("Callable[[str, SplitResult], DatabaseEngine]", _resolve(self.url_parser))
        return parser(url, parts)

    def require(self, name: CapabilityName, alternative: str) -> None:
        """Shorthand for `capabilities.require(name, title, alternative)`."""
        self.capabilities.require(name, self.title, alternative)

    def archive_dialect(self, engine: DatabaseEngine) -> ArchiveSource:
        """The archival dialect wrapping `engine` (of this spec); refused in one line when
        the engine does not archive."""
        self.require("archival", "archive from " + ", ".join(s.title for s in engines() if s.capabilities.archival))
        if self.archive_source is None:
            raise InputError(f"{self.title} declares archival but names no archive dialect",
                             "set archive_source in its EngineSpec")
        dialect = cast("Callable[[DatabaseEngine], ArchiveSource]", _resolve(self.archive_source))
        return dialect(engine)

    def exporter_for(self, first_stream_format: str) -> Exporter | None:
        """The function that writes an export of a snapshot whose first stream has this
        format; None when the export is that stream's bytes as they are."""
        if self.exporter is None or (self.exporter_formats and first_stream_format not in self.exporter_formats):
            return None
        return cast("Exporter", _resolve(self.exporter))

    def log_archive_hook(self) -> object | None:
        """The engine's archived change-log hook (`vaultflow.engines.log_archive.LogArchive`), imported
        only now; None when the engine archives no log."""
        return _resolve(self.log_archive) if self.log_archive else None


def _resolve(ref: str) -> object:
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


@cache
def engines() -> tuple[EngineSpec, ...]:
    """Every engine's spec (imports each package's light `__init__`, no engine module)."""
    return tuple(importlib.import_module(f"vaultflow.engines.{p}").SPEC for p in ENGINE_PACKAGES)


def spec(name: str) -> EngineSpec:
    """The spec of the engine called `name` (as manifests and the catalog name it)."""
    for s in engines():
        if s.name == name:
            return s
    raise InputError(f"unknown engine {name!r}", f"use one of {', '.join(s.name for s in engines())}")


def spec_for_scheme(scheme: str) -> EngineSpec:
    for s in engines():
        if scheme.lower() in s.schemes:
            return s
    raise InputError(f"unsupported database URL scheme {scheme!r}",
                     "use " + ", ".join(s.url_example for s in engines()))


def spec_for_format(stream_format: str) -> EngineSpec | None:
    """The engine whose snapshots hold streams of `stream_format`; None for a format no
    engine writes (a globals stream is named by its engine's spec too)."""
    for s in engines():
        if stream_format in s.stream_formats:
            return s
    return None


def spec_for_block_type(slug: str) -> EngineSpec | None:
    for s in engines():
        if slug in s.block_types:
            return s
    return None


def url_schemes() -> tuple[str, ...]:
    return tuple(scheme for s in engines() for scheme in s.schemes)


def is_database_url(text: str) -> bool:
    return "://" in text


def engine_from_url(url: str) -> DatabaseEngine:
    """The engine for a database URL (`postgresql://user@host:port/db`, `mysql://...`,
    `mssql://...`, `sqlite:///file.db`).

    A password inside the URL is refused: URLs end up in run parameters, logs and shell
    history. Passwords come from a saved block or the engine's environment variable.
    """
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise InputError("the database URL contains a password",
                             "remove it and use a saved engine block, PGPASSWORD, ~/.pgpass, MYSQL_PWD or "
                             "SQLCMDPASSWORD instead")
        return spec_for_scheme(scheme).from_url(url, parts)
    except ValueError:  # malformed netloc or port; never echo the URL, it may hold a secret
        raise InputError("the database URL is malformed",
                         "write it as " + ", ".join(s.url_example for s in engines())) from None


def server_from_url(url: str) -> DatabaseEngine:
    """`postgresql://user@host:port` or `mysql://user@host:port` (a database part is
    allowed): an engine for listing the server's databases; pick one with `with_database`."""
    parts = urlsplit(url)
    found = next((s for s in engines() if parts.scheme.lower() in s.schemes), None)
    if found is None or not found.capabilities.discovery or found.server_database is None:
        raise InputError(f"{parts.scheme!r} URLs do not name a server whose databases can be listed",
                         "give " + ", ".join(s.url_example.rsplit("/", 1)[0] for s in engines()
                                             if s.capabilities.discovery and s.server_database))
    if parts.path.strip("/"):
        return engine_from_url(url)
    return engine_from_url(url.split("?", 1)[0].rstrip("/") + "/" + found.server_database + (
        "?" + parts.query if parts.query else ""))
