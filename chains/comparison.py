"""Two runs side by side: the structure the admin's comparison page and
GET /api/runs/compare/ both show (selectors.run_comparison reads the rows).

Runs are compared field by field (chain, version, trigger, inputs, status, duration, result,
error) and their steps are aligned by position (index): a step only the second run has is
"added", one only the first run has is "removed", and a step both have is "changed" when its
type, name, stage, status, params, result or error differ (or its duration: when one took at
least twice as long as the other and at least DURATION_MARGIN seconds longer), else "same".
Each row names the fields that differ, which the page marks."""
from typing import Any

from chains.models import Run, StepRun
from chains.services.versions import version_diff

# A difference in duration is marked when one is at least this many times the other...
DURATION_RATIO = 2.0
# ... and longer by at least this many seconds (a step of 2 ms against 5 ms is not news).
DURATION_MARGIN = 0.5

RUN_FIELDS = ["chain", "version", "trigger", "inputs", "status", "duration", "result", "error"]
STEP_FIELDS = ["step_type", "name", "stage", "status", "duration", "params", "result", "error"]
# Added, removed, changed, same: what happened to a step from the first run to the second.
ADDED, REMOVED, CHANGED, SAME = "added", "removed", "changed", "same"


def _seconds(started, finished) -> float | None:
    if started and finished:
        return round((finished - started).total_seconds(), 3)
    return None


def run_side(run: Run) -> dict[str, Any]:
    """One run as the comparison shows it."""
    version = run.version
    return {
        "id": str(run.pk), "chain": run.chain_id,
        "chain_name": run.chain.name if run.chain else None, "task_type": run.task_type,
        "version": version.number if version else None,
        "trigger": run.trigger, "inputs": run.inputs, "status": run.status,
        "created_at": run.created_at, "started_at": run.started_at,
        "finished_at": run.finished_at, "duration": _seconds(run.started_at, run.finished_at),
        "result": run.result, "error": run.error, "steps_total": run.steps_total,
    }


def step_side(step_run: StepRun) -> dict[str, Any]:
    """One step of a run as the comparison shows it."""
    return {
        "index": step_run.index, "stage": step_run.stage, "name": step_run.name,
        "step_type": step_run.step_type, "status": step_run.status,
        "duration": _seconds(step_run.started_at, step_run.finished_at),
        "params": step_run.params, "result": step_run.result, "error": step_run.error,
    }


def durations_differ(a: float | None, b: float | None) -> bool:
    """Only one of them took a time, or one took at least DURATION_RATIO times the other and
    DURATION_MARGIN seconds more."""
    if a is None or b is None:
        return (a is None) != (b is None)
    low, high = sorted((a, b))
    return high - low >= DURATION_MARGIN and high >= DURATION_RATIO * low


def _differs(field: str, a: Any, b: Any) -> bool:
    if field == "duration":
        return durations_differ(a, b)
    return a != b


def compare_runs(a: Run, a_steps: list[StepRun], b: Run, b_steps: list[StepRun]
                 ) -> dict[str, Any]:
    """The comparison of run `a` (the base) with run `b`, each with its steps in order."""
    left, right = run_side(a), run_side(b)
    summary = [{"field": name, "a": left[name], "b": right[name],
               "differs": _differs(name, left[name], right[name])} for name in RUN_FIELDS]
    by_index_a = {sr.index: step_side(sr) for sr in a_steps}
    by_index_b = {sr.index: step_side(sr) for sr in b_steps}
    steps = []
    for index in sorted(set(by_index_a) | set(by_index_b)):
        one, other = by_index_a.get(index), by_index_b.get(index)
        if one is None or other is None:
            steps.append({"index": index, "change": ADDED if one is None else REMOVED,
                          "a": one, "b": other, "differs": list(STEP_FIELDS)})
            continue
        differs = [name for name in STEP_FIELDS if _differs(name, one[name], other[name])]
        steps.append({"index": index, "change": CHANGED if differs else SAME, "a": one,
                      "b": other, "differs": differs})
    same_chain = a.chain_id is not None and a.chain_id == b.chain_id
    changes = None
    if (same_chain and a.version is not None and b.version is not None
            and a.version.number != b.version.number):
        changes = version_diff(a.version.definition, b.version.definition)
    return {
        "a": left, "b": right, "same_chain": same_chain, "summary": summary, "steps": steps,
        "counts": {change: sum(step["change"] == change for step in steps)
                   for change in (SAME, CHANGED, ADDED, REMOVED)},
        "version_changes": changes,
    }
