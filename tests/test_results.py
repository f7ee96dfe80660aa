"""The result backend: one row per task however many states it goes through, and a chord's
body called with its header's results in order, or failed naming the step that was not."""
import json
from types import SimpleNamespace

import pytest
from celery import states
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import ChordCounter, TaskResult

from chains.results import ResultBackend
from config.celery import app

pytestmark = pytest.mark.django_db


@pytest.fixture
def backend() -> ResultBackend:
    return ResultBackend(app=app)


def test_a_task_s_states_update_one_row(backend):
    backend.store_result("t-1", {"pid": 7}, states.STARTED)
    started = TaskResult.objects.get(task_id="t-1")
    assert started.status == states.STARTED and started.date_started is not None
    backend.store_result("t-1", 42, states.SUCCESS)
    row = TaskResult.objects.get(task_id="t-1")
    assert (row.status, json.loads(row.result)) == (states.SUCCESS, 42)
    assert row.date_started == started.date_started  # kept from the STARTED write
    assert row.date_created == started.date_created
    assert backend.get_task_meta("t-1")["result"] == 42


def _chord(backend, task_ids, outcomes, monkeypatch):
    """Store the header's outcomes, then report each part done; returns what the body got."""
    header = app.GroupResult("g-1", [app.AsyncResult(t) for t in task_ids])
    ChordCounter.objects.create(group_id="g-1", count=len(task_ids),
                                sub_tasks=json.dumps([r.as_tuple() for r in header.results]))
    called: dict = {}
    monkeypatch.setattr("celery.canvas.Signature.delay",
                        lambda self, *args: called.setdefault("args", args))
    monkeypatch.setattr(backend, "chord_error_from_stack",
                        lambda callback, exc: called.setdefault("error", str(exc)))
    body = app.signature("chains.run_finish", kwargs={"run_id": "r"})
    for task_id, (state, value) in zip(task_ids, outcomes, strict=True):
        backend.store_result(task_id, value, state)
        with CaptureQueriesContext(connection) as queries:
            backend.on_chord_part_return(SimpleNamespace(id=task_id, group="g-1", chord=body),
                                         state, value)
    called["last_part_queries"] = len(queries)
    return called


def test_the_chord_body_gets_the_header_results_in_order(backend, monkeypatch):
    called = _chord(backend, ["a", "b", "c"],
                    [(states.SUCCESS, 1), (states.SUCCESS, {"x": 2}), (states.SUCCESS, None)],
                    monkeypatch)
    assert called["args"] == ([1, {"x": 2}, None],)
    assert not ChordCounter.objects.filter(group_id="g-1").exists()


def test_the_header_results_are_read_in_one_query_however_many(backend, monkeypatch):
    ids = [f"t{n}" for n in range(60)]
    called = _chord(backend, ids, [(states.SUCCESS, n) for n in range(60)], monkeypatch)
    assert called["args"] == (list(range(60)),)
    # the counter (savepoint, select for update, delete, release), then one read of all 60
    assert called["last_part_queries"] == 5


def test_a_failed_header_step_fails_the_chord(backend, monkeypatch):
    called = _chord(backend, ["a", "b"],
                    [(states.SUCCESS, 1), (states.FAILURE, ValueError("boom"))], monkeypatch)
    assert "args" not in called
    assert called["error"] == "Dependency b raised FAILURE"


def test_a_step_failure_only_the_worker_saw_fails_the_run(backend, user):
    from celery.exceptions import TimeLimitExceeded
    from celery.utils.objects import Bunch

    from chains import services
    from chains import states as run_states
    from chains.models import RunStatus, StepRun

    run = services.run_submit_task(task_type="math_chain", user=user,
                                   config={"operation": "add", "numbers": [1], "iterations": 2})
    first = run.step_runs.get(index=0)
    run_states.move(StepRun.objects.filter(id=first.id), RunStatus.RUNNING, worker="w1@host")
    # What the worker's main process does when it kills a step at its hard time limit.
    request = Bunch(id=first.task_id, task="chains.step.math.add", group=None, chord=None,
                    errbacks=None, ignore_result=False)
    backend.mark_as_failure(first.task_id, TimeLimitExceeded(66), request=request)
    run.refresh_from_db()
    assert (run.status, run.error) == (
        RunStatus.FAILED, "step 1 (math.add): TimeLimitExceeded: 66")
    assert list(run.step_runs.order_by("index").values_list("status", flat=True)) == [
        RunStatus.FAILED, RunStatus.CANCELLED]
    assert TaskResult.objects.get(task_id=first.task_id).status == states.FAILURE


