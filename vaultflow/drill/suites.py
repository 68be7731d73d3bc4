"""Expectation suites of a drill: the default one derived from a manifest, and user suites
read from JSON/YAML files, checked against the snapshot before anything is restored.

A user suite file:

    name: orders-sanity            # optional, default: the file name
    database: app*                 # optional glob: only drills of matching databases
    table: public.orders           # optional default table of its expectations
    expectations:
      - type: expect_column_values_to_be_between
        kwargs: {column: amount, min_value: 0, max_value: 1000000}
      - type: expect_column_values_to_not_be_null
        table: customers           # schema.name, or a name unique among the snapshot's tables
        kwargs: {column: email}

`type` and `kwargs` are Great Expectations 1.x expectation names and arguments. Great
Expectations is imported only when suites are checked or run (it takes seconds).
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultflow.errors import InputError
from vaultflow.repository.manifest import SnapshotManifest

DEFAULT_SUITE = "default"
_COLUMN_ARGS = ("column", "column_A", "column_B")
_COLUMN_LIST_ARGS = ("column_list",)


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation bound to one table (schema.name as the manifest names it)."""

    table: str
    type: str
    kwargs: dict[str, Any]
    suite: str

    def label(self) -> str:
        cols = [str(self.kwargs[a]) for a in _COLUMN_ARGS if a in self.kwargs]
        cols += [",".join(map(str, self.kwargs[a])) for a in _COLUMN_LIST_ARGS if a in self.kwargs]
        return f"{self.type}({', '.join(cols)})" if cols else self.type


@dataclass(frozen=True)
class UserSuite:
    """A suite as read from a file; its tables are resolved per snapshot."""

    name: str
    source: str
    database: str | None
    expectations: list[dict[str, Any]] = field(default_factory=list)

    def applies_to(self, database: str) -> bool:
        return self.database is None or fnmatch.fnmatchcase(database, self.database)


