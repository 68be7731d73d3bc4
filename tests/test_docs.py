"""The documentation stays true to the tree: the tests the design's rules name exist, the
rules are numbered R1..Rn without gaps, the README stays short, and relative links resolve.

Plain file reads only: no service, no import of the project.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
README = ROOT / "README.md"
README_MAX_LINES = 130

TEST_REF = re.compile(r"`(tests/[\w/.-]+\.py)::(\w+)(?:\[[^\]`]*\])?`")
RULE = re.compile(r"\*\*R(\d+)\.\*\*")
# [text](target): the target up to a space or the closing parenthesis; images too.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _docs() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")}


def test_every_test_the_design_names_exists() -> None:
    refs = TEST_REF.findall(DESIGN.read_text(encoding="utf-8"))
    assert refs, "docs/design.md names no test"
    missing = []
    defined: dict[str, set[str]] = {}
    for file, name in refs:
        path = ROOT / file
        if not path.is_file():
            missing.append(f"{file}::{name} (no such file)")
            continue
        if file not in defined:
            defined[file] = _test_functions(path)
        if name not in defined[file]:
            missing.append(f"{file}::{name} (no such test in the file)")
    assert not missing, "docs/design.md names tests that do not exist:\n" + "\n".join(missing)


def test_rules_are_numbered_once_and_consecutively() -> None:
    numbers = [int(n) for n in RULE.findall(DESIGN.read_text(encoding="utf-8"))]
    assert numbers, "docs/design.md has no rules"
    assert numbers == list(range(1, len(numbers) + 1)), f"rules out of order or repeated: {numbers}"


def test_sections_are_numbered_once_and_consecutively() -> None:
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", DESIGN.read_text(encoding="utf-8"), re.MULTILINE)]
    assert numbers == list(range(1, len(numbers) + 1)), f"sections out of order or repeated: {numbers}"


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, more than {README_MAX_LINES}"


@pytest.mark.parametrize("doc", _docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)  # code is not links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, mailto: and in-page anchors
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)} links to missing files: {broken}"
