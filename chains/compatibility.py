"""Does each stage's output fit the next stage's input? Checked before anything runs."""
from collections.abc import Sequence
from itertools import groupby

from chains.presets import StepSpec
from chains.steps import STEP_TYPES


def stages_of(specs: Sequence[StepSpec]) -> list[list[StepSpec]]:
    return [[spec for _, spec in stage] for stage in _indexed_stages(specs)]


def _indexed_stages(specs: Sequence[StepSpec]) -> list[list[tuple[int, StepSpec]]]:
    """The steps by stage, in order, each with its position in `specs`."""
    ordered = sorted(enumerate(specs), key=lambda pair: (pair[1].stage, pair[0]))
    return [list(group) for _, group in groupby(ordered, key=lambda pair: pair[1].stage)]


def _output(stage: list[StepSpec], given: str) -> str:
    """What a stage hands on: one step's output, or a list from a parallel stage (or a map
    step). A step with a condition may pass its input on instead: then nothing is known."""
    spec = stage[0]
    if len(stage) == 1 and spec.map:
        produces = STEP_TYPES[spec.step_type].produces
        return {"number": "numbers", "input": given}.get(produces, "list")
    outputs = {given if STEP_TYPES[s.step_type].produces == "input" else
               STEP_TYPES[s.step_type].produces for s in stage}
    if len(stage) == 1:
        output = outputs.pop()
        return output if spec.when is None or output == given else "any"
    if any(s.when is not None for s in stage):  # a skipped step gives null
        return "list"
    return "numbers" if outputs <= {"number", "numbers"} else "list"


def _item_kind(given: str) -> str:
    """What each item of a map step's list is."""
    return "number" if given == "numbers" else "any"


def stage_problems(specs: Sequence[StepSpec], *, first_input: str = "any") -> list[str]:
    """Human-readable problems where a stage's input does not fit its steps."""
    return [problem for _, problem in stage_problems_by_step(specs, first_input=first_input)]


def stage_problems_by_step(specs: Sequence[StepSpec], *, first_input: str = "any"
                           ) -> list[tuple[int, str]]:
    """(position in `specs`, problem) where a stage's input does not fit a step of it."""
    problems: list[tuple[int, str]] = []
    given = first_input
    for indexed in _indexed_stages(specs):
        number = indexed[0][1].stage  # as stored: stages count from 0
        stage_input = given
        for index, spec in indexed:
            accepts = STEP_TYPES[spec.step_type].accepts
            if spec.map and stage_input in ("number", "file"):
                problems.append((index, f"stage {number}: a map step needs a list, but the "
                                        f"stage before gives {_describe(stage_input)}"))
                continue
            given = _item_kind(stage_input) if spec.map else stage_input
            if accepts == "numbers" and given not in ("number", "numbers", "any", "none"):
                problems.append((index, f"stage {number}: {spec.step_type} needs a number or a "
                                        f"list of numbers, but the stage before gives "
                                        f"{_describe(given)}"))
            if accepts == "file" and not spec.params.get("path") and given not in (
                "file", "any"
            ):
                problems.append((index, f"stage {number}: {spec.step_type} needs a file from "
                                        f"the stage before (or a 'path' param), but gets "
                                        f"{_describe(given)}"))
        given = _output([spec for _, spec in indexed], stage_input)
    return problems


def _describe(kind: str) -> str:
    return {"number": "a number", "numbers": "a list of numbers", "file": "a file",
            "record": "a record", "list": "a list of results"}.get(kind, kind)


def value_kind(value) -> str:
    """The kind of a concrete input value (a run's inputs)."""
    if value is None or value == {}:
        return "none"
    if isinstance(value, bool):
        return "record"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        return "numbers"
    if isinstance(value, dict) and isinstance(value.get("file"), str):
        return "file"
    return "record"
