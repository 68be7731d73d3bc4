"""prefect.yaml and automation YAML: a mistake is refused with the file and line (no server needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployments.automations import DEFAULT_DIR, load_automations
from deployments.specs import DEFAULT_PROJECT_FILE, load_project
from tests.conftest import ROOT
from vaultflow.errors import InputError

PROJECT = DEFAULT_PROJECT_FILE.read_text()


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_shipped_files_are_valid() -> None:
    project = load_project()
    names = {d.name for d in project.deployments}
    assert {"postgres-app", "sqlite-app", "restore", "prune-daily", "verify-daily"} <= names
    backup = next(d for d in project.deployments if d.name == "postgres-app")
    assert {s.slug for s in backup.schedules} == {"monthly-full", "weekly-full", "hourly-incremental"}
    assert all(s.timezone == "Europe/Berlin" for s in backup.schedules)
    assert "postgresql" in backup.tags and backup.parameters["repository"] == "vaultflow-repo"
    from tests.deployments.test_automations import SHIPPED
    assert {a.spec.name for a in load_automations()} == set(SHIPPED)


@pytest.mark.parametrize(("old", "new", "message", "at"), [
    ('cron: "15 * * * *"', 'cron: "61 * * * *"', "Invalid cron string", 'cron: "61 * * * *"'),
    ("slug: daily-prune", "slug: daily-prune\n      timezone: Mars/Olympus", None, None),
    ("      kind: incremental\n      options:", "      kind: weekly\n      options:", "'weekly' is not one of",
     "kind: weekly"),
    ("        jobs: 2", "        jobs: 0", "less than the minimum of 1", "jobs: 0"),
    ("        jobs: 2", "        jobz: 2", "'jobz' was unexpected", "options:  "),
    ("rules: {preset: default}", "rules: {preset: bogus}", "'rules.preset'", "preset: bogus"),
    ("max_count: 5, max_age: 7d}", "max_count: 0, max_age: 7d}", "less than the minimum of 1", "max_count: 0"),
    ("max_count: 5, max_age: 7d}", "max_count: 5, max_age: a week}", "does not match", "max_age: a week"),
    ('{match: "shop*", preset: compliance}', '{match: "shop*", preset: forever}', "'forever' is not one of",
     "preset: forever"),
    ("    tags: [vaultflow, restore]", "    tagz: [vaultflow, restore]", "tagz", "tagz:"),
    ("entrypoint: flows/restore.py:restore", "entrypoint: flows/nowhere.py:restore", "cannot be imported",
     "- name: restore"),
])
def test_prefect_yaml_mistakes_name_the_line(tmp_path: Path, old: str, new: str, message: str | None,
                                             at: str | None) -> None:
    assert old in PROJECT
    text = PROJECT.replace(old, new, 1)
    path = tmp_path / "prefect.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_project(path)
    line = info.value.line()
    if message is None:  # a duplicate key inside the schedule mapping: timezone twice
        message, at = "Invalid timezone", "timezone: Mars/Olympus"
    assert message in line
    assert f"{path}:{_line_of(text, str(at))}:" in line, line


def test_deploy_check_refuses_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text(PROJECT.replace("timezone: Europe/Berlin", "timezone: Europe/Atlantis", 1))
    done = subprocess.run([sys.executable, "-m", "vaultflow.cli.main", "deploy", "--check", "-f", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and f"{path}:" in done.stderr and "Atlantis" in done.stderr


@pytest.mark.parametrize(("old", "new", "message"), [
    ("within: 26h", "within: 5s", "greater than or equal to 10 seconds"),
    ("within: 26h", "within: soon", "within"),
    ("  expect: [vaultflow.backup.succeeded]", "  expects: [vaultflow.backup.succeeded]", "unknown trigger key"),
    ("notify:", "notfy:", "notfy"),
    ("  for_each: [prefect.resource.id]", "  for_each: [prefect.resource.id", "malformed YAML"),
])
def test_automation_mistakes_name_the_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    original = (DEFAULT_DIR / "backup-overdue.yaml").read_text()
    assert old in original
    text = original.replace(old, new, 1)
    (tmp_path / "backup-overdue.yaml").write_text(text)
    with pytest.raises(InputError) as info:
        load_automations(tmp_path)
    line = info.value.line()
    assert message in line and str(tmp_path / "backup-overdue.yaml") + ":" in line, line
    if "malformed" not in message:
        assert f":{_line_of(text, new.strip())}:" in line, line


def test_missing_blocks_are_listed_before_deploying(prefect_api: str) -> None:
    from deployments.specs import missing_blocks

    problems = missing_blocks(load_project())
    assert any("'postgres-app' parameter source" in p and "'pg-prod'" in p for p in problems), problems
    assert any("'sqlite-app' parameter source" in p and "'app-sqlite'" in p for p in problems), problems
    assert any("parameter repository" in p and "'vaultflow-repo'" in p for p in problems), problems


def test_automations_compare_equal_whatever_the_hash_seed() -> None:
    """Trigger sets (expect, after, for_each) dump in hash order, which changes with every
    process; `automations apply` must still find an unchanged automation unchanged."""
    script = ("import json, uuid; from deployments.automations import load_automations, desired_automation, "
              "_comparable; print(json.dumps([_comparable(desired_automation(i, uuid.UUID(int=1))) "
              "for i in load_automations()], sort_keys=True))")
    runs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)}) for seed in (1, 2, 3, 4)]
    dumps = {run.communicate(timeout=300)[0] for run in runs}
    assert [run.returncode for run in runs] == [0, 0, 0, 0]
    assert len(dumps) == 1
