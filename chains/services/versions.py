"""Chain versions: every save that changes a chain's definition writes an immutable, numbered
version with its author, time and source; a run records the version it ran; a version can be
compared with another and restored (which writes a new version)."""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from chains.models import Chain, ChainVersion
from chains.presets import StepSpec

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# What a version holds besides its steps (a chain's `enabled` is not part of its definition:
# turning a chain off and on is in the audit trail, not a new version).
DEFINITION_FIELDS = ("name", "description", "default_inputs", "inputs_schema",
                     "max_active_runs")
STEP_FIELDS = tuple(field.name for field in fields(StepSpec))


def chain_definition(chain: Chain, specs: list[StepSpec]) -> dict[str, Any]:
    """The whole definition of `chain` with `specs` as its steps, as a version stores it."""
    return {**{name: getattr(chain, name) for name in DEFINITION_FIELDS},
            "steps": [asdict(spec) for spec in specs]}


def version_record(chain: Chain, definition: dict[str, Any], *, user: User | None,
                   source: str) -> ChainVersion | None:
    """A new version of `chain` if `definition` differs from its latest one (inside the save's
    transaction); None when the save changed nothing."""
    latest = chain.versions.order_by("-number").first()
    if latest is not None and _canonical(latest.definition) == _canonical(definition):
        return None
    number = (latest.number if latest else 0) + 1
    try:
        with transaction.atomic():
            return ChainVersion.objects.create(
                chain=chain, number=number, definition=definition, source=source,
                author=user if getattr(user, "is_authenticated", False) else None)
    except IntegrityError:  # another save took the number: after it, then
        number = (chain.versions.aggregate(last=Max("number"))["last"] or 0) + 1
        return ChainVersion.objects.create(
            chain=chain, number=number, definition=definition, source=source,
            author=user if getattr(user, "is_authenticated", False) else None)


def _canonical(definition: dict[str, Any]) -> str:
    """The definition as comparable text; a field a version predates counts as empty."""
    complete = {**dict.fromkeys(DEFINITION_FIELDS), **definition}
    return json.dumps(complete, sort_keys=True, separators=(",", ":"))


def current_version(chain: Chain | None) -> ChainVersion | None:
    if chain is None:
        return None
    return chain.versions.order_by("-number").first()


def version_specs(version: ChainVersion) -> list[StepSpec]:
    """A version's steps as specs (keys a newer StepSpec added take their defaults)."""
    return [StepSpec(**{key: value for key, value in step.items() if key in STEP_FIELDS})
            for step in version.definition.get("steps", [])]


def version_diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """What changed from `old` to `new` (two definitions), readable: one entry per changed
    field of the chain, and per step (aligned by position) added, removed, or each field that
    changed. Each entry: {"where", "change" ("changed", "added", "removed"), "old", "new"}."""
    out: list[dict[str, Any]] = []
    for name in DEFINITION_FIELDS:
        if old.get(name) != new.get(name):
            out.append({"where": name, "change": "changed", "old": old.get(name),
                        "new": new.get(name)})
    old_steps, new_steps = old.get("steps", []), new.get("steps", [])
    for index in range(max(len(old_steps), len(new_steps))):
        where = f"step {index + 1}"
        if index >= len(old_steps):
            out.append({"where": where, "change": "added", "old": None,
                        "new": new_steps[index]})
        elif index >= len(new_steps):
            out.append({"where": where, "change": "removed", "old": old_steps[index],
                        "new": None})
        else:
            before, after = old_steps[index], new_steps[index]
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    out.append({"where": f"{where} {key}", "change": "changed",
                                "old": before.get(key), "new": after.get(key)})
    return out
