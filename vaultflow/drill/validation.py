"""Run expectation suites against a restored database with Great Expectations (SQL pushdown)."""

from __future__ import annotations

import os
import warnings
from typing import Any

from vaultflow.drill.report import CheckResult
from vaultflow.drill.suites import ExpectationSpec, build_expectation
from vaultflow.engines.base import SqlAlchemyTarget


def run_expectations(target: SqlAlchemyTarget, specs: list[ExpectationSpec],
                     database_names: tuple[str, ...] = ()) -> list[CheckResult]:
    """One result per expectation, grouped by table; a table Great Expectations cannot read
    fails each of its expectations with the reason. `database_names` are schema names that
    stand for the database itself (engines whose schema is the database)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from sqlalchemy import quoted_name

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    with warnings.catch_warnings():  # "a more specific datasource may be more appropriate": one path for all
        warnings.simplefilter("ignore")
        source = context.data_sources.add_sql(name="vaultflow_scratch", connection_string=target.url,
                                              kwargs=dict(target.engine_kwargs))  # type: ignore[call-arg]
    by_table: dict[str, list[ExpectationSpec]] = {}
    for spec in specs:
        by_table.setdefault(spec.table, []).append(spec)
    results: list[CheckResult] = []
    for i, (table, table_specs) in enumerate(by_table.items()):
        schema, _, name = table.rpartition(".")
        schema_name = None if target.schemaless or not schema or schema in database_names else schema
        try:
            # Always quoted: names are exactly as the server stores them ("Mixed Case", "Orders").
            asset = source.add_table_asset(name=f"t{i}", table_name=quoted_name(name, quote=True),
                                           schema_name=schema_name)
            batch = asset.add_batch_definition_whole_table("all").get_batch()
            expectations = []
            for n, spec in enumerate(table_specs):
                expectation = build_expectation(spec)
                expectation.meta = {"vaultflow_index": n}  # results do not come back in suite order
                expectations.append(expectation)
            outcome = batch.validate(gx.ExpectationSuite(name=f"drill-{i}", expectations=expectations))
        except Exception as exc:  # noqa: BLE001 - GX wraps driver errors in many classes
            reason = _first_line(exc)
            results += [_result(s, "failed", observed=f"table not readable: {reason}") for s in table_specs]
            continue
        ordered = sorted(outcome.results, key=_index)
        results += [_from_gx(spec, res) for spec, res in zip(table_specs, ordered, strict=True)]
    return results


def _index(res: Any) -> int:
    config = res.expectation_config
    return int((config.meta or {})["vaultflow_index"]) if config is not None else -1


def _from_gx(spec: ExpectationSpec, res: Any) -> CheckResult:
    info = res.exception_info or {}
    if info.get("raised_exception"):
        return _result(spec, "failed", observed=f"error: {str(info.get('exception_message'))[:200]}")
    detail = res.result or {}
    if "observed_value" in detail:
        observed = _short(detail["observed_value"])
    elif "unexpected_count" in detail:
        sample = detail.get("partial_unexpected_list") or []
        observed = f"{detail['unexpected_count']} unexpected value(s)" + (f", e.g. {_short(sample[:3])}" if sample
                                                                          else "")
    else:
        observed = None
    return _result(spec, "passed" if res.success else "failed", observed=observed)


def _result(spec: ExpectationSpec, status: str, observed: str | None = None) -> CheckResult:
    expected = {k: v for k, v in spec.kwargs.items() if k not in ("column", "column_list")}
    return CheckResult(check="expectation", object=spec.table, name=spec.label(), status=status,  # type: ignore[arg-type]
                       expected=_short(expected) if expected else "true", observed=observed, suite=spec.suite)


def _short(value: object, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