def load_suites(directory: str | os.PathLike[str]) -> list[UserSuite]:
    """Every *.json, *.yaml and *.yml file of `directory`, in name order."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise InputError(f"suite directory {root} does not exist", "create it or pass another --suites directory")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".json", ".yaml", ".yml") and p.is_file())
    return [_read_suite(p) for p in files]


def _read_suite(path: Path) -> UserSuite:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read expectation suite {path}: {str(exc).splitlines()[0][:200]}",
                         "fix the file's JSON/YAML syntax") from None
    except Exception as exc:  # yaml.YAMLError, without importing yaml at module load
        raise InputError(f"cannot read expectation suite {path}: {str(exc).splitlines()[0][:200]}",
                         "fix the file's JSON/YAML syntax") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise InputError(f"expectation suite {path} has no 'expectations' list",
                         "write it as {name, table, expectations: [{type, kwargs}]}")
    for i, item in enumerate(data["expectations"], 1):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise InputError(f"expectation #{i} of suite {path} has no 'type'",
                             "give each expectation a type such as expect_column_values_to_not_be_null")
    database = data.get("database")
    default_table = data.get("table")
    items = [{"table": default_table, **item} for item in data["expectations"]]
    return UserSuite(name=str(data.get("name") or path.stem), source=str(path),
                     database=str(database) if database else None, expectations=items)


def default_expectations(manifest: SnapshotManifest) -> list[ExpectationSpec]:
    """From the backup: each table's row count and, where the manifest has its profile, its
    exact column set, its NOT NULL columns and its unique keys."""
    inventory = manifest.schema_inventory
    specs: list[ExpectationSpec] = []
    for t in manifest.tables:
        specs.append(ExpectationSpec(t.qualified, "expect_table_row_count_to_equal", {"value": t.rows},
                                     DEFAULT_SUITE))
        profile = inventory.profile(t.qualified) if inventory else None
        if profile is None:
            continue
        specs.append(ExpectationSpec(t.qualified, "expect_table_columns_to_match_set",
                                     {"column_set": [c.name for c in profile.columns], "exact_match": True},
                                     DEFAULT_SUITE))
        for c in profile.columns:
            if not c.nullable:
                specs.append(ExpectationSpec(t.qualified, "expect_column_values_to_not_be_null",
                                             {"column": c.name}, DEFAULT_SUITE))
        for key in profile.unique_keys:
            if len(key) == 1:
                specs.append(ExpectationSpec(t.qualified, "expect_column_values_to_be_unique",
                                             {"column": key[0]}, DEFAULT_SUITE))
            else:
                specs.append(ExpectationSpec(t.qualified, "expect_compound_columns_to_be_unique",
                                             {"column_list": key}, DEFAULT_SUITE))
    return specs


def user_expectations(manifest: SnapshotManifest, suites: Iterable[UserSuite]) -> list[ExpectationSpec]:
    """The expectations of the suites that apply to this snapshot's database, bound to its
    tables; raises InputError naming the suite, the expectation and the missing table or
    column, or the invalid arguments."""
    tables = _known_tables(manifest)
    specs: list[ExpectationSpec] = []
    for suite in suites:
        if not suite.applies_to(manifest.database):
            continue
        for i, item in enumerate(suite.expectations, 1):
            where = f"expectation #{i} ({item['type']}) of suite {suite.name!r} ({suite.source})"
            table = _resolve_table(item.get("table"), tables, where, manifest)
            kwargs = dict(item.get("kwargs") or {})
            _check_columns(manifest, table, kwargs, where)
            spec = ExpectationSpec(table, item["type"], kwargs, suite.name)
            build_expectation(spec, where)
            specs.append(spec)
    return specs


def _known_tables(manifest: SnapshotManifest) -> list[str]:
    inv = manifest.schema_inventory
    names = {t.qualified for t in manifest.tables}
    if inv:
        names |= set(inv.tables) | set(inv.views)
    return sorted(names)


def _resolve_table(name: object, tables: list[str], where: str, manifest: SnapshotManifest) -> str:
    if not isinstance(name, str) or not name:
        raise InputError(f"{where} names no table", "set 'table' on the suite or on the expectation")
    if name in tables:
        return name
    matches = [t for t in tables if t.rsplit(".", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InputError(f"{where}: table {name!r} is ambiguous in snapshot {manifest.short_id} "
                         f"({', '.join(matches)})", "write it as schema.name")
    raise InputError(f"{where}: table {name!r} does not exist in snapshot {manifest.short_id} of "
                     f"{manifest.database!r}", f"use one of its tables ({', '.join(tables[:8])}"
                                                f"{', ...' if len(tables) > 8 else ''}) or set the suite's "
                                                "'database' glob")


def _check_columns(manifest: SnapshotManifest, table: str, kwargs: dict[str, Any], where: str) -> None:
    profile = manifest.schema_inventory.profile(table) if manifest.schema_inventory else None
    if profile is None:
        return  # a view, or a snapshot without profiles: Great Expectations reports it at run time
    columns = {c.name for c in profile.columns}
    named = [kwargs[a] for a in _COLUMN_ARGS if a in kwargs]
    for a in _COLUMN_LIST_ARGS:
        named += list(kwargs.get(a) or [])
    missing = [str(c) for c in named if c not in columns]
    if missing:
        raise InputError(f"{where}: column {missing[0]!r} does not exist in table {table} of snapshot "
                         f"{manifest.short_id}", f"its columns are {', '.join(sorted(columns))}")


def build_expectation(spec: ExpectationSpec, where: str = "") -> Any:
    """A Great Expectations expectation object for `spec`; InputError on a bad type or arguments."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from great_expectations.expectations.registry import get_expectation_impl

    where = where or f"expectation {spec.type} of suite {spec.suite!r}"
    try:
        impl = get_expectation_impl(spec.type)
    except Exception:  # noqa: BLE001 - ExpectationNotFoundError and friends
        raise InputError(f"{where}: unknown expectation type {spec.type!r}",
                         "use a Great Expectations 1.x name such as expect_column_values_to_be_between") from None
    try:
        return impl(**spec.kwargs)
    except Exception as exc:  # noqa: BLE001 - pydantic validation of the arguments
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:5]) or str(exc)
        raise InputError(f"{where}: invalid arguments: {detail[:300]}",
                         "fix the expectation's kwargs") from None
