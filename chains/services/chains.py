"""Writes of chains: validated steps, save (create or replace), duplicate, delete."""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction

from chains import audit
from chains.bounds import check_inputs, check_text, json_problem
from chains.canvas import build_run_signature
from chains.compatibility import stage_problems, stage_problems_by_step, value_kind
from chains.conditions import when_problems
from chains.errors import ChainError
from chains.inputs_schema import inputs_errors, schema_problem
from chains.models import Chain, ChainVersion, ChangeSource, Run, Step, StepRun
from chains.presets import StepSpec
from chains.queues import queue_problem
from chains.services.versions import chain_definition, version_record, version_specs
from chains.steps import STEP_TYPES, ParamsInvalid
from chains.steps.flow import PAUSING, SUBCHAIN
from chains.time_limits import hard_time_limit

if TYPE_CHECKING:
    from django.contrib.auth.models import User

MAX_STAGE = 10_000
MAX_STEP_NAME = 100
MAX_CHAIN_NAME = 200
MAX_ACTIVE_RUNS = 10_000
# The longest wait before a retry: a retried message waits in its worker (unacknowledged)
# until then, so it must stay well inside the broker's visibility timeout.
MAX_BACKOFF = 3600


def max_step_time_limit() -> int:
    """The longest soft time limit whose hard limit still ends within the broker's
    visibility timeout."""
    limit: int = settings.CHAINS_VISIBILITY_TIMEOUT
    while limit > 1 and hard_time_limit(limit) >= settings.CHAINS_VISIBILITY_TIMEOUT:
        limit -= 1
    return limit


def validate_step_specs(specs: list[StepSpec], *, prefix: str = "steps") -> list[StepSpec]:
    """Each step's type is in the registry and its params fit the type's schema; its
    workflow settings (map, when, retry backoff) make sense, and a step that maps or pauses
    its run is alone in its stage."""
    errors: dict[str, list[str]] = {}
    checked: list[StepSpec] = []
    max_time_limit = max_step_time_limit()
    if not specs:
        errors[prefix] = ["a chain needs at least one step"]
    if len(specs) > settings.CHAINS_MAX_STEPS:
        errors[prefix] = [f"{len(specs)} steps is over the limit of {settings.CHAINS_MAX_STEPS}"]
    for index, spec in enumerate(specs):
        if not 0 <= spec.max_retries <= 10:
            errors[f"{prefix}.{index}.max_retries"] = ["must be between 0 and 10"]
        if not 0 <= spec.stage <= MAX_STAGE:
            errors[f"{prefix}.{index}.stage"] = [f"must be between 0 and {MAX_STAGE}"]
        check_text(errors, f"{prefix}.{index}.name", spec.name, MAX_STEP_NAME)
        if problem := queue_problem(spec.queue):
            errors[f"{prefix}.{index}.queue"] = [problem]
        if problem := json_problem(spec.params, max_bytes=settings.CHAINS_MAX_INPUT_BYTES):
            errors[f"{prefix}.{index}.params"] = [problem]
            continue
        for field, problem in _workflow_problems(spec, specs):
            errors.setdefault(f"{prefix}.{index}.{field}", []).append(problem)
        if spec.time_limit is not None and spec.time_limit > max_time_limit:
            errors[f"{prefix}.{index}.time_limit"] = [
                f"must be at most {max_time_limit} s, so that the step ends before "
                "CHAINS_VISIBILITY_TIMEOUT and is never delivered twice"
            ]
        step_type = STEP_TYPES.get(spec.step_type)
        if step_type is None:
            errors[f"{prefix}.{index}.step_type"] = [f"unknown step type {spec.step_type!r}"]
            continue
        try:
            params = step_type.validate_params(spec.params, prefix=f"{prefix}.{index}.params")
        except ParamsInvalid as exc:
            errors.update(exc.messages())
            continue
        checked.append(StepSpec(**{**asdict(spec), "params": params}))
    if errors:
        raise ChainError("invalid steps", errors=errors)
    return checked


def _workflow_problems(spec: StepSpec, specs: list[StepSpec]) -> list[tuple[str, str]]:
    """(field, problem) for a step's map, when and retry backoff settings."""
    problems: list[tuple[str, str]] = []
    alone = sum(1 for other in specs if other.stage == spec.stage) == 1
    if spec.map and spec.step_type in PAUSING:
        problems.append(("map", f"{spec.step_type} cannot map over a list"))
    elif spec.map and not alone:
        problems.append(("map", "a map step is alone in its stage: give it a stage of its own"))
    if spec.step_type in PAUSING and not alone:
        problems.append(("stage", f"a {spec.step_type} step is alone in its stage: give it a "
                                  "stage of its own"))
    if spec.when is not None:
        problems += [("when", problem) for problem in when_problems(spec.when)]
        if problem := json_problem(spec.when, max_bytes=settings.CHAINS_MAX_INPUT_BYTES):
            problems.append(("when", problem))
    if spec.retry_backoff is not None and not 1 <= spec.retry_backoff <= MAX_BACKOFF:
        problems.append(("retry_backoff", f"must be between 1 and {MAX_BACKOFF} seconds"))
    if not 1 <= spec.retry_backoff_max <= MAX_BACKOFF:
        problems.append(("retry_backoff_max", f"must be between 1 and {MAX_BACKOFF} seconds"))
    return problems


