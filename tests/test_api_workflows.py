"""The workflow parts of the API and the commands, without a worker: approvals (approve and
reject, 403/404/409), parent and child runs, map steps with their items paged, WAITING in the
filters and the seed endpoints, the seed task types with their config schemas, approve_run,
list_runs, chain_stats and run_chain's inputs-schema errors. Runs are driven through the
worker-side services (services.step_execute), as a worker would."""
import json
import uuid

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chains import services
from chains.models import Approval, MapItem, Run, RunStatus, StepRun
from chains.presets import StepSpec
from tests.factories import make_chain, make_run, make_user, token_client
from tests.helpers import unchanged

pytestmark = pytest.mark.django_db

APPROVAL = StepSpec("flow.approval", {"message": "ship it?", "timeout_seconds": 3600}, 0)
AFTER = StepSpec("math.add", {"numbers": [1]}, 1)


def approver(username: str = "carol", *, group: str = "", staff: bool = True):
    """Staff (who see every run) with chains.approve_run and nothing else (and in `group`)."""
    user = make_user(username, staff=staff)
    user.user_permissions.add(Permission.objects.get(codename="approve_run"))
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def execute(step_run: StepRun, previous, **kwargs):
    """What a worker does with the step's message."""
    return services.step_execute(step_run_id=step_run.id, previous=previous,
                                 task_id=step_run.task_id, worker="w1@host", **kwargs)


def waiting_run(user, *, previous=5, approval: StepSpec = APPROVAL, then=(AFTER,)) -> Run:
    """A run whose approval step (its first) was delivered: the run is WAITING."""
    run = make_run(approval, *then, user=user)
    execute(run.step_runs.get(index=0), previous, finish_run=not then)
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    return run


# --- approve / reject ------------------------------------------------------------------------


