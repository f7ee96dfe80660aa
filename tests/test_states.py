"""The state tables: every allowed move happens, every other one is refused, and the README
shows the tables as they are."""
from pathlib import Path

import pytest

from chains import states
from chains.models import Run, RunStatus, StepRun
from chains.presets import Preset, StepSpec
from chains.services import run_create

pytestmark = pytest.mark.django_db
README = Path(__file__).resolve().parent.parent / "README.md"
PAIRS = [(start, to) for start in RunStatus.values for to in RunStatus.values]


def a_run() -> Run:
    return run_create(preset=Preset(specs=[StepSpec("math.add", {}, 0)], inputs=0),
                       trigger="api")


@pytest.mark.parametrize(("start", "to"), PAIRS)
def test_every_run_move_is_allowed_or_refused_as_the_table_says(start, to):
    run = a_run()
    Run.objects.filter(id=run.id).update(status=start)  # set up; not a move
    moved = states.move(Run.objects.filter(id=run.id), to, error="moved")
    allowed = to in states.RUN_MOVES[start]
    assert moved == int(allowed)
    run.refresh_from_db()
    assert (run.status, run.error) == ((to, "moved") if allowed else (start, ""))


@pytest.mark.parametrize(("start", "to"), PAIRS)
def test_every_step_move_is_allowed_or_refused_as_the_table_says(start, to):
    step = a_run().step_runs.get()
    StepRun.objects.filter(id=step.id).update(status=start)  # set up; not a move
    moved = states.move(StepRun.objects.filter(id=step.id), to, error="moved")
    allowed = to in states.STEP_MOVES[start]
    assert moved == int(allowed)
    step.refresh_from_db()
    assert (step.status, step.error) == ((to, "moved") if allowed else (start, ""))


def test_the_tables_cover_every_status_and_final_ones_lead_only_to_a_retry():
    for table in (states.RUN_MOVES, states.STEP_MOVES):
        assert set(table) == set(RunStatus.values)
        assert not table[RunStatus.COMPLETED]
        assert table[RunStatus.FAILED] == table[RunStatus.CANCELLED] == {RunStatus.PENDING}
    assert states.OPEN | states.FINAL == set(RunStatus.values)
    assert not states.OPEN & states.FINAL


def test_the_readme_shows_the_current_tables():
    text = README.read_text()
    for table in (states.RUN_MOVES, states.STEP_MOVES):
        assert f"```mermaid\n{states.mermaid(table)}\n```" in text, (
            "README's state diagrams are out of date: paste chains.states.mermaid() again")
