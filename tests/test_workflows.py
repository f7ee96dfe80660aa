"""Workflows end to end, each example of the workflows issue through the API, against a real
Celery worker on a real Redis writing to the test database: map steps, conditions,
sub-chains, approvals. Nothing here is mocked or eager."""
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from django_celery_results.models import TaskResult

from chains import services
from chains.errors import Conflict
from chains.models import Approval, MapItem, Run, RunStatus, StepRun
from tests.helpers import wait_for_run
from tests.services import WRITABLE_DIRS

pytestmark = [pytest.mark.flow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _worker(celery_worker):
    return celery_worker


def make_chain(api, name: str, steps: list[dict], **fields) -> dict:
    response = api.post("/api/chains/", {"name": name, "steps": steps, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def start(api, chain: dict, inputs=None) -> str:
    body = {} if inputs is None else {"inputs": inputs}
    response = api.post(f"/api/chains/{chain['id']}/run/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def wait_for_status(run_id, status: str, *, timeout: float = 30) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(id=run_id)
        if run.status == status:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} is {run.status}, not {status}, after {timeout}s")


def approver(django_user_model, name: str = "approver"):
    user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="approve_run"))
    return django_user_model.objects.get(pk=user.pk)  # permissions read afresh


# --- Map ------------------------------------------------------------------------------------


def test_a_map_step_runs_once_per_item_and_keeps_their_order(api):
    chain = make_chain(api, "double each, then sum", [
        {"step_type": "math.multiply", "params": {"numbers": [2]}, "map": True},
        {"step_type": "math.add", "params": {}, "stage": 1},
    ])
    run = wait_for_run(start(api, chain, list(range(1, 101))))
    assert (run.status, run.result, run.error) == (RunStatus.COMPLETED, 10100, "")
    mapped = StepRun.objects.get(run=run, index=0)
    assert mapped.result == [2 * i for i in range(1, 101)]
    assert (mapped.items_total, mapped.items_done, mapped.status) == (100, 100, "COMPLETED")
    items = MapItem.objects.filter(step_run=mapped)
    assert items.count() == 100
    assert set(items.values_list("status", flat=True)) == {"COMPLETED"}
    assert set(items.values_list("attempts", flat=True)) == {1}
    assert run.steps_done == run.steps_total == 2
    # The items' rows are their record: no task result is written for them.
    item_ids = list(items.values_list("task_id", flat=True))
    assert not TaskResult.objects.filter(task_id__in=item_ids).exists()


def test_one_failing_item_fails_the_map_step_naming_the_item(api):
    chain = make_chain(api, "divide each", [
        {"step_type": "math.divide", "params": {"numbers": [2]}, "map": True},
    ])
    run = wait_for_run(start(api, chain, [4, 6, "eight", 10]))
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("step 1 (math.divide): item 2: "), run.error
    failed = MapItem.objects.get(step_run__run=run, index=2)
    assert failed.status == "FAILED" and failed.error
    assert StepRun.objects.get(run=run).status == "FAILED"


def test_a_map_over_something_that_is_not_a_list_fails_with_the_reason(api):
    refused = api.post("/api/chains/", {"name": "map a sum", "steps": [
        {"step_type": "math.add", "params": {"numbers": [1]}},
        {"step_type": "math.multiply", "params": {"numbers": [2]}, "map": True, "stage": 1},
    ]}, format="json")  # known before it runs: a sum is a number
    assert refused.status_code == 400
    assert refused.json() == {"steps.1.step_type": [
        "stage 1: a map step needs a list, but the stage before gives a number"]}
    chain = make_chain(api, "map the inputs", [
        {"step_type": "math.multiply", "params": {"numbers": [2]}, "map": True},
    ])
    run = wait_for_run(start(api, chain, 5))  # known only when it runs
    assert run.status == RunStatus.FAILED
    assert run.error == "step 1 (math.multiply): map: its input is not a list but a number"


def test_an_empty_list_maps_to_an_empty_list(api):
    chain = make_chain(api, "map nothing", [
        {"step_type": "math.multiply", "params": {"numbers": [2]}, "map": True},
    ])
    run = wait_for_run(start(api, chain, []))
    assert (run.status, run.result) == (RunStatus.COMPLETED, [])


# --- Conditions -----------------------------------------------------------------------------


def test_a_false_condition_skips_the_step_and_passes_its_input_on(api):
    chain = make_chain(api, "only big ones", [
        {"step_type": "math.add", "params": {"numbers": [5]}},
        {"step_type": "math.multiply", "params": {"numbers": [10]}, "stage": 1,
         "when": {"path": "", "op": ">", "value": 100}},
        {"step_type": "math.add", "params": {"numbers": [1]}, "stage": 2},
    ])
    run = wait_for_run(start(api, chain, 0))
    assert (run.status, run.result) == (RunStatus.COMPLETED, 6)
    steps = list(StepRun.objects.filter(run=run).order_by("index"))
    assert [s.status for s in steps] == ["COMPLETED", "SKIPPED", "COMPLETED"]
    assert steps[1].result == 5 and steps[1].attempts == 0
    assert run.steps_done == 3
    big = wait_for_run(start(api, chain, 200))  # 205 > 100: the step runs
    assert big.result == 2051


def test_a_skipped_step_in_a_parallel_stage_gives_null(api):
    chain = make_chain(api, "fan", [
        {"step_type": "math.add", "params": {"numbers": [1]}},
        {"step_type": "math.add", "params": {"numbers": [1]}, "stage": 0,
         "when": {"path": "0", "op": "exists"}},
    ])
    run = wait_for_run(start(api, chain, 3))  # a number has no item 0
    assert (run.status, run.result) == (RunStatus.COMPLETED, [4, None])


# --- Sub-chains -----------------------------------------------------------------------------


def test_a_sub_chain_runs_as_a_child_run_and_gives_its_result(api):
    make_chain(api, "double", [{"step_type": "math.multiply", "params": {"numbers": [2]}}])
    parent = make_chain(api, "add, double, add", [
        {"step_type": "math.add", "params": {"numbers": [1]}},
        {"step_type": "flow.chain", "params": {"chain": "double"}, "stage": 1},
        {"step_type": "math.add", "params": {"numbers": [1]}, "stage": 2},
    ])
    run = wait_for_run(start(api, parent, 1))
    assert (run.status, run.result) == (RunStatus.COMPLETED, 5)  # (1+1)*2+1
    step = StepRun.objects.get(run=run, index=1)
    child = Run.objects.get(parent_step=step)
    assert (child.status, child.result, child.depth, child.trigger) == (
        RunStatus.COMPLETED, 4, 1, "parent")
    assert step.result == 4 and step.status == "COMPLETED"


def test_a_failed_child_fails_its_parent_with_the_childs_error(api):
    make_chain(api, "divide by zero", [{"step_type": "math.divide", "params": {"numbers": [0]}}])
    parent = make_chain(api, "calls a failing chain", [
        {"step_type": "flow.chain", "params": {"chain": "divide by zero"}},
    ])
    run = wait_for_run(start(api, parent, 1))
    child = Run.objects.get(parent_step__run=run)
    assert child.status == RunStatus.FAILED
    assert run.status == RunStatus.FAILED
    assert run.error == (f"step 1 (flow.chain): child run {child.id} failed: "
                         "step 1 (math.divide): division by zero")


def test_cancelling_the_parent_cancels_the_child(api):
    make_chain(api, "slow", [{"step_type": "flow.wait", "params": {"seconds": 30}}])
    parent = make_chain(api, "calls slow", [
        {"step_type": "flow.chain", "params": {"chain": "slow"}},
    ])
    run_id = start(api, parent, 1)
    wait_for_status(run_id, RunStatus.WAITING)
    child = Run.objects.get(parent_step__run_id=run_id)
    wait_for_status(child.id, RunStatus.RUNNING)
    response = api.post(f"/api/runs/{run_id}/cancel/")
    assert response.status_code == 200, response.content
    assert "1 child run cancelled" in response.json()["error"]
    child.refresh_from_db()
    assert child.status == RunStatus.CANCELLED
    assert child.error.startswith("cancelled with its parent run")


# --- Approvals ------------------------------------------------------------------------------


def approval_chain(api, name="needs a yes", **params) -> dict:
    return make_chain(api, name, [
        {"step_type": "math.add", "params": {"numbers": [1]}},
        {"step_type": "flow.approval", "params": {"message": "go on?", **params}, "stage": 1},
        {"step_type": "math.add", "params": {"numbers": [1]}, "stage": 2},
    ])


def test_an_approved_run_goes_on_from_where_it_waited(api, django_user_model):
    run_id = start(api, approval_chain(api), 1)
    waiting = wait_for_status(run_id, RunStatus.WAITING)
    assert api.get(f"/tasks/{run_id}/status").json()["status"] == "RUNNING"
    step = StepRun.objects.get(run_id=run_id, index=1)
    assert step.status == "WAITING"
    approval = Approval.objects.get(step_run=step)
    assert (approval.message, approval.input, approval.decision) == ("go on?", 2, "")
    boss = approver(django_user_model)
    services.run_decide(run=waiting, user=boss, approve=True, comment="fine")
    run = wait_for_run(run_id)
    assert (run.status, run.result) == (RunStatus.COMPLETED, 3)
    approval.refresh_from_db()
    assert (approval.decision, approval.decided_by, approval.comment) == (
        "approved", boss, "fine")
    with pytest.raises(Conflict):  # a second decision
        services.run_decide(run=run, user=boss, approve=False)


def test_a_rejected_run_fails_saying_who_rejected_it(api, django_user_model):
    run_id = start(api, approval_chain(api), 1)
    waiting = wait_for_status(run_id, RunStatus.WAITING)
    services.run_decide(run=waiting, user=approver(django_user_model), approve=False,
                        comment="not today")
    run = Run.objects.get(id=run_id)
    assert (run.status, run.error) == (RunStatus.FAILED, "rejected by approver: not today")
    assert StepRun.objects.get(run=run, index=2).status == "CANCELLED"


def test_an_approval_nobody_gives_in_time_fails_the_run(api):
    run_id = start(api, approval_chain(api, timeout_seconds=60), 1)
    wait_for_status(run_id, RunStatus.WAITING)
    report = services.reconcile_runs(now=timezone.now() + timedelta(seconds=61))
    assert report["approvals_timed_out"] == 1
    run = Run.objects.get(id=run_id)
    assert (run.status, run.error) == (RunStatus.FAILED, "approval timed out")
    assert Approval.objects.get(step_run__run=run).decision == "timed_out"


def test_a_waiting_run_is_not_resumed_by_the_reconciler(api):
    run_id = start(api, approval_chain(api), 1)
    wait_for_status(run_id, RunStatus.WAITING)
    later = timezone.now() + timedelta(hours=2)  # past every stall and orphan deadline
    report = services.reconcile_runs(now=later)
    assert (report["resumed"], report["recovered"], report["failed"]) == (0, 0, 0)
    assert Run.objects.get(id=run_id).status == RunStatus.WAITING


# --- Retry backoff --------------------------------------------------------------------------


def test_a_step_with_a_backoff_is_retried_and_every_attempt_is_kept(api, data_dir, settings):
    settings.CHAINS_WRITABLE_DIRS = WRITABLE_DIRS
    (data_dir / "a.txt").write_text("a")
    (data_dir / "shared" / "taken").mkdir(parents=True, exist_ok=True)
    chain = make_chain(api, "backoff", [
        {"step_type": "io.copy", "params": {"path": "a.txt", "destination": "shared/taken"},
         "max_retries": 2, "retry_backoff": 1, "retry_backoff_max": 2},
    ])
    run = wait_for_run(start(api, chain), timeout=60)
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("step 1 (io.copy): IsADirectoryError")
    step = StepRun.objects.get(run=run)
    assert step.attempts == 3  # the first try and two retries
    earlier = list(step.earlier_attempts.values_list("number", "status", "ended_by"))
    assert earlier == [(1, "FAILED", "step_retried"), (2, "FAILED", "step_retried")]