def test_approve_goes_on_and_keeps_who_decided(user):
    run = waiting_run(user)
    carol = approver()
    response = token_client(carol).post(f"/api/runs/{run.id}/approve/",
                                        {"comment": "looks right"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == RunStatus.RUNNING and body["steps_done"] == 1
    step = body["steps"][0]
    assert (step["status"], step["result"]) == (RunStatus.COMPLETED, 5)  # its input, passed on
    (decided,) = step["approvals"]
    assert decided["message"] == "ship it?"
    assert (decided["decision"], decided["decided_by"], decided["comment"]) == (
        "approved", "carol", "looks right")
    assert decided["decided_at"] is not None and decided["due_at"] is not None
    assert body["steps"][1]["approvals"] is None  # not an approval step


def test_reject_fails_the_run_naming_who_and_why(user):
    run = waiting_run(user)
    response = token_client(approver()).post(f"/api/runs/{run.id}/reject/",
                                             {"comment": "not today"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["error"]) == (RunStatus.FAILED, "rejected by carol: not today")
    assert body["steps"][0]["approvals"][0]["decision"] == "rejected"
    assert Approval.objects.get().decided_by.username == "carol"


def test_a_decision_without_a_body_has_no_comment(user):
    run = waiting_run(user)
    response = token_client(approver()).post(f"/api/runs/{run.id}/reject/")
    assert response.status_code == 200, response.content
    assert response.json()["error"] == "rejected by carol"


def test_a_second_decision_is_409_naming_the_first(user):
    run = waiting_run(user)
    carol = token_client(approver())
    assert carol.post(f"/api/runs/{run.id}/approve/").status_code == 200
    dave = token_client(approver("dave"))
    with unchanged(Run, StepRun, Approval):
        for action in ("approve", "reject"):
            response = dave.post(f"/api/runs/{run.id}/{action}/", {"comment": "late"},
                                 format="json")
            assert response.status_code == 409
            assert response.json() == {"status": ["already decided: approved by carol"]}


def test_a_run_that_waits_for_no_approval_is_409(user):
    run = make_run(AFTER, user=user)
    with unchanged(Run, StepRun):
        response = token_client(approver()).post(f"/api/runs/{run.id}/approve/")
    assert response.status_code == 409
    assert response.json() == {"status": ["run is PENDING and has no approval to decide"]}


def test_deciding_on_a_cancelled_run_is_409_naming_the_steps_status(user):
    run = waiting_run(user)
    services.run_cancel(run=run)
    with unchanged(Run, StepRun, Approval):
        response = token_client(approver()).post(f"/api/runs/{run.id}/approve/")
    assert response.status_code == 409
    assert response.json() == {"status": ["the approval step is CANCELLED"]}


def test_deciding_needs_the_permission(user, api):
    run = waiting_run(user)
    with unchanged(Run, StepRun, Approval):
        mine = api.post(f"/api/runs/{run.id}/approve/")  # its owner, without approve_run
        viewer = token_client(make_user("viewer", view_only=True)).post(
            f"/api/runs/{run.id}/reject/")
    assert mine.status_code == 403 and viewer.status_code == 403
    assert Run.objects.get(id=run.id).status == RunStatus.WAITING


def test_an_approvals_group_limits_who_decides(user):
    run = waiting_run(user, approval=StepSpec("flow.approval", {"approvers_group": "ops"}, 0))
    with unchanged(Run, StepRun, Approval):
        outsider = token_client(approver("erin")).post(f"/api/runs/{run.id}/approve/")
    assert outsider.status_code == 403
    assert "ops" in outsider.json()["detail"]
    member = token_client(approver("frank", group="ops")).post(f"/api/runs/{run.id}/approve/")
    assert member.status_code == 200, member.content
    assert member.json()["steps"][0]["approvals"][0]["decided_by"] == "frank"


def test_runs_the_user_cannot_see_are_404(user):
    run = waiting_run(user)
    # Not staff and no chains.approve_run: sees their own runs alone.
    stranger = token_client(make_user("grace"))
    with unchanged(Run, StepRun, Approval):
        for action in ("approve", "reject"):
            assert stranger.post(f"/api/runs/{run.id}/{action}/").status_code == 404
        assert token_client(approver()).post(
            f"/api/runs/{uuid.uuid4()}/approve/").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"comment": "x", "force": True}, "force"),
    ({"comment": "x" * 2001}, "comment"),
    ({"comment": ["x"]}, "comment"),
])
def test_a_bad_decision_body_is_400_naming_the_field(user, body, field):
    run = waiting_run(user)
    with unchanged(Run, StepRun, Approval):
        response = token_client(approver()).post(f"/api/runs/{run.id}/approve/", body,
                                                 format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_the_runs_owner_with_the_permission_decides_their_own_run():
    owner = approver("heidi", staff=False)
    run = waiting_run(owner)
    response = token_client(owner).post(f"/api/runs/{run.id}/approve/")
    assert response.status_code == 200 and response.json()["status"] == RunStatus.RUNNING


# --- the run detail and list --------------------------------------------------------------------


def test_parent_and_child_runs_link_each_other(user, api):
    make_chain("child", user=user)
    parent = make_run(StepSpec("flow.chain", {"chain": "child"}, 0), user=user)
    execute(parent.step_runs.get(), 7, finish_run=True)
    child = Run.objects.get(parent_step__run=parent)
    detail = api.get(f"/api/runs/{parent.id}/").json()
    assert (detail["status"], detail["parent_run"], detail["depth"]) == (
        RunStatus.WAITING, None, 0)
    assert detail["child_runs"] == [str(child.id)]
    child_detail = api.get(f"/api/runs/{child.id}/").json()
    assert (child_detail["parent_run"], child_detail["depth"], child_detail["child_runs"]) == (
        str(parent.id), 1, [])
    assert child_detail["inputs"] == 7 and child_detail["trigger"] == "parent"
    listed = {r["id"]: r for r in api.get("/api/runs/").json()["results"]}
    assert listed[str(child.id)]["parent_run"] == str(parent.id)
    assert listed[str(parent.id)]["parent_run"] is None
    assert "child_runs" not in listed[str(parent.id)]  # the detail's alone


def test_a_cancelled_parent_answers_with_its_links(user, api):
    make_chain("child", user=user)
    parent = make_run(StepSpec("flow.chain", {"chain": "child"}, 0), user=user)
    execute(parent.step_runs.get(), 1, finish_run=True)
    response = api.post(f"/api/runs/{parent.id}/cancel/")
    assert response.status_code == 200
    (child_id,) = response.json()["child_runs"]
    child = api.get(f"/api/runs/{child_id}/").json()
    assert child["status"] == RunStatus.CANCELLED and child["parent_run"] == str(parent.id)


def map_run(user, values, *, done: int = 0, fail: int | None = None) -> Run:
    """A run whose map step (math.multiply by 2, its first) started over `values`; the first
    `done` items completed and item `fail` failed."""
    run = make_run(StepSpec("math.multiply", {"numbers": [2]}, 0, map=True),
                   StepSpec("math.add", {}, 1), user=user)
    step_run = run.step_runs.get(index=0)
    execute(step_run, values)
    for index in range(done):
        item = MapItem.objects.get(step_run=step_run, index=index)
        services.map_item_execute(step_run_id=step_run.id, index=index, value=values[index],
                                  task_id=item.task_id, worker="w1@host")
    if fail is not None:
        services.map_item_fail(step_run_id=step_run.id, index=fail, error="boom")
    return run


def test_a_map_step_shows_its_items_counted_by_status(user, api):
    run = map_run(user, [1, 2, 3, 4, 5], done=2)
    detail = api.get(f"/api/runs/{run.id}/").json()
    step, after = detail["steps"]
    assert (step["map"], step["items_total"], step["items_done"]) == (True, 5, 2)
    assert step["items"] == {"PENDING": 3, "RUNNING": 0, "COMPLETED": 2, "FAILED": 0,
                             "CANCELLED": 0}
    assert (after["map"], after["items"], after["items_total"]) == (False, None, None)


def test_steps_show_their_condition_and_backoff(user, api):
    run = make_run(StepSpec("math.add", {"numbers": [1]}, 0, retry_backoff=3,
                            retry_backoff_max=60, max_retries=2),
                   StepSpec("math.add", {"numbers": [1]}, 1,
                            when={"path": "", "op": ">", "value": 100}), user=user)
    first, second = api.get(f"/api/runs/{run.id}/").json()["steps"]
    assert (first["retry_backoff"], first["retry_backoff_max"], first["when"]) == (3, 60, None)
    assert second["when"] == {"path": "", "op": ">", "value": 100}
    assert second["retry_backoff"] is None and second["retry_backoff_max"] == 600


def test_the_detail_takes_the_same_queries_however_many_steps_items_and_approvals(user, api):
    def queries(run: Run) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get(f"/api/runs/{run.id}/").status_code == 200
        return len(captured)

    def run_of(maps: int, items: int) -> Run:
        """`maps` map steps and as many approval steps (each with a request), the first map
        started over `items` items, every seventh done."""
        specs = [StepSpec("math.multiply", {"numbers": [2]}, 0, map=True)]
        for stage in range(1, 2 * maps):
            specs.append(StepSpec("math.multiply", {"numbers": [2]}, stage, map=True)
                         if stage % 2 == 0 else StepSpec("flow.approval", {}, stage))
        run = make_run(*specs, user=user)
        first = run.step_runs.get(index=0)
        execute(first, list(range(items)))
        for item in MapItem.objects.filter(step_run=first, index__in=range(0, items, 7)):
            services.map_item_execute(step_run_id=first.id, index=item.index, value=item.index,
                                      task_id=item.task_id)
        for step_run in run.step_runs.filter(step_type="flow.approval"):
            Approval.objects.create(step_run=step_run, task_id=step_run.task_id, message="m",
                                    due_at="2030-01-01T00:00:00Z")
        return run

    small, big = run_of(1, 1), run_of(4, 300)
    detail = api.get(f"/api/runs/{big.id}/").json()
    assert detail["steps"][0]["items"]["COMPLETED"] == 43
    assert [len(s["approvals"] or []) for s in detail["steps"]] == [0, 1] * 4
    # the token, the run, its steps, their attempts, approvals and item counts, its children
    assert queries(big) == queries(small) == 7


def test_the_list_filters_waiting_runs(user, api):
    waiting = waiting_run(user)
    make_run(AFTER, user=user)
    listed = api.get("/api/runs/?status=WAITING").json()
    assert [r["id"] for r in listed["results"]] == [str(waiting.id)]
    assert listed["results"][0]["depth"] == 0
    response = api.get("/api/runs/?status=SKIPPED")  # a step's status, never a run's
    assert response.status_code == 400 and "status" in response.json()


def test_the_seed_endpoints_report_waiting_as_running(user, api):
    run = waiting_run(user)
    assert api.get(f"/tasks/{run.id}/status").json()["status"] == "RUNNING"
    result = api.get(f"/tasks/{run.id}/result")
    assert result.status_code == 409 and result.json()["status"] == "RUNNING"
    assert [t["task_id"] for t in api.get("/tasks?status=RUNNING").json()] == [str(run.id)]
    assert api.get("/tasks?status=WAITING").status_code == 400
    stats = api.get("/tasks/statistics").json()
    assert stats["running_tasks"] == 1 and "waiting_tasks" not in stats


# --- a map step's items ---------------------------------------------------------------------------


def test_items_are_paged_in_index_order(user, api, settings):
    settings.CHAINS_MAX_PAGE_SIZE = 4
    run = map_run(user, list(range(10)), done=3)
    page = api.get(f"/api/runs/{run.id}/steps/0/items/?limit=50").json()
    assert page["count"] == 10 and page["next"] is not None
    assert [item["index"] for item in page["results"]] == [0, 1, 2, 3]  # capped at 4
    first = page["results"][0]
    assert set(first) == {"index", "status", "result", "error", "attempts", "worker",
                          "started_at", "finished_at"}
    assert (first["status"], first["result"], first["worker"]) == (
        RunStatus.COMPLETED, 0, "w1@host")
    last = api.get(f"/api/runs/{run.id}/steps/0/items/?offset=8").json()
    assert [item["index"] for item in last["results"]] == [8, 9] and last["next"] is None
    assert last["results"][0]["status"] == RunStatus.PENDING


def test_items_filter_by_status(user, api):
    run = map_run(user, [10, 20, 30, 40], done=2, fail=3)
    done = api.get(f"/api/runs/{run.id}/steps/0/items/?status=COMPLETED").json()
    assert [(i["index"], i["result"]) for i in done["results"]] == [(0, 20), (1, 40)]
    failed = api.get(f"/api/runs/{run.id}/steps/0/items/?status=FAILED").json()
    assert [(i["index"], i["error"]) for i in failed["results"]] == [(3, "boom")]
    assert api.get(f"/api/runs/{run.id}/").json()["error"].endswith("item 3: boom")
    bad = api.get(f"/api/runs/{run.id}/steps/0/items/?status=SKIPPED")
    assert bad.status_code == 400 and "status" in bad.json()


def test_items_of_a_step_that_is_not_a_map_step_are_404(user, api, other_api):
    run = map_run(user, [1, 2])
    response = api.get(f"/api/runs/{run.id}/steps/1/items/")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("step 2 (math.add, index 1) is not a map step")
    assert api.get(f"/api/runs/{run.id}/steps/7/items/").status_code == 404
    assert other_api.get(f"/api/runs/{run.id}/steps/0/items/").status_code == 404


def test_a_map_step_not_started_has_no_items_yet(user, api):
    run = make_run(StepSpec("math.multiply", {"numbers": [2]}, 0, map=True), user=user)
    page = api.get(f"/api/runs/{run.id}/steps/0/items/").json()
    assert (page["count"], page["results"]) == (0, [])
    step = api.get(f"/api/runs/{run.id}/").json()["steps"][0]
    assert step["items_total"] is None and step["items"]["PENDING"] == 0


# --- seed task types ----------------------------------------------------------------------------


def test_task_types_list_the_seed_presets_with_their_config_schemas(api):
    rows = api.get("/api/task-types/").json()
    assert [r["key"] for r in rows] == ["math_chain", "data_chain", "io_chain"]
    math = api.get("/api/task-types/math_chain/").json()
    schema = math["config_schema"]
    assert schema["required"] == ["operation", "numbers"]
    assert schema["properties"]["iterations"]["maximum"] == 100
    assert schema["additionalProperties"] is False and math["description"]
    io = api.get("/api/task-types/io_chain/").json()["config_schema"]
    assert "compress" in io["properties"]["file_operations"]["items"]["enum"]
    assert api.get("/api/task-types/shell/").status_code == 404


def test_the_schema_documents_the_new_endpoints(api):
    paths = api.get("/api/schema/?format=json").json()["paths"]
    for path in ("/api/runs/{id}/approve/", "/api/runs/{id}/reject/",
                 "/api/runs/{id}/steps/{index}/items/", "/api/task-types/"):
        assert path in paths, path
    approve = paths["/api/runs/{id}/approve/"]["post"]
    assert {"200", "403", "409"} <= set(approve["responses"])
    items = paths["/api/runs/{id}/steps/{index}/items/"]["get"]
    assert {p["name"] for p in items["parameters"]} >= {"limit", "offset", "status"}


# --- commands -----------------------------------------------------------------------------------


def test_approve_run_approves_as_the_first_superuser(user, capsys):
    make_user("root", superuser=True)
    run = waiting_run(user)
    call_command("approve_run", str(run.id), "--comment", "ok")
    assert capsys.readouterr().out.strip() == f"run {run.id} approved by root: now RUNNING"
    approval = Approval.objects.get()
    assert (approval.decision, approval.decided_by.username, approval.comment) == (
        "approved", "root", "ok")


def test_approve_run_rejects_as_the_named_user(user, capsys):
    approver("ivan")
    run = waiting_run(user)
    call_command("approve_run", str(run.id), "--reject", "--user", "ivan", "--comment", "no")
    out = capsys.readouterr().out.strip()
    assert out == f"run {run.id} rejected by ivan: now FAILED (rejected by ivan: no)"


def test_approve_run_exits_1_with_the_reason(user):
    run = waiting_run(user)
    make_user("nobody-special")
    with unchanged(Run, StepRun, Approval), pytest.raises(
            CommandError, match="nobody-special may not decide") as refused:
        call_command("approve_run", str(run.id), "--user", "nobody-special")
    assert refused.value.returncode == 1
    with pytest.raises(CommandError, match="no active superuser"):
        call_command("approve_run", str(run.id))
    approver("judy")
    call_command("approve_run", str(run.id), "--user", "judy")
    with pytest.raises(CommandError, match="status: already decided: approved by judy"):
        call_command("approve_run", str(run.id), "--user", "judy", "--reject")
    with pytest.raises(CommandError, match="no run"):
        call_command("approve_run", str(uuid.uuid4()), "--user", "judy")
    with pytest.raises(CommandError, match="is not a run id"):
        call_command("approve_run", "nope", "--user", "judy")
    with pytest.raises(CommandError, match="no user named 'kim'"):
        call_command("approve_run", str(run.id), "--user", "kim")


def test_list_runs_and_chain_stats_know_waiting_runs(user, capsys):
    waiting = waiting_run(user)
    make_run(AFTER, user=user)
    call_command("list_runs", "--status", "WAITING", "--json")
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [str(waiting.id)]
    call_command("list_runs", "--status", "WAITING")
    header, row = capsys.readouterr().out.splitlines()
    assert row.startswith(f"{waiting.id}  WAITING ")
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("list_runs", "--status", "SKIPPED")
    call_command("chain_stats", "--json")
    counts = json.loads(capsys.readouterr().out)["runs"]
    assert (counts["waiting"], counts["pending"], counts["total"]) == (1, 1, 2)
    call_command("chain_stats")
    assert "waiting=1" in capsys.readouterr().out.split()


def test_chain_stats_names_a_seed_task_types_row(user, capsys):
    run = services.run_submit_task(task_type="math_chain", user=user,
                                   config={"operation": "add", "numbers": [1]})
    services.run_finish(run_id=run.id, result=1)
    call_command("chain_stats")
    assert "task type math_chain: 1 finished, 100% completed" in capsys.readouterr().out
    call_command("chain_stats", "--json")
    (row,) = json.loads(capsys.readouterr().out)["chains"]
    assert (row["chain"], row["task_type"], row["finished_runs"]) == (None, "math_chain", 1)


def test_run_chain_prints_each_inputs_schema_error_on_its_line():
    schema = {"type": "object", "required": ["count"],
              "properties": {"count": {"type": "number", "minimum": 0},
                             "name": {"type": "string"}}}
    make_chain("typed", inputs_schema=schema)
    with pytest.raises(CommandError) as refused:
        call_command("run_chain", "typed", "--input", '{"count": -1, "name": 3}')
    assert refused.value.returncode == 1
    lines = str(refused.value).splitlines()
    assert len(lines) == 2, lines
    assert {line.split(":")[0] for line in lines} == {"inputs.count", "inputs.name"}
    assert all(len(line.split(": ", 1)[1]) > 3 for line in lines)  # each with its reason
    assert not Run.objects.exists()
