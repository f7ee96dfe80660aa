"""Run -> Celery signature. Pure: builds the canvas, writes and queues nothing."""
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from celery import chain, group
from celery import current_app as app
from celery.canvas import Signature

from chains.models import Run, StepRun
from chains.steps import STEP_TYPES
from chains.steps.flow import PAUSING
from chains.time_limits import hard_time_limit

FINISH_TASK = "chains.run_finish"


def step_signature(
    step_run: StepRun, *, time_limit_default: int, args: tuple[Any, ...] = (),
    finish_run: bool = False, about: dict[str, str] | None = None,
) -> Signature:
    """One step: its registry task, its pre-assigned task id, queue and time limits.
    `args` holds the run's inputs for the first stage; later stages get the previous result.
    `finish_run` makes the step complete the run when it completes. A failure the step cannot
    report itself (a hard time limit, a lost process) fails the run from the result backend
    (`chains.results`), so no error callback rides along in every message. `about` (the run's
    id and its chain's name) rides in the kwargs only so that Flower and `celery inspect`
    show which run a task belongs to."""

    soft = step_run.time_limit or time_limit_default
    return app.signature(
        STEP_TYPES[step_run.step_type].task_name,
        args=args,
        kwargs={"step_run_id": step_run.id, **({"finish_run": True} if finish_run else {}),
                **(about or {})},
        task_id=step_run.task_id,
        queue=step_run.queue,
        soft_time_limit=soft,
        time_limit=hard_time_limit(soft),
    )


def pauses(step_run: StepRun) -> bool:
    """Whether the run's canvas ends at this step: a map step publishes its items itself, an
    approval or a sub-chain waits. When such a step is done, the run is published again from
    the next stage (services.workflows)."""
    return step_run.map or step_run.step_type in PAUSING


def build_run_signature(
    run: Run, step_runs: Sequence[StepRun], *, first_input: Any, time_limit_default: int
) -> Signature:
    """Stages in order (a wider stage is a group, so group -> next stage is a chord), with
    `first_input` given to the first stage. A one-step last stage completes the run itself;
    after a parallel last stage a finaliser task does (the chord's body).

    `step_runs` are the steps still to run: all of them for a new run, the stages from the
    first unfinished one when a run is resumed or retried. The canvas stops after the first
    stage that pauses (see `pauses`); that stage's step goes on from there."""
    ordered = sorted(step_runs, key=lambda sr: (sr.stage, sr.index))
    stages = [list(members) for _, members in groupby(ordered, key=lambda sr: sr.stage)]
    for position, members in enumerate(stages):
        if any(pauses(sr) for sr in members):
            stages, paused = stages[:position + 1], True
            break
    else:
        paused = False
    about = {"run_id": str(run.id), "chain": run.chain.name if run.chain else run.task_type}
    parts: list[Signature] = []
    for position, members in enumerate(stages):
        args = (first_input,) if position == 0 else ()
        if len(members) == 1:
            last = position == len(stages) - 1 and not paused
            parts.append(step_signature(members[0], time_limit_default=time_limit_default,
                                        args=args, finish_run=last, about=about))
        else:
            parts.append(group([step_signature(sr, time_limit_default=time_limit_default,
                                               args=args, about=about) for sr in members]))
    if len(stages[-1]) > 1 and not paused:
        parts.append(app.signature(FINISH_TASK, kwargs={"run_id": str(run.id)}))
    return chain(*parts)
