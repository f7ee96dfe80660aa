"""The run page's timeline: a run's steps as chains.timeline steps (queued, started and
finished times, a map step's item spread, a sub-chain's link to its child run's timeline)."""
from datetime import datetime

from django.urls import reverse

from chains import selectors, states
from chains.models import Run, StepRun
from chains.steps.flow import APPROVAL as APPROVAL_TYPE
from chains.steps.flow import SUBCHAIN as SUBCHAIN_TYPE
from chains.timeline import APPROVAL, MAP, STEP, SUBCHAIN, Spread, Step, Timeline, run_timeline


def _kind(step_run: StepRun) -> str:
    if step_run.map:
        return MAP
    if step_run.step_type == APPROVAL_TYPE:
        return APPROVAL
    if step_run.step_type == SUBCHAIN_TYPE:
        return SUBCHAIN
    return STEP


def timeline_steps(run: Run, step_runs: list[StepRun], children: dict[int, list[Run]]
                   ) -> list[Step]:
    """The run's steps in order, each with its queued time (selectors.step_queued_times), a
    map step with its items' spread (one query for every map step), a flow.chain step with
    the link to its newest child run's timeline."""
    queued = selectors.step_queued_times(run, step_runs)
    spreads = selectors.map_item_spreads([sr.id for sr in step_runs if sr.map])
    steps = []
    for sr in sorted(step_runs, key=lambda sr: sr.index):
        spread = spreads.get(sr.id)
        child = children.get(sr.id)
        steps.append(Step(
            index=sr.index, label=sr.name or sr.step_type, status=sr.status, stage=sr.stage,
            kind=_kind(sr), queued_at=queued.get(sr.id), started_at=sr.started_at,
            finished_at=sr.finished_at,
            href=reverse("admin:chains_run_change", args=[child[0].pk]) + "#timeline"
            if child else "",
            spread=Spread(first_start=spread["first_start"],
                          last_finish=spread["last_finish"], p10=spread.get("p10"),
                          p90=spread.get("p90"), finished=spread["finished"])
            if spread else None))
    return steps


def run_page_timeline(run: Run, step_runs: list[StepRun], children: dict[int, list[Run]],
                      *, now: datetime) -> Timeline:
    """The timeline the run page draws (its bars reach `now` while the run is open)."""
    return run_timeline(timeline_steps(run, step_runs, children), now=now,
                        open_run=run.status in states.OPEN)
