"""Database engines behind one contract (`base.py`), declared in a lazy registry
(`registry.py`) with their capabilities (`capabilities.py`); one package per engine.

Importing this package imports no engine: `engine_from_url` imports the one engine a URL
names, on first use.

The names below load on first use (PEP 562), so importing a module of an engine package (e.g.
`vaultflow.engines.postgres.wal`, which PostgreSQL's archive_command runs) does not import the engine
contract and its pydantic manifest models (docs/design.md, R77).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaultflow.lazy_exports import load_export

if TYPE_CHECKING:
    from vaultflow.engines.base import DatabaseEngine, DumpSession, StreamReader, StreamSource
    from vaultflow.engines.capabilities import Capabilities, CapabilityMissing, ExportFormat
    from vaultflow.engines.registry import (
        EngineSpec,
        engine_from_url,
        engines,
        is_database_url,
        server_from_url,
        spec,
        spec_for_format,
    )

_MODULE_OF = {
    "DatabaseEngine": "base", "DumpSession": "base", "StreamReader": "base", "StreamSource": "base",
    "Capabilities": "capabilities", "CapabilityMissing": "capabilities", "ExportFormat": "capabilities",
    "EngineSpec": "registry", "engine_from_url": "registry", "engines": "registry", "is_database_url": "registry",
    "server_from_url": "registry", "spec": "registry", "spec_for_format": "registry",
}

__all__ = [
    "Capabilities",
    "CapabilityMissing",
    "DatabaseEngine",
    "DumpSession",
    "EngineSpec",
    "ExportFormat",
    "StreamReader",
    "StreamSource",
    "engine_from_url",
    "engines",
    "is_database_url",
    "server_from_url",
    "spec",
    "spec_for_format",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first use."""
    return load_export(__name__, _MODULE_OF, name)
