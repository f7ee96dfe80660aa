"""Workflow edge cases found in review, each reproduced without a worker: a retried parent and
its earlier child, a retried approval and its earlier request, a map whose items were all
done, a deleted child, references in an inputs schema, fixed map params, approvers who are
not staff, a skipped step delivered again, odd condition paths."""
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from chains import services
from chains.conditions import holds
from chains.errors import ChainError
from chains.models import Approval, MapItem, Run, RunStatus, StepRun
from chains.presets import StepSpec
from tests.factories import make_chain, make_run, make_user, token_client

pytestmark = pytest.mark.django_db


def execute(step: StepRun, previous):
    step.refresh_from_db()
    return services.step_execute(step_run_id=step.id, previous=previous, task_id=step.task_id)


def test_a_retried_parent_is_not_decided_by_its_earlier_child():
    make_chain("leaf", steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    parent = make_run(StepSpec("flow.chain", {"chain": "leaf"}, 0))
    step = StepRun.objects.get(run=parent)
    execute(step, 1)
    first = Run.objects.get(parent_step=step)
    services.run_end(first.id, RunStatus.FAILED, error="boom", finished_at=timezone.now())
    services.child_run_ended(run_id=first.id)
    assert Run.objects.get(id=parent.id).status == RunStatus.FAILED
    services.run_retry(run=Run.objects.get(id=parent.id))
    execute(step, 1)
    second = Run.objects.filter(parent_step=step).exclude(id=first.id).get()
    assert services.waiting_children_ended() == 0  # the earlier child is not this attempt's
    services.child_run_ended(run_id=first.id)
    assert Run.objects.get(id=parent.id).status == RunStatus.WAITING
    services.run_end(second.id, RunStatus.COMPLETED, result=7, finished_at=timezone.now())
    services.child_run_ended(run_id=second.id)
    parent.refresh_from_db()
    assert (parent.status, parent.result) == (RunStatus.COMPLETED, 7)


def test_a_retried_approval_is_not_timed_out_by_its_earlier_request():
    run = make_run(StepSpec("flow.approval", {"timeout_seconds": 60}, 0))
    step = StepRun.objects.get(run=run)
    execute(step, 5)
    services.run_cancel(run=Run.objects.get(id=run.id))
    Approval.objects.update(due_at=timezone.now() - timedelta(hours=1))  # long overdue
    services.run_retry(run=Run.objects.get(id=run.id))
    execute(step, 5)
    assert Approval.objects.count() == 2
    assert services.approvals_time_out(now=timezone.now()) == 0
    assert Run.objects.get(id=run.id).status == RunStatus.WAITING


def test_a_map_whose_items_were_all_done_completes_when_started_again():
    run = make_run(StepSpec("math.multiply", {"numbers": [2]}, 0, map=True))
    step = StepRun.objects.get(run=run)
    execute(step, [1, 2])
    MapItem.objects.update(status=RunStatus.COMPLETED, result=9)
    StepRun.objects.filter(id=step.id).update(attempts=0)
    execute(step, [1, 2])  # a redelivery, a resume or a retry
    step.refresh_from_db()
    assert (step.status, step.result) == (RunStatus.COMPLETED, [9, 9])
    assert Run.objects.get(id=run.id).status == RunStatus.COMPLETED


def test_deleting_an_open_child_fails_the_parent_that_waits_for_it():
    make_chain("leaf", steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    parent = make_run(StepSpec("flow.chain", {"chain": "leaf"}, 0))
    step = StepRun.objects.get(run=parent)
    execute(step, 1)
    services.run_delete(run=Run.objects.get(parent_step=step))
    parent.refresh_from_db()
    assert parent.status == RunStatus.FAILED
    assert parent.error.startswith("step 1 (flow.chain): child run ")
    assert parent.error.endswith(" was deleted")


def test_an_inputs_schema_refers_only_to_itself():
    steps = [StepSpec("flow.wait", {"seconds": 0}, 0)]
    for ref, reason in [("#/definitions/missing", "points at nothing in the schema"),
                        ("https://example.com/s.json", "only references inside the schema")]:
        with pytest.raises(ChainError) as caught:
            services.chain_save(name="refs", steps=steps, inputs_schema={"$ref": ref})
        assert reason in caught.value.errors["inputs_schema"][0]
    chain = services.chain_save(name="refs", steps=steps, inputs_schema={
        "$defs": {"n": {"type": "number"}}, "$ref": "#/$defs/n"})
    with pytest.raises(ChainError) as caught:
        services.run_start(chain=chain, inputs="x")
    assert caught.value.errors == {"inputs": ["'x' is not of type 'number'"]}


def test_a_retry_after_fixing_a_maps_params_runs_every_item_again():
    chain = make_chain("m", steps=[StepSpec("math.multiply", {"numbers": [2]}, 0, map=True)])
    run = services.run_start(chain=chain, inputs=[1, 2])
    step = StepRun.objects.get(run=run)
    execute(step, [1, 2])
    MapItem.objects.filter(index=0).update(status=RunStatus.COMPLETED, result=2)
    services.map_item_fail(step_run_id=step.id, index=1, error="boom")
    services.chain_save(chain=chain, name="m", steps=[
        StepSpec("math.multiply", {"numbers": [3]}, 0, map=True)])
    services.run_retry(run=Run.objects.get(id=run.id))
    assert not MapItem.objects.filter(step_run=step).exists()  # none kept from the old params


def test_an_approver_who_is_not_staff_decides_runs_of_others_in_their_group():
    owner, approver = make_user("owner"), make_user("approver")
    approver.user_permissions.add(Permission.objects.get(codename="approve_run"))
    approver.groups.add(Group.objects.create(name="release"))
    run = make_run(StepSpec("flow.approval", {"approvers_group": "release"}, 0), user=owner)
    execute(StepRun.objects.get(run=run), 1)
    other = make_run(StepSpec("math.add", {}, 0), user=owner)
    client = token_client(approver)
    assert client.get(f"/api/runs/{other.id}/").status_code == 404  # not waiting for them
    response = client.post(f"/api/runs/{run.id}/approve/", {"comment": "ok"}, format="json")
    assert response.status_code == 200, response.content
    assert Run.objects.get(id=run.id).status == RunStatus.COMPLETED


def test_a_skipped_step_delivered_again_hands_on_what_it_did():
    run = make_run(StepSpec("math.add", {"numbers": [1]}, 0,
                            when={"path": "", "op": ">", "value": 100}),
                   StepSpec("math.add", {"numbers": [1]}, 1))
    step = StepRun.objects.get(run=run, index=0)
    assert execute(step, 5) == 5
    assert execute(step, 5) == 5  # the same message again


def test_a_path_part_that_is_not_an_ascii_number_is_not_an_index():
    assert not holds({"path": "²", "op": "exists"}, [1, 2, 3])
    assert holds({"path": "-1", "op": "==", "value": 3}, [1, 2, 3])
