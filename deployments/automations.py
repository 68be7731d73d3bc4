"""Automations as code: YAML under deployments/automations/, applied idempotently by name.

File format (one automation per file, or a list under `automations:`)::

    name: vaultflow-backup-overdue
    description: ...
    trigger: {type: event, posture: Proactive, expect: [...], within: 26h, ...}   # Prefect EventTrigger
    notify: {subject: "...", body: "..."}     # optional `block: slug/name`

`notify` becomes a `send-notification` action on a Prefect notification block found by
name (default `custom-webhook/vaultflow-alerts`), so the files hold no UUIDs. `within`
accepts seconds or 90s / 30m / 26h / 2d.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.automations import AutomationCore, EventTrigger, SendNotification
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.located_yaml import LocatedDict, LocatedList, first_error, line_of, load_located
from deployments.specs import PROJECT_ROOT
from vaultflow.errors import InputError

DEFAULT_DIR = PROJECT_ROOT / "deployments" / "automations"
DEFAULT_NOTIFY_BLOCK = "custom-webhook/vaultflow-alerts"
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class NotifySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    block: str | None = Field(default=None, description="slug/name of a notification block")
    subject: str
    body: str


class AutomationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[\w.-]+$")
    description: str = ""
    enabled: bool = True
    trigger: dict[str, Any]
    notify: NotifySpec


@dataclass(frozen=True)
class LoadedAutomation:
    path: Path
    line: int
    spec: AutomationSpec
    trigger: EventTrigger


def _fail(path: Path, raw: Any, loc: list[str | int], what: str, fix: str) -> InputError:
    return InputError(f"{path}:{line_of(raw, loc)}: {what}", fix)


def _within(value: Any) -> Any:
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if not m:
            raise ValueError(f"cannot read duration {value!r}")
        return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    return value


def _load_one(path: Path, raw: Any, base: list[str | int]) -> LoadedAutomation:
    node = raw
    for part in base:
        node = node[part]
    if not isinstance(node, LocatedDict):
        raise _fail(path, raw, base, "an automation must be a mapping with name, trigger and notify",
                    "see deployments/automations/*.yaml for the format")
    try:
        spec = AutomationSpec.model_validate(node)
    except ValidationError as exc:
        err = first_error(exc)
        loc = [*base, *err["loc"]]
        raise _fail(path, raw, loc, f"{'.'.join(map(str, err['loc']))}: {err['msg']}",
                    "see deployments/automations/*.yaml for the format") from None
    trigger = dict(spec.trigger)
    if trigger.get("type", "event") != "event":
        raise _fail(path, raw, [*base, "trigger", "type"], "only `type: event` triggers are supported",
                    "use an event trigger (reactive or proactive)")
    unknown = sorted(set(trigger) - set(EventTrigger.model_fields))
    if unknown:
        raise _fail(path, raw, [*base, "trigger", unknown[0]], f"unknown trigger key {unknown[0]!r}",
                    f"use {', '.join(sorted(EventTrigger.model_fields))}")
    fix = "durations are seconds or 90s/30m/26h/2d; see Prefect's EventTrigger"
    try:
        if "within" in trigger:
            trigger["within"] = _within(trigger["within"])
    except ValueError as exc:
        raise _fail(path, raw, [*base, "trigger", "within"], f"trigger within: {exc}", fix) from None
    try:
        event_trigger = EventTrigger.model_validate(trigger)
    except ValidationError as exc:
        err = first_error(exc)
        named = [k for k in trigger if f"`{k}`" in str(err["msg"])]  # model-level errors name the key
        where = [*(err["loc"] or named[:1])]
        raise _fail(path, raw, [*base, "trigger", *where], f"trigger {'.'.join(map(str, where))}: "
                    f"{str(err['msg']).removeprefix('Value error, ')}", fix) from None
    return LoadedAutomation(path=path, line=line_of(raw, base), spec=spec, trigger=event_trigger)


def load_automations(directory: Path = DEFAULT_DIR) -> list[LoadedAutomation]:
    """Every automation in the *.yaml/*.yml files of `directory`; refuses the first mistake
    (file and line) before anything is applied, and duplicate names."""
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]) if directory.is_dir() else []
    if not files:
        raise InputError(f"no automation files (*.yaml) in {directory}", "give --dir with the automations")
    loaded: list[LoadedAutomation] = []
    for path in files:
        raw = load_located(path)
        if isinstance(raw, LocatedDict) and "automations" in raw:
            items = raw["automations"]
            if not isinstance(items, LocatedList):
                raise _fail(path, raw, ["automations"], "`automations:` must be a list", "write one `- name: ...` each")
            loaded += [_load_one(path, raw, ["automations", i]) for i in range(len(items))]
        else:
            loaded.append(_load_one(path, raw, []))
    seen: dict[str, LoadedAutomation] = {}
    for item in loaded:
        if item.spec.name in seen:
            raise InputError(f"{item.path}:{item.line}: automation {item.spec.name!r} is also defined in "
                             f"{seen[item.spec.name].path}", "give each automation its own name")
        seen[item.spec.name] = item
    return loaded


def desired_automation(item: LoadedAutomation, block_id: UUID) -> AutomationCore:
    return AutomationCore(
        name=item.spec.name, description=item.spec.description, enabled=item.spec.enabled,
        tags=["vaultflow"], trigger=item.trigger,
        actions=[SendNotification(block_document_id=block_id, subject=item.spec.notify.subject,
                                  body=item.spec.notify.body)],
    )


_SET_FIELDS = {"after", "expect", "for_each"}  # sets in Prefect's triggers: their JSON order means nothing


def _comparable(automation: AutomationCore) -> dict[str, Any]:
    fields = {"name", "description", "enabled", "tags", "trigger", "actions", "actions_on_trigger",
              "actions_on_resolve"}
    dumped = AutomationCore.model_validate(automation.model_dump(include=fields)).model_dump(mode="json")
    return _sorted_sets(dumped)  # type: ignore[no-any-return]


def _sorted_sets(value: Any) -> Any:
    """`value` with the lists of set-valued trigger fields sorted, at any depth (compound
    triggers nest them): a set dumps in hash order, which differs between processes."""
    if isinstance(value, dict):
        return {k: sorted(v) if k in _SET_FIELDS and isinstance(v, list) else _sorted_sets(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_sorted_sets(v) for v in value]
    return value


def split_block_ref(ref: str) -> tuple[str, str]:
    """`slug/name`, or a bare name of a custom-webhook block."""
    slug, _, name = ref.rpartition("/")
    return (slug or "custom-webhook", name)


async def apply_automations(items: list[LoadedAutomation], notify_block: str = DEFAULT_NOTIFY_BLOCK,
                            prune: bool = False) -> list[tuple[str, str]]:
    """Create or update each automation by name; returns (name, created|updated|unchanged|deleted).

    Extra automations with the same name (left by `prefect automation create`) are deleted.
    With `prune`, so are automations tagged `vaultflow` (applied from YAML earlier) whose
    name no file holds any more.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    outcomes: list[tuple[str, str]] = []
    async with get_client() as client:
        block_ids: dict[str, UUID] = {}
        for item in items:
            ref = item.spec.notify.block or notify_block
            if ref in block_ids:
                continue
            slug, name = split_block_ref(ref)
            try:
                block_ids[ref] = (await client.read_block_document_by_name(name, slug, include_secrets=False)).id
            except ObjectNotFound:
                raise InputError(
                    f"no notification block {slug}/{name} (needed by {item.path.name})",
                    "create it: `vaultflow automations apply --webhook-url URL`, or in the Prefect UI "
                    "(Blocks, + Custom Webhook / Slack Webhook / SendGrid Email), then pass --notify-block slug/name",
                ) from None
        existing = await client.read_automations()
        for item in items:
            want = desired_automation(item, block_ids[item.spec.notify.block or notify_block])
            same_name = [a for a in existing if a.name == want.name]
            if not same_name:
                await client.create_automation(want)
                outcomes.append((want.name, "created"))
                continue
            keep, *extra = same_name
            for duplicate in extra:
                await client.delete_automation(duplicate.id)
            if _comparable(keep) == _comparable(want):
                outcomes.append((want.name, "unchanged"))
            else:
                await client.update_automation(keep.id, want)
                outcomes.append((want.name, "updated"))
        if prune:
            wanted = {item.spec.name for item in items}
            for gone in existing:
                if "vaultflow" in gone.tags and gone.name not in wanted:
                    await client.delete_automation(gone.id)
                    outcomes.append((gone.name, "deleted"))
    return outcomes


async def save_webhook_block(url: str, notify_block: str = DEFAULT_NOTIFY_BLOCK) -> None:
    """Create or replace the default notification block: a JSON POST of subject and body."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    slug, name = split_block_ref(notify_block)
    if slug != "custom-webhook":
        raise InputError(f"--webhook-url creates a custom-webhook block, not {slug}/{name}",
                         "drop --webhook-url, or name a custom-webhook block")
    block = CustomWebhookNotificationBlock(name="vaultflow", url=url, headers=None, cookies=None,
                                           json_data={"subject": "{{subject}}", "body": "{{body}}"})
    await block.asave(name, overwrite=True)
