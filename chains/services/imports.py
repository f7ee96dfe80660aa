"""Chains from an export_chains file: the documented fields only, all or nothing."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from chains.errors import ChainError
from chains.models import Chain, ChangeSource
from chains.presets import StepSpec
from chains.services.chains import chain_save
from chains.services.schedules import schedule_save
from chains.steps.flow import SUBCHAIN

if TYPE_CHECKING:
    from django.contrib.auth.models import User


@transaction.atomic
def chains_import(*, data: Any, user: User | None = None) -> list[Chain]:
    """Create or replace (by name) the chains in an export, with their steps and schedules.
    Everything is validated first; one error and nothing is written."""
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(
        data.get("chains"), list
    ):
        raise ChainError("format", errors={"file": ["not a chains export (version 1)"]})
    imported = []
    for index, item in _callees_first(data["chains"]):
        prefix = f"chains.{index}"
        try:
            _refuse_unknown_keys(item, CHAIN_IMPORT_FIELDS)
            steps = []
            for n, step in enumerate(item["steps"]):
                _refuse_unknown_keys(step, STEP_IMPORT_FIELDS, prefix=f"steps.{n}.")
                steps.append(StepSpec(**step))
            chain = Chain.objects.filter(name=item["name"]).first()
            chain = chain_save(chain=chain, name=item["name"],
                               description=item.get("description", ""),
                               enabled=item.get("enabled", True),
                               default_inputs=item.get("default_inputs") or {},
                               inputs_schema=item.get("inputs_schema"),
                               max_active_runs=item.get("max_active_runs"), steps=steps,
                               user=user, source=ChangeSource.IMPORT)
        except ChainError as exc:
            raise ChainError("invalid", errors={f"{prefix}.{k}": v
                                                for k, v in exc.errors.items()}) from exc
        except (KeyError, TypeError) as exc:
            raise ChainError("invalid", errors={prefix: [f"malformed chain: {exc}"]}) from exc
        chain.schedules.all().delete()
        for n, raw in enumerate(item.get("schedules", [])):
            fields = dict(raw) if isinstance(raw, dict) else {}
            try:
                if not isinstance(raw, dict):
                    raise ChainError("invalid", errors={"": ["must be an object"]})
                if fields.get("run_at"):
                    fields["run_at"] = _parse_time(fields["run_at"])
                schedule_save(chain=chain, user=None, fields=fields, past_run_at_allowed=True)
            except ChainError as exc:
                raise ChainError("invalid", errors={
                    f"{prefix}.schedules.{n}.{k}".rstrip("."): v for k, v in exc.errors.items()
                }) from exc
        imported.append(chain)
    return imported


def _callees_first(items: list[Any]) -> list[tuple[int, Any]]:
    """The file's chains with those that others call (flow.chain) before their callers, so
    that each call names a chain that exists when its caller is saved; else in file order."""
    by_name = {item.get("name"): n for n, item in enumerate(items) if isinstance(item, dict)}
    ordered: list[int] = []
    seen: set[int] = set()

    def visit(n: int, path: tuple[int, ...]) -> None:
        if n in seen or n in path:  # a cycle: chain_save names it
            return
        steps = items[n].get("steps") if isinstance(items[n], dict) else None
        for step in steps if isinstance(steps, list) else []:
            params = step.get("params") if isinstance(step, dict) else None
            if (step.get("step_type") == SUBCHAIN and isinstance(params, dict)
                    and params.get("chain") in by_name):
                visit(by_name[params["chain"]], (*path, n))
        seen.add(n)
        ordered.append(n)

    for n in range(len(items)):
        visit(n, ())
    return [(n, items[n]) for n in ordered]


# "version": the number the exporting side had; the importing side numbers its own.
CHAIN_IMPORT_FIELDS = {"name", "description", "enabled", "default_inputs", "inputs_schema",
                       "max_active_runs", "steps", "schedules", "version"}
STEP_IMPORT_FIELDS = {"stage", "name", "step_type", "params", "max_retries", "time_limit",
                      "queue", "map", "when", "retry_backoff", "retry_backoff_max"}


def _refuse_unknown_keys(item: Any, allowed: set[str], *, prefix: str = "") -> None:
    """Imports take the documented fields only: never ids, owners or links to other rows."""
    if not isinstance(item, dict):
        raise ChainError("invalid", errors={prefix.rstrip(".") or "chain": ["must be an object"]})
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ChainError("invalid", errors={f"{prefix}{key}": ["unknown field"]
                                            for key in unknown})


def _parse_time(value: Any) -> datetime:

    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise ChainError("invalid", errors={"run_at": ["not an ISO 8601 date and time"]})
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)
