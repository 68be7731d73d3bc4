"""YAML loading that remembers where each mapping key and list item was written."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vaultflow.errors import InputError


class LocatedDict(dict[str, Any]):
    """A YAML mapping; `line` is where it starts, `lines[key]` where each key is (1-based)."""

    line: int = 0
    lines: dict[str, int]


class LocatedList(list[Any]):
    """A YAML sequence; `lines[i]` is where item i starts (1-based)."""

    line: int = 0
    lines: list[int]


class _LocatingLoader(yaml.SafeLoader):  # type: ignore[misc]
    pass


def _construct_map(loader: _LocatingLoader, node: yaml.MappingNode) -> Iterator[LocatedDict]:
    data = LocatedDict()
    data.line = node.start_mark.line + 1
    data.lines = {}
    yield data
    data.update(loader.construct_mapping(node))  # flattens `<<: *anchor` merges first
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        data.lines[str(key)] = key_node.start_mark.line + 1


def _construct_seq(loader: _LocatingLoader, node: yaml.SequenceNode) -> Iterator[LocatedList]:
    data = LocatedList()
    data.line = node.start_mark.line + 1
    data.lines = [item.start_mark.line + 1 for item in node.value]
    yield data
    data.extend(loader.construct_sequence(node))


_LocatingLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LocatingLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load_located(path: Path) -> Any:
    """Parse a YAML file; a syntax error becomes an InputError naming file and line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", "check the path") from None
    try:
        return yaml.load(text, Loader=_LocatingLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(f"{where}: malformed YAML: {exc.problem or exc.context}",
                         "fix the indentation or quoting on that line") from None


def line_of(data: Any, loc: Sequence[str | int]) -> int:
    """The line of the deepest part of `loc` (a pydantic error location) found in `data`."""
    line = int(getattr(data, "line", 0))
    node = data
    for part in loc:
        if isinstance(node, LocatedDict) and str(part) in node:
            line = node.lines.get(str(part), line)
            node = node[str(part)]
        elif isinstance(node, LocatedList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lines[part]
            node = node[part]
        else:
            break
    return line


def first_error(exc: ValidationError) -> Any:
    """The error to report: a misspelt (extra) key before the `missing` error it caused."""
    return sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
