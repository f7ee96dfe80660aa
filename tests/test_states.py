"""The state tables: every allowed move happens, every other one is refused, and the README
shows the tables as they are."""
from pathlib import Path

import pytest

from chains import states
from chains.models import Run, RunStatus
from chains.presets import Preset, StepSpec
from chains.services import run_create

pytestmark = pytest.mark.django_db
README = Path(__file__).resolve().parent.parent / "README.md"
PAIRS = [(start, to) for start in RunStatus.values for to in RunStatus.values]


def a_run() -> Run:
    return run_create(preset=Preset(specs=[StepSpec("math.add", {}, 0)], inputs=0),
                       trigger="api")


@pytest.mark.parametrize("kind", ["run", "step"])
@pytest.mark.parametrize(("start", "to"), PAIRS)
def test_every_move_is_allowed_or_refused_as_the_table_says(kind, start, to):
    run = a_run()
    row, table = (run, states.RUN_MOVES) if kind == "run" else (
        run.step_runs.get(), states.STEP_MOVES)
    rows = type(row).objects.filter(id=row.id)
    rows.update(status=start)  # set up; not a move
    moved = states.move(rows, to, error="moved")
    allowed = to in table.get(start, ())  # a run is never SKIPPED
    assert moved == int(allowed)
    row.refresh_from_db()
    assert (row.status, row.error) == ((to, "moved") if allowed else (start, ""))


def test_the_tables_cover_every_status_and_final_ones_lead_only_to_a_retry():
    assert set(states.RUN_MOVES) == set(states.RUN_STATUSES)
    assert set(states.STEP_MOVES) == set(RunStatus.values) - {RunStatus.QUEUED}  # runs only
    for table in (states.RUN_MOVES, states.STEP_MOVES):
        assert not table[RunStatus.COMPLETED]
    assert states.STEP_MOVES[RunStatus.FAILED] == states.STEP_MOVES[RunStatus.CANCELLED] == {
        RunStatus.PENDING}
    assert states.RUN_MOVES[RunStatus.FAILED] == states.RUN_MOVES[RunStatus.CANCELLED] == {
        RunStatus.PENDING, RunStatus.QUEUED}  # retried: queued when the chain is full
    assert not states.STEP_MOVES[RunStatus.SKIPPED]  # done, like COMPLETED
    assert states.OPEN | states.FINAL == set(states.RUN_STATUSES)
    assert not states.OPEN & states.FINAL
    assert states.ACTIVE < states.OPEN


def test_the_seed_endpoints_know_five_statuses():
    assert {states.seed_status(status) for status in states.RUN_STATUSES} == set(
        states.SEED_STATUSES)
    assert states.seed_status(RunStatus.WAITING) == RunStatus.RUNNING
    assert states.reported_as(RunStatus.RUNNING) == [RunStatus.RUNNING, RunStatus.WAITING]
    assert states.reported_as(RunStatus.PENDING) == [RunStatus.PENDING, RunStatus.QUEUED]


def test_the_readme_shows_the_current_tables():
    text = README.read_text()
    for table in (states.RUN_MOVES, states.STEP_MOVES):
        assert f"```mermaid\n{states.mermaid(table)}\n```" in text, (
            "README's state diagrams are out of date: paste chains.states.mermaid() again")
