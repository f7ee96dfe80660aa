"""The admin's pictures: a chain's steps (saved, or as the builder has them on screen) and a
run's steps as chains.picture nodes, each with its kind, condition and link."""
from collections.abc import Iterable, Sequence
from typing import Any

from django.urls import reverse

from chains.compatibility import stages_of
from chains.conditions import describe, when_problems
from chains.models import Chain, Run, StepRun
from chains.picture import APPROVAL, MAP, STEP, SUBCHAIN, Node, Picture, chain_picture
from chains.presets import StepSpec
from chains.steps.flow import APPROVAL as APPROVAL_TYPE
from chains.steps.flow import SUBCHAIN as SUBCHAIN_TYPE


def _callee(step_type: str, params: Any) -> str:
    """The chain a flow.chain step calls ("" for other steps or when it names none)."""
    if step_type != SUBCHAIN_TYPE or not isinstance(params, dict):
        return ""
    callee = params.get("chain")
    return callee[:200] if isinstance(callee, str) else ""


def chain_urls(names: Iterable[str]) -> dict[str, str]:
    """The admin page of each chain named (those that exist), in one query."""
    wanted = {name for name in names if name}
    if not wanted:
        return {}
    return {name: reverse("admin:chains_chain_change", args=[pk])
            for pk, name in Chain.objects.filter(name__in=wanted).values_list("pk", "name")}


def step_node(*, step_type: str, name: str, params: Any, map: bool, when: Any,
              status: str = "", items_total: int | None = None,
              urls: dict[str, str] | None = None, child_url: str = "") -> Node:
    """One step as the picture draws it. `items_total`: a run's map step, once its items are
    known ("× N" instead of "× each"); `child_url`: the child run of a flow.chain step."""
    callee = _callee(step_type, params)
    label = name or (f"run {callee}" if callee else step_type) or "?"
    condition = ""
    if when is not None:
        condition = describe(when) if not when_problems(when) else "when … (not valid yet)"
    if map:
        return Node(label, status, MAP, badge="× each" if items_total is None
                    else f"× {items_total:,}", condition=condition,
                    title="once per item of the list it receives")
    if step_type == APPROVAL_TYPE:
        return Node(label, status, APPROVAL, condition=condition,
                    title="waits for a person to approve")
    if step_type == SUBCHAIN_TYPE:
        href = child_url or (urls or {}).get(callee, "")
        title = (f"runs chain {callee!r}" if callee else "runs a chain") + (
            "; opens its child run" if child_url else "; opens the chain" if href else
            " (no chain of that name)")
        return Node(label, status, SUBCHAIN, condition=condition, href=href, title=title)
    return Node(label, status, STEP, condition=condition)


def specs_picture(specs: Sequence[StepSpec]) -> Picture:
    """A chain's steps (saved or on screen), stages left to right."""
    urls = chain_urls(_callee(spec.step_type, spec.params) for spec in specs)
    return chain_picture([[step_node(step_type=spec.step_type, name=spec.name,
                                     params=spec.params, map=spec.map, when=spec.when, urls=urls)
                           for spec in stage] for stage in stages_of(specs)])


def run_picture(stages: list[dict], children: dict[int, list[Run]]) -> Picture:
    """A run's steps coloured by status (selectors.run_stages' stages); a map step says how
    many items it has, a flow.chain step links to its child run."""
    step_runs: list[StepRun] = [sr for stage in stages for sr in stage["steps"]]
    urls = chain_urls(_callee(sr.step_type, sr.params) for sr in step_runs)
    return chain_picture([[step_node(
        step_type=sr.step_type, name=sr.name, params=sr.params, map=sr.map, when=sr.when,
        status=sr.status, items_total=sr.items_total, urls=urls,
        child_url=reverse("admin:chains_run_change", args=[children[sr.id][0].pk])
        if children.get(sr.id) else "") for sr in stage["steps"]] for stage in stages])
