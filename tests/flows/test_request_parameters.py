"""Each flow takes its options as one parameter typed by the request model: the Prefect UI
renders it as a form with the model's defaults and descriptions, and what a schedule
overrides (kind, source, repository, snapshot, target) stays a top-level parameter."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from flows.backup import backup
from flows.drill import drill_latest, validate_restore
from flows.fleet import backup_fleet
from flows.restore import restore
from vaultflow.requests import BackupRequest, DrillRequest, RestoreRequest

FLOWS: list[tuple[Any, type[BaseModel], set[str]]] = [
    (backup, BackupRequest, {"source", "repository", "kind"}),
    (backup_fleet, BackupRequest, {"servers", "repository", "kind"}),
    (restore, RestoreRequest, {"snapshot", "target", "repository"}),
    (validate_restore, DrillRequest, {"snapshot", "database", "repository", "scratch", "scratch_per_engine", "suites"}),
    (drill_latest, DrillRequest, {"repository", "scratch", "scratch_per_engine", "suites", "max_concurrent"}),
]


@pytest.mark.parametrize(("flow", "model", "top_level"), FLOWS, ids=[f.name for f, _, _ in FLOWS])
def test_the_parameter_schema_holds_the_request_model(flow: Any, model: type[BaseModel], top_level: set[str]) -> None:
    schema = flow.parameters.model_dump_for_openapi()
    options = schema["properties"]["options"]
    assert options["$ref"] == f"#/definitions/{model.__name__}"
    assert options["default"] == model().model_dump()
    definition = schema["definitions"][model.__name__]
    assert definition["additionalProperties"] is False
    assert set(definition["properties"]) == set(model.model_fields)
    for name, info in model.model_fields.items():
        shown = definition["properties"][name]
        assert shown["description"] == info.description, name
        assert shown.get("default", []) == info.get_default(call_default_factory=True), name
    assert top_level <= set(schema["properties"])
    assert not set(model.model_fields) & set(schema["properties"]), "an option declared twice"


@pytest.mark.parametrize("model", [BackupRequest, RestoreRequest, DrillRequest])
def test_options_hold_no_text_so_no_secret(model: type[BaseModel]) -> None:
    """Run parameters are stored by the Prefect API: flags, numbers and table globs only."""
    assert {info.annotation for info in model.model_fields.values()} <= {bool, int, list[str]}


def test_a_deployments_nested_options_are_validated_into_the_model() -> None:
    given = backup.validate_parameters({"source": "pg-prod/app", "kind": "incremental", "options": {"jobs": 2}})
    assert given["options"] == BackupRequest(jobs=2)
    with pytest.raises(Exception, match="jobs"):
        backup.validate_parameters({"source": "pg-prod/app", "options": {"jobs": 0}})
    with pytest.raises(Exception, match="jobz"):
        backup.validate_parameters({"source": "pg-prod/app", "options": {"jobz": 2}})
