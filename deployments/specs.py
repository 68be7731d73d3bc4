"""prefect.yaml as typed deployment specs: the one source of deployments and schedules.

`prefect deploy --all` reads the file itself; `vaultflow serve` and `vaultflow deploy`
read it through `load_project`, which refuses a bad cron, time zone, key or parameter
with the file and line.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.client.schemas.schedules import CronSchedule
from prefect.utilities.schema_tools.validation import validate as validate_against_schema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deployments.located_yaml import LocatedDict, first_error, line_of, load_located
from vaultflow.errors import InputError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROJECT_FILE = PROJECT_ROOT / "prefect.yaml"

_FIXES = {
    "cron": "write five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * 0'",
    "timezone": "use an IANA time zone name such as UTC or Europe/Berlin",
    "entrypoint": "write it as path/to/file.py:flow_function, relative to prefect.yaml",
}


class ScheduleSpec(BaseModel):
    """One cron schedule of a deployment; its parameters override the deployment's."""

    model_config = ConfigDict(extra="forbid")

    cron: str
    timezone: str = "UTC"
    slug: str | None = None
    active: bool = True
    day_or: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        CronSchedule(cron=value)  # Prefect's own check: the one the server applies
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        CronSchedule(cron="0 0 * * *", timezone=value)
        return value


class WorkPoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)