def test_a_failure_of_another_task_leaves_runs_alone(backend, user):
    from celery.utils.objects import Bunch

    from chains import services
    from chains.models import RunStatus

    run = services.run_submit_task(task_type="math_chain", user=user,
                                   config={"operation": "add", "numbers": [1]})
    task_id = run.step_runs.get().task_id  # the same id, but not reported as a step task
    request = Bunch(id=task_id, task="bench.noop", group=None, chord=None, errbacks=None,
                    ignore_result=False)
    backend.mark_as_failure(task_id, ValueError("x"), request=request)
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING


# --- The contract with django-celery-results ----------------------------------------------------

ROW_FIELDS = ["status", "result", "traceback", "content_type", "content_encoding", "task_name",
              "task_args", "task_kwargs", "worker", "periodic_task_name"]


def _request(task_id: str):
    from celery.app.task import Context

    return Context(id=task_id, task="chains.step.math.add", args=[1], kwargs={"step_run_id": 3},
                   hostname="w1@host", delivery_info={"routing_key": "math"}, retries=0)


@pytest.mark.parametrize("outcome", ["success", "failure", "retry"])
def test_the_backend_stores_the_rows_the_stock_backend_stores(backend, outcome):
    """Pins the private parts of django-celery-results the backend calls
    (_get_meta_from_request, _get_extended_properties): an upgrade that changes what they
    give fails here, where the pinned range in pyproject.toml says to look."""
    from django_celery_results.backends.database import DatabaseBackend

    stock = DatabaseBackend(app=app)
    rows = {}
    for name, chosen in (("stock", stock), ("project", backend)):
        task_id = f"{name}-{outcome}"
        request = _request(task_id)
        if outcome == "success":
            chosen.store_result(task_id, 42, states.SUCCESS, request=request)
        elif outcome == "failure":
            try:
                raise ValueError("boom")
            except ValueError as exc:
                chosen.mark_as_failure(task_id, exc, traceback="Traceback: boom",
                                       request=request)
        else:
            chosen.mark_as_retry(task_id, ValueError("again"), traceback="Traceback: again",
                                 request=request)
        row = TaskResult.objects.get(task_id=task_id)
        rows[name] = {field: getattr(row, field) for field in ROW_FIELDS}
        rows[name]["meta"] = json.loads(row.meta)
    assert rows["project"] == rows["stock"]
    assert (rows["stock"]["task_name"], rows["stock"]["worker"]) == (
        "chains.step.math.add", "w1@host")  # the extended fields are there to compare


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_the_backend_ends_a_chord_as_the_stock_backend_does(outcome, monkeypatch):
    """The same header rows, reported part by part to each backend: the body gets the same
    results (or both fail the chord), and the chord's counter is gone."""
    from celery.backends.base import Backend
    from django_celery_results.backends.database import DatabaseBackend

    calls: dict[str, list] = {"body": [], "error": []}
    monkeypatch.setattr("celery.canvas.Signature.delay",
                        lambda self, *args: calls["body"].append(args))
    monkeypatch.setattr(Backend, "chord_error_from_stack",
                        lambda self, callback, exc: calls["error"].append(str(exc)))
    ended = {}
    for name, chosen in (("stock", DatabaseBackend(app=app)), ("project", ResultBackend(app=app))):
        group_id, task_ids = f"g-{name}", [f"{name}-a", f"{name}-b"]
        header = app.GroupResult(group_id, [app.AsyncResult(t) for t in task_ids])
        ChordCounter.objects.create(group_id=group_id, count=2, sub_tasks=json.dumps(
            [r.as_tuple() for r in header.results]))
        outcomes = [(states.SUCCESS, {"x": 1}), (states.SUCCESS, [2, 3])]
        if outcome == "failure":
            outcomes[1] = (states.FAILURE, ValueError("boom"))
        body = app.signature("chains.run_finish", kwargs={"run_id": "r"})
        for task_id, (state, value) in zip(task_ids, outcomes, strict=True):
            chosen.store_result(task_id, value, state)
            chosen.on_chord_part_return(SimpleNamespace(id=task_id, group=group_id, chord=body),
                                        state, value)
        ended[name] = (list(calls["body"]), [error.replace(name, "*") for error in calls["error"]],
                       ChordCounter.objects.filter(group_id=group_id).exists())
        calls["body"].clear(), calls["error"].clear()
    if outcome == "success":
        assert ended["stock"] == ended["project"] == ([([{"x": 1}, [2, 3]],)], [], False)
    else:
        assert ended["stock"][0] == ended["project"][0] == []  # no body
        # Both fail the chord once; the stock backend says what was raised, this one which
        # step raised it (the run page names the step).
        assert ended["stock"][1] == ["ValueError('boom')"]
        assert ended["project"][1] == ["Dependency *-b raised FAILURE"]
        assert ended["stock"][2] is ended["project"][2] is False


