"""Package names that load on first use (PEP 562), for packages on the WAL command's path: a
package `__init__` declares which submodule defines each exported name and delegates its
module-level `__getattr__` here."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib import import_module
from typing import Any


def load_export(package: str, module_of: Mapping[str, str], name: str) -> Any:
    """`name` from the submodule `module_of[name]` of `package`, kept in the package's namespace so
    the next lookup is plain; AttributeError for a name the package does not export."""
    module = module_of.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(import_module(f"{package}.{module}"), name)
    setattr(sys.modules[package], name, value)
    return value