class DeploymentSpec(BaseModel):
    """One entry of `deployments:` (the keys vaultflow uses; others are refused as typos)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    entrypoint: str = Field(pattern=r"^[\w./-]+\.py:\w+$")
    description: str | None = None
    version: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    concurrency_limit: int | ConcurrencyLimitConfig | None = None
    enforce_parameter_schema: bool = True
    work_pool: WorkPoolSpec | None = None
    triggers: list[dict[str, Any]] = Field(default_factory=list)
    pull: list[dict[str, Any]] | None = None
    build: list[dict[str, Any]] | None = None
    push: list[dict[str, Any]] | None = None

    @property
    def flow_file(self) -> str:
        return self.entrypoint.rsplit(":", 1)[0]

    @property
    def flow_function(self) -> str:
        return self.entrypoint.rsplit(":", 1)[1]


class ProjectFile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    prefect_version: str | None = Field(default=None, alias="prefect-version")
    build: Any = None
    push: Any = None
    pull: Any = None
    definitions: dict[str, Any] = Field(default_factory=dict)  # YAML anchors only
    deployments: list[DeploymentSpec]


@dataclass(frozen=True)
class Project:
    path: Path
    deployments: list[DeploymentSpec]
    raw: LocatedDict

    @property
    def root(self) -> Path:
        return self.path.parent

    def deployment_line(self, index: int) -> int:
        return line_of(self.raw, ["deployments", index])


def _describe_loc(raw: Any, loc: tuple[str | int, ...]) -> str:
    parts: list[str] = []
    node = raw
    for part in loc:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and isinstance(node[part], dict) else None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{part}]" + (f" ({name})" if name else "")]
        else:
            parts.append(str(part))
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts)


def _clean_message(msg: str) -> str:
    return msg.removeprefix("Value error, ").strip()


def load_project(path: Path | None = None, *, check_parameters: bool = True) -> Project:
    """Read and validate prefect.yaml; with `check_parameters`, import each flow and validate
    every deployment's parameters (merged with each schedule's) against its signature."""
    path = (path or DEFAULT_PROJECT_FILE).resolve()
    raw = load_located(path)
    if not isinstance(raw, LocatedDict):
        raise InputError(f"{path}:1: not a prefect.yaml mapping", "start from the prefect.yaml in the vaultflow repo")
    try:
        parsed = ProjectFile.model_validate(raw)
    except ValidationError as exc:
        err = first_error(exc)
        loc = tuple(p for i, p in enumerate(err["loc"]) if i == 0 or p != err["loc"][i - 1])
        field = next((p for p in reversed(loc) if isinstance(p, str) and p in _FIXES), "")
        raise InputError(f"{path}:{line_of(raw, loc)}: {_describe_loc(raw, loc)}: {_clean_message(err['msg'])}",
                         _FIXES.get(field, "see docs/deploying.md, prefect.yaml")) from None
    seen: set[tuple[str, str]] = set()
    for i, spec in enumerate(parsed.deployments):
        if (spec.entrypoint, spec.name) in seen:
            raise InputError(f"{path}:{line_of(raw, ['deployments', i])}: deployment {spec.name!r} of "
                             f"{spec.entrypoint} is defined twice", "give each deployment of a flow its own name")
        seen.add((spec.entrypoint, spec.name))
    project = Project(path=path, deployments=parsed.deployments, raw=raw)
    if check_parameters:
        for index, spec in enumerate(project.deployments):
            _check_parameters(project, index, spec)
    return project


def import_flow(spec: DeploymentSpec, root: Path = PROJECT_ROOT) -> Flow[..., Any]:
    """Import the flow an entrypoint names, as a module of the project (flows/backup.py -> flows.backup)."""
    module_name = spec.flow_file.removesuffix(".py").replace("/", ".")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise InputError(f"deployment {spec.name!r}: entrypoint {spec.entrypoint} cannot be imported ({exc})",
                         _FIXES["entrypoint"]) from None
    found = getattr(module, spec.flow_function, None)
    if not isinstance(found, Flow):
        raise InputError(f"deployment {spec.name!r}: {spec.entrypoint} is not a Prefect flow",
                         _FIXES["entrypoint"])
    return found


def _check_parameters(project: Project, index: int, spec: DeploymentSpec) -> None:
    """Validate what a manual run starts from (the deployment's parameters, required ones
    may come from the form) and what each scheduled run gets (merged with the schedule's,
    complete), with the server's own validator for `enforce_parameter_schema`."""
    try:
        flow = import_flow(spec, project.root)
    except InputError as exc:
        raise InputError(f"{project.path}:{project.deployment_line(index)}: {exc.what}", exc.fix) from None
    schema = flow.parameters.model_dump_for_openapi()
    runs: list[tuple[int | None, dict[str, Any]]] = [(None, spec.parameters)]
    runs += [(i, {**spec.parameters, **s.parameters}) for i, s in enumerate(spec.schedules)]
    for schedule, parameters in runs:
        errors = validate_against_schema(parameters, schema, ignore_required=schedule is None)
        if not errors:
            continue
        error = errors[0]
        field = str(error.path[0]) if error.path else ""
        loc: list[str | int] = ["deployments", index, "parameters"]
        path = [p for p in error.path if isinstance(p, str | int)]  # into nested ones, such as options.jobs
        if schedule is not None and field in spec.schedules[schedule].parameters:
            loc = ["deployments", index, "schedules", schedule, "parameters", *path]
        elif field in spec.parameters:
            loc.extend(path)
        context = "" if schedule is None else f" (schedule {spec.schedules[schedule].slug or schedule + 1})"
        what = f"parameter {'.'.join(map(str, error.path))!r}: {error.message}" if field else error.message
        raise InputError(f"{project.path}:{line_of(project.raw, loc)}: deployment {spec.name!r}{context}: {what}",
                         f"give a value the flow {flow.name!r} accepts ({spec.entrypoint})")


BLOCK_PARAMETERS = {"source": "engine", "target": "engine", "repository": "repository"}


def missing_blocks(project: Project) -> list[str]:
    """One line per deployment parameter naming a block that does not exist (needs the API).

    Such runs would fail at their first task; `vaultflow deploy` warns before deploying.
    """
    from blocks.resolve import is_location, resolve_engine, resolve_repository
    from vaultflow.engines import is_database_url

    problems: list[str] = []
    for spec in project.deployments:
        values = [dict(spec.parameters)] + [{**spec.parameters, **s.parameters} for s in spec.schedules]
        refs = {(key, str(v[key])) for v in values for key in BLOCK_PARAMETERS if v.get(key)}
        for key, ref in sorted(refs):
            if is_database_url(ref) or (BLOCK_PARAMETERS[key] == "repository" and is_location(ref)):
                continue
            try:
                resolve_engine(ref) if BLOCK_PARAMETERS[key] == "engine" else resolve_repository(ref)
            except InputError as exc:
                problems.append(f"deployment {spec.name!r} parameter {key}: {exc.what}")
    return problems