def check_stage_fit(specs: list[StepSpec], *, default_inputs: Any,
                    prefix: str = "steps") -> None:
    """Each stage's input fits its steps (what Validate reports), or ChainError on the steps
    that do not fit."""
    errors: dict[str, list[str]] = {}
    for index, problem in stage_problems_by_step(specs, first_input=value_kind(default_inputs)):
        errors.setdefault(f"{prefix}.{index}.step_type", []).append(problem)
    if errors:
        raise ChainError("stages do not fit", errors=errors)


def check_chain_fields(*, name: str, description: str, default_inputs: Any,
                       inputs_schema: Any = None) -> None:
    """A chain's own fields (its steps are validate_step_specs'), or ChainError. The inputs
    schema must be a valid JSON Schema, and default inputs, when given, must fit it."""
    errors: dict[str, list[str]] = {}
    check_text(errors, "name", name, MAX_CHAIN_NAME)
    check_text(errors, "description", description, settings.CHAINS_MAX_DESCRIPTION_CHARS)
    try:
        check_inputs(default_inputs or {}, field="default_inputs")
    except ChainError as exc:
        errors.update(exc.errors)
    if problem := schema_problem(inputs_schema):
        errors["inputs_schema"] = [problem]
    elif default_inputs and not errors:
        errors.update(inputs_errors(inputs_schema, default_inputs, field="default_inputs"))
    if errors:
        raise ChainError("invalid chain", errors=errors)


def check_subchains(name: str, specs: list[StepSpec], *, prefix: str = "steps") -> None:
    """Each flow.chain step names a chain that exists (or this one's own name, which is a
    cycle), the calls make no cycle (A calls B calls A), and they nest at most
    CHAINS_MAX_DEPTH deep; or ChainError on the step."""
    calls = {index: spec.params.get("chain") for index, spec in enumerate(specs)
             if spec.step_type == SUBCHAIN}
    if not calls:
        return
    graph: dict[str, set[str]] = {}
    for caller, params in Step.objects.filter(step_type=SUBCHAIN).values_list("chain__name",
                                                                              "params"):
        if isinstance(params, dict) and isinstance(params.get("chain"), str):
            graph.setdefault(caller, set()).add(params["chain"])
    graph[name] = {callee for callee in calls.values() if isinstance(callee, str)}
    known = set(Chain.objects.filter(name__in=graph[name]).values_list("name", flat=True))
    errors: dict[str, list[str]] = {}
    limit = settings.CHAINS_MAX_DEPTH
    for index, callee in calls.items():
        field = f"{prefix}.{index}.params.chain"
        if callee != name and callee not in known:
            errors[field] = [f"no chain named {callee!r}"]
        elif cycle := _cycle(graph, name, callee):
            errors[field] = ["a cycle: " + " calls ".join(cycle)]
        elif (depth := 1 + _depth(graph, callee)) > limit:
            errors[field] = [f"sub-chains would nest {depth} deep; the limit is {limit} "
                             "(CHAINS_MAX_DEPTH)"]
    if errors:
        raise ChainError("sub-chains", errors=errors)


