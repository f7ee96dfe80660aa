"""The canvas built for a run, inspected without a broker."""
from types import SimpleNamespace

from celery.canvas import _chain, chord

from chains.canvas import FINISH_TASK, build_run_signature


def step_run(index, stage, key="math.add", queue="math", time_limit=None):
    return SimpleNamespace(id=100 + index, index=index, stage=stage, step_type=key, queue=queue,
                           map=False,
                           task_id=f"task-{index}", time_limit=time_limit)


# Which run a task belongs to, for Flower and `celery inspect` (the step's row knows it too).
ABOUT = {"run_id": "run-1", "chain": "math_chain"}


def build(step_runs):
    run = SimpleNamespace(id="run-1", chain=None, task_type="math_chain")
    return build_run_signature(run, step_runs, first_input={"x": 1}, time_limit_default=60)


def test_sequential_stages_make_a_chain_whose_last_step_completes_the_run():
    canvas = build([step_run(0, 0), step_run(1, 1, "io.stat", "io", time_limit=5)])
    assert isinstance(canvas, _chain)
    first, second = canvas.tasks
    assert first.task == "chains.step.math.add"
    assert first.args == ({"x": 1},)  # the run's inputs (or the resume point's) go first
    assert first.kwargs == {"step_run_id": 100, **ABOUT}
    assert first.options["task_id"] == "task-0"
    assert first.options["queue"] == "math"
    assert (first.options["soft_time_limit"], first.options["time_limit"]) == (60, 66)
    assert "link_error" not in first.options  # the result backend fails the run instead
    assert second.args == () and second.options["queue"] == "io"
    assert second.options["soft_time_limit"] == 5
    assert second.kwargs == {"step_run_id": 101, "finish_run": True, **ABOUT}  # no finaliser task


def test_a_wider_stage_becomes_a_chord_with_the_next_stage():
    canvas = build([step_run(0, 0), step_run(1, 1), step_run(2, 1), step_run(3, 2)])
    first, fan = canvas.tasks[0], canvas.tasks[1]
    assert first.options["task_id"] == "task-0"
    # chain() upgrades group -> next task into a chord.
    assert isinstance(fan, chord)
    assert [t.options["task_id"] for t in fan.tasks] == ["task-1", "task-2"]
    assert all(t.args == () for t in fan.tasks)
    # The next stage is the chord's body; as the last stage it completes the run.
    assert fan.body.options["task_id"] == "task-3"
    assert fan.body.kwargs == {"step_run_id": 103, "finish_run": True, **ABOUT}


def test_a_parallel_last_stage_ends_in_the_finaliser():
    canvas = build([step_run(0, 0), step_run(1, 1), step_run(2, 1)])
    fan = canvas.tasks[1]
    assert isinstance(fan, chord)
    assert [t.kwargs for t in fan.tasks] == [{"step_run_id": 101, **ABOUT},
                                             {"step_run_id": 102, **ABOUT}]
    assert fan.body.task == FINISH_TASK and fan.body.kwargs == {"run_id": "run-1"}


def test_steps_are_ordered_by_stage_then_index():
    canvas = build([step_run(1, 1), step_run(0, 0)])
    assert [t.options.get("task_id") for t in canvas.tasks[:2]] == ["task-0", "task-1"]


def test_a_parallel_first_stage_gives_the_inputs_to_each_of_its_steps():
    canvas = build([step_run(0, 0), step_run(1, 0), step_run(2, 1)])
    fan = canvas if isinstance(canvas, chord) else canvas.tasks[0]
    assert [t.args for t in fan.tasks] == [({"x": 1},), ({"x": 1},)]
    assert [t.args for t in fan.tasks] == [({"x": 1},), ({"x": 1},)]  # a list, not used up