def test_a_step_task_the_worker_does_not_know_fails_its_run_naming_the_type(backend, user):
    from celery.exceptions import NotRegistered
    from celery.utils.objects import Bunch

    from chains import services
    from chains.models import RunStatus

    run = services.run_submit_task(task_type="math_chain", user=user,
                                   config={"operation": "add", "numbers": [1]})
    step = run.step_runs.get()
    # What a worker does with a message for a task it has not registered.
    request = Bunch(name="chains.step.math.add", chord=None, root_id=None,
                    correlation_id=step.task_id, reply_to=None, errbacks=None)
    backend.mark_as_failure(step.task_id, NotRegistered("chains.step.math.add"),
                            request=request)
    run.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.FAILED, (
        "step 1 (math.add): unknown step type 'math.add': no app on the worker that took it "
        "declares it"))


def test_a_header_step_delivered_again_is_counted_once_and_gives_the_body_once(
        backend, monkeypatch):
    """Counted with its step's completion: a delivery again of a completed header step (its
    first worker died before reporting the part) neither counts it twice nor loses the body;
    when the first delivery of the last part died, the second one calls the body."""
    header = app.GroupResult("g-2", [app.AsyncResult(t) for t in ("p", "q")])
    ChordCounter.objects.create(group_id="g-2", count=2,
                                sub_tasks=json.dumps([r.as_tuple() for r in header.results]))
    calls: list = []
    monkeypatch.setattr("celery.canvas.Signature.delay", lambda self, *args: calls.append(args))
    body = app.signature("chains.run_finish", kwargs={"run_id": "r"})

    def request(task_id):
        return SimpleNamespace(id=task_id, group="g-2", chord=body, task="chains.step.x",
                               args=[], kwargs={}, hostname="w", delivery_info={})

    def completed_then_died(task_id, value):  # the step's transaction, then no report
        backend.store_with_step(task_id, value, request(task_id))
        backend._chord_parts_counted.pop(task_id)

    def delivered_again(task_id, value):  # finds its step done; Celery reports the part
        backend.counted_with_step_before(task_id)
        backend.on_chord_part_return(request(task_id), states.SUCCESS, value)

    completed_then_died("p", 1)
    delivered_again("p", 1)
    assert ChordCounter.objects.get(group_id="g-2").count == 1 and calls == []
    completed_then_died("q", 2)  # the last part
    assert ChordCounter.objects.get(group_id="g-2").count == 0 and calls == []
    delivered_again("q", 2)
    assert calls == [([1, 2],)]
    assert not ChordCounter.objects.filter(group_id="g-2").exists()
    delivered_again("q", 2)  # once more: nothing left to do
    assert calls == [([1, 2],)]
