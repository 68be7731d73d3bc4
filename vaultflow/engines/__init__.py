"""Database engines behind one contract (`base.py`), declared in a lazy registry
(`registry.py`) with their capabilities (`capabilities.py`); one package per engine.

Importing this package imports no engine: `engine_from_url` imports the one engine a URL
names, on first use.
"""

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