def _cycle(graph: dict[str, set[str]], start: str, callee: str) -> list[str] | None:
    """The path start -> callee -> ... -> start, if there is one."""
    stack: list[tuple[str, list[str]]] = [(callee, [start, callee])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        if node == start:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack.extend((nxt, [*path, nxt]) for nxt in sorted(graph.get(node, ())))
    return None


def _depth(graph: dict[str, set[str]], node: str, seen: frozenset[str] = frozenset()) -> int:
    """How many levels of sub-chains a run of `node` nests below itself."""
    if node in seen:
        return 0
    return max((1 + _depth(graph, callee, seen | {node}) for callee in graph.get(node, ())),
               default=0)


@transaction.atomic
def chain_save(
    *,
    chain: Chain | None = None,
    name: str,
    description: str = "",
    enabled: bool = True,
    default_inputs: dict[str, Any] | None = None,
    inputs_schema: Any = None,
    max_active_runs: int | None = None,
    steps: list[StepSpec],
    user: User | None = None,
    source: str = ChangeSource.API,
) -> Chain:
    """Create a chain, or replace an existing chain's fields and steps, all or nothing. A save
    that changes the definition writes a new version (by `user`, from `source`)."""
    check_chain_fields(name=name, description=description, default_inputs=default_inputs,
                       inputs_schema=inputs_schema)
    checked = validate_step_specs(steps)
    check_stage_fit(checked, default_inputs=default_inputs or {})
    check_subchains(name, checked)
    others = Chain.objects.filter(name=name)
    if chain is not None:
        others = others.exclude(pk=chain.pk)
    if others.exists():
        raise ChainError("name taken", errors={"name": [f"a chain named {name!r} exists"]})
    created, was_enabled = chain is None, chain.enabled if chain is not None else enabled
    if chain is None:
        chain = Chain(created_by=user if getattr(user, "is_authenticated", False) else None)
    chain.name, chain.description, chain.enabled = name, description, enabled
    chain.default_inputs = default_inputs or {}
    chain.inputs_schema = inputs_schema
    if max_active_runs is not None and not 1 <= max_active_runs <= MAX_ACTIVE_RUNS:
        raise ChainError("max_active_runs", errors={"max_active_runs": [
            f"must be between 1 and {MAX_ACTIVE_RUNS}, or empty for no limit"]})
    chain.max_active_runs = max_active_runs
    try:
        with transaction.atomic():
            chain.save()
    except IntegrityError as exc:  # another request took the name since the check above
        raise ChainError("name taken", errors={"name": [f"a chain named {name!r} exists"]}
                         ) from exc
    chain.steps.all().delete()
    Step.objects.bulk_create(
        Step(chain=chain, position=index, **asdict(spec)) for index, spec in enumerate(checked)
    )
    version = version_record(chain, chain_definition(chain, checked), user=user, source=source)
    if created or version is not None:
        audit.record("chain created" if created else "chain changed", chain, user=user,
                     version=version.number if version else None)
    if not created and was_enabled != enabled:
        audit.record("chain enabled" if enabled else "chain disabled", chain, user=user,
                     changes={"enabled": [was_enabled, enabled]})
    return chain


@transaction.atomic
def chain_delete(*, chain: Chain) -> None:
    """The chain, its steps and its schedules with their beat entries; its runs stay, without
    their chain."""
    audit.record("chain deleted", chain)
    chain.delete()  # its schedules go with it, and chains.signals removes their beat entries


def chain_problems(chain: Chain) -> list[str]:
    """What would stop the chain from running as meant, without running it: unknown step
    types, params that do not fit, time limits, map and condition settings, stages whose
    input does not fit, sub-chains that are missing, cycle or nest too deep, and the canvas
    compiled from it all."""
    specs = chain_step_specs(chain)
    try:
        checked = validate_step_specs(specs)
    except ChainError as exc:
        return [f"{field}: {reason}" for field, reasons in exc.errors.items()
                for reason in reasons]
    problems = stage_problems(checked, first_input=value_kind(chain.default_inputs))
    try:
        check_subchains(chain.name, checked)
    except ChainError as exc:
        problems += [f"{field}: {reason}" for field, reasons in exc.errors.items()
                     for reason in reasons]
    unsaved = [StepRun(id=i, index=i, stage=s.stage, step_type=s.step_type, map=s.map,
                       queue=s.queue or STEP_TYPES[s.step_type].default_queue,
                       task_id=f"check-{i}", time_limit=s.time_limit)
               for i, s in enumerate(checked)]
    build_run_signature(Run(), unsaved, first_input=None,
                        time_limit_default=settings.CHAINS_STEP_TIME_LIMIT)
    return problems


def chain_step_specs(chain: Chain) -> list[StepSpec]:
    return [
        StepSpec(
            step_type=step.step_type, params=step.params, stage=step.stage, name=step.name,
            max_retries=step.max_retries, time_limit=step.time_limit, queue=step.queue,
            map=step.map, when=step.when, retry_backoff=step.retry_backoff,
            retry_backoff_max=step.retry_backoff_max,
        )
        for step in chain.steps.order_by("position")
    ]


@transaction.atomic
def chain_duplicate(*, chain: Chain, user: User | None = None,
                    source: str = ChangeSource.ADMIN) -> Chain:
    """A copy of the chain and its steps under a free name ("name (copy)", "(copy 2)", ...)."""
    name, n = f"{chain.name} (copy)", 1
    while Chain.objects.filter(name=name).exists():
        n += 1
        name = f"{chain.name} (copy {n})"
    return chain_save(name=name, description=chain.description, enabled=chain.enabled,
                      default_inputs=chain.default_inputs, inputs_schema=chain.inputs_schema,
                      max_active_runs=chain.max_active_runs, steps=chain_step_specs(chain),
                      user=user, source=source)


@transaction.atomic
def version_restore(*, version: ChainVersion, user: User | None,
                    source: str = ChangeSource.RESTORE) -> Chain:
    """Make `version`'s definition the chain's again: a new version (restoring never rewrites
    history). Its name is kept as the chain's current one if another chain took it since."""
    chain = version.chain
    if chain is None:
        raise ChainError("deleted", errors={"version": ["its chain was deleted"]})
    definition = version.definition
    name = definition.get("name") or chain.name
    if Chain.objects.filter(name=name).exclude(pk=chain.pk).exists():
        name = chain.name
    return chain_save(chain=chain, name=name, description=definition.get("description", ""),
                      enabled=chain.enabled, default_inputs=definition.get("default_inputs"),
                      inputs_schema=definition.get("inputs_schema"),
                      max_active_runs=definition.get("max_active_runs"),
                      steps=version_specs(version), user=user, source=source)
