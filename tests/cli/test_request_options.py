"""The backup/restore/drill options are declared once, in vaultflow/requests.py: the CLI's
options read their default and help from the request model's fields."""

from __future__ import annotations

from typing import Any

import pytest
import typer.core
import typer.main
from pydantic import BaseModel
from typer.testing import CliRunner

from vaultflow.cli.main import app
from vaultflow.requests import BackupRequest, DrillRequest, RestoreRequest

# command -> (its request model, model field -> CLI parameter where the names differ)
COMMANDS: dict[str, tuple[type[BaseModel], dict[str, str]]] = {
    "backup": (BackupRequest, {"include_tables": "include_table", "exclude_tables": "exclude_table",
                               "include_globals": "globals_"}),
    "restore": (RestoreRequest, {"tables": "table", "include_globals": "globals_"}),
    "drill": (DrillRequest, {}),
}


def _command(name: str) -> Any:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return group.commands[name]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_option_has_the_model_fields_help_and_default(name: str) -> None:
    model, renamed = COMMANDS[name]
    params = {p.name: p for p in _command(name).params}
    for field, info in model.model_fields.items():
        param = params[renamed.get(field, field)]
        assert isinstance(param, typer.core.TyperOption)
        assert param.help == info.description, field
        expected = None if info.default_factory is not None else info.default
        assert param.default == expected, field


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_booleans_are_positive_pairs_without_double_negatives(name: str) -> None:
    model, renamed = COMMANDS[name]
    params = {p.name: p for p in _command(name).params}
    for param in params.values():
        assert not any(opt.startswith("--no-no-") for opt in [*param.opts, *param.secondary_opts]), param.name
    for field, info in model.model_fields.items():
        if info.annotation is bool:
            param = params[renamed.get(field, field)]
            assert isinstance(param, typer.core.TyperOption)
            assert not param.opts[0].startswith("--no-") and param.secondary_opts == [
                "--no-" + param.opts[0].removeprefix("--")], param.opts
    shown = CliRunner().invoke(app, [name, "--help"], env={"TERMINAL_WIDTH": "400", "COLUMNS": "400"})
    assert shown.exit_code == 0 and "--no-no-" not in shown.output


def test_a_value_out_of_the_models_bounds_is_one_error_line_exit_2() -> None:
    done = CliRunner().invoke(app, ["backup", "sqlite:///nowhere.db", "--jobs", "0", "--repo", "/nonexistent"])
    assert done.exit_code == 2
    assert "invalid jobs" in done.output and "greater than or equal to 1" in done.output
