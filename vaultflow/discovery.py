"""Discovery: which databases a server holds, filtered by include/exclude globs.

No Prefect here: the `discover` flow finds the servers (saved engine blocks) and calls this.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from vaultflow.catalog import Catalog
from vaultflow.engines import DatabaseEngine
from vaultflow.engines.registry import spec


@dataclass
class DiscoveredServer:
    """One server's databases after filtering, and what the filters did."""

    source: str  # the block name or server URL it was found through
    engine: str
    server: str
    databases: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "engine": self.engine, "server": self.server, "databases": self.databases,
                "excluded": self.excluded, "warnings": self.warnings}


def select_databases(names: list[str], *, engine: str, include: list[str] | None = None,
                     exclude: list[str] | None = None, include_system: bool = False
                     ) -> tuple[list[str], list[str], list[str]]:
    """(selected, excluded, warnings). A name is selected if it matches an include glob (any
    when none are given), no exclude glob, and is not a system database (unless asked).
    Every glob that matches no database at all gives a warning."""
    system = set() if include_system else set(spec(engine).system_databases)
    warnings = [f"pattern {kind} {p!r} matches no database" for kind, patterns in (("--include", include),
                                                                                    ("--exclude", exclude))
                for p in patterns or [] if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    selected, excluded = [], []
    for name in names:
        wanted = (not include or any(fnmatch.fnmatchcase(name, p) for p in include))
        if wanted and name not in system and not any(fnmatch.fnmatchcase(name, p) for p in exclude or []):
            selected.append(name)
        else:
            excluded.append(name)
    return selected, excluded, warnings


def discover_server(engine: DatabaseEngine, source: str, *, include: list[str] | None = None,
                    exclude: list[str] | None = None, include_system: bool = False,
                    catalog: Catalog | None = None) -> DiscoveredServer:
    """List the server's databases, filter them, and upsert the selected ones into `catalog`."""
    names = engine.list_databases()
    selected, excluded, warnings = select_databases(names, engine=engine.engine, include=include,
                                                    exclude=exclude, include_system=include_system)
    if not names:
        warnings.append(f"{engine.engine} server {engine.server_label()} lists no databases to user of {source!r}; "
                        "check that it may see them (MySQL: SHOW DATABASES needs a privilege on each)")
    if catalog is not None:
        for name in selected:
            catalog.upsert_database(engine.engine, engine.server_label(), name)
    return DiscoveredServer(source=source, engine=engine.engine, server=engine.server_label(), databases=selected,
                            excluded=excluded, warnings=warnings)
