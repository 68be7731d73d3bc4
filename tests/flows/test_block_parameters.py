"""Flow parameters that name a block are `Block | str` unions: the Prefect UI's run form offers
the saved blocks of that type (the schema carries their block_type_slug), names and URLs keep
working, and a run created through the API with a block reference gets the block. Also the
retention flow's per-database rules."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from blocks.engines import SqliteDatabase
from blocks.repository import BackupRepository
from flows.backup import backup
from flows.drill import drill_latest
from flows.maintenance import DatabaseRetention, RetentionRules, retention
from flows.restore import restore
from tests.conftest import PASSPHRASE
from vaultflow.errors import InputError
from vaultflow.sample_data import create

ENGINE_SLUGS = {"vaultflow-postgres-server", "vaultflow-mysql-server", "vaultflow-sqlserver",
                "vaultflow-sqlite-database", "vaultflow-file-tree"}
REPOSITORY_SLUGS = {"vaultflow-backup-repository"}
BLOCK_PARAMETERS: list[tuple[Any, dict[str, set[str]]]] = [
    (backup, {"repository": REPOSITORY_SLUGS, "source": ENGINE_SLUGS}),
    (restore, {"repository": REPOSITORY_SLUGS, "target": ENGINE_SLUGS}),
    (retention, {"repository": REPOSITORY_SLUGS}),
    (drill_latest, {"repository": REPOSITORY_SLUGS, "scratch": ENGINE_SLUGS}),
]


@pytest.mark.parametrize(("flow", "expected"), BLOCK_PARAMETERS, ids=[f.name for f, _ in BLOCK_PARAMETERS])
def test_block_parameters_offer_a_block_picker_and_a_string(flow: Any, expected: dict[str, set[str]]) -> None:
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(flow).model_dump_for_openapi()
    for name, slugs in expected.items():
        choices = schema["properties"][name]["anyOf"]
        refs = [c["$ref"].rsplit("/", 1)[-1] for c in choices if "$ref" in c]
        assert {schema["definitions"][r]["block_type_slug"] for r in refs} == slugs, name
        assert {"type": "string"} in choices, f"{name}: a block name or URL must stay accepted"


def test_a_run_created_through_the_api_gets_the_referenced_blocks(prefect_api: str, tmp_path: Path,
                                                                  repo_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    suffix = uuid.uuid4().hex[:8]
    db = create(tmp_path / "shop.db", rows=200)
    repository_id = BackupRepository(location=str(repo_path), passphrase=SecretStr(PASSPHRASE)).save(
        f"repo-{suffix}")
    source_id = SqliteDatabase(path=str(db)).save(f"shop-{suffix}")
    with get_client(sync_client=True) as client:
        created = client.create_flow_run(backup, parameters={
            "source": {"$ref": {"block_document_id": str(source_id)}},
            "repository": {"$ref": {"block_document_id": str(repository_id)}}})
        run = client.read_flow_run(created.id)
    result = run_flow(backup, flow_run=run, parameters=run.parameters)
    assert isinstance(result, dict) and result["database"] == "shop.db", result

    by_name = backup(source=f"shop-{suffix}", repository=f"repo-{suffix}")  # names still work
    assert by_name["parent"] is None and by_name["snapshot_id"] != result["snapshot_id"]


def test_retention_takes_per_database_rules(prefect_api: str, tmp_path: Path, repo_path: Path) -> None:
    shop = create(tmp_path / "shop_eu.db", rows=100)
    other = create(tmp_path / "other.db", rows=100)
    for db in (shop, shop, shop, other, other, other):
        backup(source=f"sqlite:///{db}", repository=str(repo_path))
    per_database = [DatabaseRetention(match="shop*", max_count=2),
                    DatabaseRetention(match="sqlite://*", preset="compliance")]
    plan = retention(repository=str(repo_path), rules=RetentionRules(max_count=1), policy_for=per_database,
                     dry_run=True)
    assert len(plan["forgotten"]) == 1 and len(plan["kept"]) == 5  # shop: 3 -> 2; other: compliance

    from_api = retention.validate_parameters({"repository": str(repo_path), "rules": {"max_count": 1},
                                              "policy_for": [{"match": "*", "max_age": "30d"}]})
    assert from_api["policy_for"][0].max_age == "30d"
    with pytest.raises(InputError, match="keeps nothing"):
        DatabaseRetention(match="shop*", keep_last=0)
    with pytest.raises(InputError, match="would delete every backup"):
        RetentionRules(max_count=0)
