"""The admin for map steps, conditions, approvals, sub-chains and typed run inputs, through the
test client (no worker): the chain builder's rows, Run now, the run page, the run list, the
dashboard, Validate and the picture."""
import html
import json
import re

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from chains import services
from chains.admin.forms import inputs_error_map, inputs_form_schema, inputs_from_form
from chains.models import Approval, Chain, MapItem, Run, RunStatus, Step
from chains.presets import StepSpec
from tests.factories import make_user
from tests.helpers import unchanged

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_web(client, admin_user):
    client.force_login(admin_user)
    return client


def text_of(page: str) -> str:
    """The page's words without its tags."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def page_of(client, url, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, url
    return html.unescape(response.content.decode())


def builder_form(steps: list[dict], **fields) -> dict:
    """The chain builder's add form as a browser posts it, with the workflow fields."""
    data = {"name": "flows", "description": "", "enabled": "on", "default_inputs": "{}",
            "inputs_schema": "", "steps-TOTAL_FORMS": str(len(steps)),
            "steps-INITIAL_FORMS": "0", "steps-MIN_NUM_FORMS": "0",
            "steps-MAX_NUM_FORMS": "1000", "schedules-TOTAL_FORMS": "0",
            "schedules-INITIAL_FORMS": "0", "schedules-MIN_NUM_FORMS": "0",
            "schedules-MAX_NUM_FORMS": "1000", **fields}
    for i, step in enumerate(steps):
        row = {"position": i, "stage": i, "name": "", "step_type": "math.add", "params": "{}",
               "max_retries": "0", "time_limit": "", "queue": "", "when_0": "", "when_1": "",
               "when_2": "", "retry_backoff": "", "retry_backoff_max": "600", **step}
        data.update({f"steps-{i}-{key}": value for key, value in row.items()})
    return data


def errors_of(response) -> str:
    assert response.status_code == 200
    return html.unescape(response.content.decode())


# --- The chain builder ------------------------------------------------------------------------


def test_the_builder_saves_map_when_and_backoff_through_the_service(admin_web):
    response = admin_web.post(reverse("admin:chains_chain_add"), builder_form([
        {"params": '{"numbers": [2]}', "map": "on", "retry_backoff": "5",
         "retry_backoff_max": "60", "max_retries": "2"},
        {"step_type": "math.multiply", "params": '{"numbers": [10]}',
         "when_0": "0", "when_1": ">", "when_2": "100"},
        {"when_0": "stats.ok", "when_1": "exists"},
    ]))
    assert response.status_code == 302
    chain = Chain.objects.get(name="flows")
    assert list(chain.steps.order_by("position").values_list(
        "map", "when", "retry_backoff", "retry_backoff_max")) == [
        (True, None, 5, 60),
        (False, {"path": "0", "op": ">", "value": 100}, None, 600),
        (False, {"path": "stats.ok", "op": "exists"}, None, 600)]
    # Shown again, each row says what it holds.
    page = page_of(admin_web, reverse("admin:chains_chain_change", args=[chain.pk]))
    assert 'name="steps-0-map" class="tc-map"' in page and "checked" in page
    assert 'name="steps-1-when_0" value="0"' in page
    assert '<option value=">" selected>' in page
    assert 'name="steps-1-when_2" value="100"' in page
    assert 'name="steps-0-retry_backoff" value="5"' in page
    # The picture: a map node "× each", a condition on its node.
    assert "× each" in page and "when 0 > 100" in page and "when stats.ok exists" in page


@pytest.mark.parametrize(("steps", "where", "message"), [
    ([{"when_1": ">"}], "steps-0", "op > needs a value"),
    ([{"when_1": "in", "when_2": "3"}], "steps-0", "op in needs a list as its value"),
    ([{"when_0": "a.b"}], "steps-0", "pick an operator, or clear the path and the value"),
    ([{"when_1": "==", "when_2": "ok"}], "steps-0", 'the value is JSON: 100, "text"'),
    ([{}, {"map": "on", "stage": "0"}], "steps-1",
     "a map step is alone in its stage: give it a stage of its own"),
    ([{"retry_backoff": "99999"}], "steps-0", "must be between 1 and 3600 seconds"),
    ([{"step_type": "flow.approval", "params": '{"message": "ok?"}', "map": "on"}],
     "steps-0", "flow.approval cannot map over a list"),
    ([{}, {"step_type": "flow.approval", "stage": "0", "params": "{}"}], "steps-1",
     "a flow.approval step is alone in its stage"),
])
def test_the_builder_shows_workflow_errors_on_their_rows(admin_web, steps, where, message):
    with unchanged():
        page = errors_of(admin_web.post(reverse("admin:chains_chain_add"), builder_form(steps)))
    row = page[page.index(f'id="{where}"'):]
    row = row[:row.index("</tr>")]
    assert message in row, page[page.find("errorlist"):][:600]


def test_sub_chain_errors_show_on_the_row_not_as_a_500(admin_web, admin_user, settings):
    services.chain_save(name="leaf", steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    calls = '{"chain": "%s"}'
    with unchanged():
        page = errors_of(admin_web.post(reverse("admin:chains_chain_add"), builder_form(
            [{"step_type": "flow.chain", "params": calls % "nowhere"}])))
    assert "chain: no chain named 'nowhere'" in page
    # A cycle: "middle" calls "leaf"; making "leaf" call "middle" is refused on leaf's row.
    services.chain_save(name="middle", steps=[StepSpec("flow.chain", {"chain": "leaf"}, 0)])
    leaf = Chain.objects.get(name="leaf")
    step = leaf.steps.get()
    data = builder_form([{"step_type": "flow.chain", "params": calls % "middle"}], name="leaf")
    data.update({"steps-INITIAL_FORMS": "1", "steps-0-id": str(step.pk),
                 "steps-0-chain": str(leaf.pk)})
    with unchanged():
        page = errors_of(admin_web.post(
            reverse("admin:chains_chain_change", args=[leaf.pk]), data))
    assert "chain: a cycle: leaf calls middle calls leaf" in page
    # Too deep: top -> middle -> leaf is 2 levels below top.
    settings.CHAINS_MAX_DEPTH = 1
    with unchanged():
        page = errors_of(admin_web.post(reverse("admin:chains_chain_add"), builder_form(
            [{"step_type": "flow.chain", "params": calls % "middle"}], name="top")))
    assert "sub-chains would nest 2 deep; the limit is 1" in page


def test_the_chain_form_takes_an_inputs_schema(admin_web):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
              "required": ["n"]}
    wait = [{"step_type": "flow.wait", "params": '{"seconds": 0}'}]
    with unchanged():
        bad = errors_of(admin_web.post(reverse("admin:chains_chain_add"), builder_form(
            wait, inputs_schema='{"type": "nonsense"}')))
    assert "not a valid JSON Schema" in bad
    with unchanged():
        unfit = errors_of(admin_web.post(reverse("admin:chains_chain_add"), builder_form(
            wait, inputs_schema=json.dumps(schema), default_inputs='{"n": 0}')))
    assert "0 is less than the minimum of 1" in unfit
    response = admin_web.post(reverse("admin:chains_chain_add"), builder_form(
        wait, inputs_schema=json.dumps(schema), default_inputs='{"n": 2}'))
    assert response.status_code == 302
    assert Chain.objects.get(name="flows").inputs_schema == schema


def test_validate_reports_sub_chain_problems(admin_web):
    leaf = services.chain_save(name="leaf", steps=[StepSpec("math.add", {}, 0)])
    top = services.chain_save(name="top", steps=[StepSpec("flow.chain", {"chain": "leaf"}, 0)])
    ok = page_of(admin_web, reverse("admin:chains_chain_change", args=[top.pk]))
    assert "tc-kind-subchain" in ok
    # The sub-chain node links to the chain it runs.
    assert f'<a href="{reverse("admin:chains_chain_change", args=[leaf.pk])}"' in ok
    services.chain_delete(chain=leaf)
    page = html.unescape(admin_web.post(reverse("admin:chains_chain_validate", args=[top.pk]),
                                        follow=True).content.decode())
    assert "Problem: steps.0.params.chain: no chain named 'leaf'" in page
    assert "The chain is valid" not in page


# --- Run now ----------------------------------------------------------------------------------


OBJECT_SCHEMA = {"type": "object", "required": ["count"], "properties": {
    "count": {"type": "integer", "minimum": 1, "description": "How many."},
    "label": {"type": "string"}}}


def test_run_now_is_a_form_made_from_the_inputs_schema(admin_web):
    chain = services.chain_save(name="typed", inputs_schema=OBJECT_SCHEMA,
                                steps=[StepSpec("flow.wait", {"seconds": 0}, 0)])
    url = reverse("admin:chains_chain_run", args=[chain.pk])
    page = page_of(admin_web, url)
    assert 'data-django-jsonform="' in page and 'id="id_inputs"' in page
    assert '"help_text": "How many."' in page  # the schema's description is the field's help
    assert "django_jsonform/react-json-form.js" in page
    with unchanged():
        refused = errors_of(admin_web.post(url, {"inputs": '{"count": 0, "label": ""}'}))
    assert "inputs.count: 0 is less than the minimum of 1" in refused
    assert '"errorMap": {"count": ["0 is less than the minimum of 1"]}' in refused
    with unchanged():
        missing = errors_of(admin_web.post(url, {"inputs": '{"count": null, "label": "x"}'}))
    assert "inputs: 'count' is a required property" in missing
    started = admin_web.post(url, {"inputs": '{"count": 3, "label": ""}'})
    run = Run.objects.get()
    assert started.status_code == 302 and run.inputs == {"count": 3}  # empty fields: not given


def test_run_now_wraps_a_schema_that_is_not_an_object(admin_web):
    chain = services.chain_save(name="number", inputs_schema={"type": "number", "minimum": 0},
                                steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    url = reverse("admin:chains_chain_run", args=[chain.pk])
    assert "data-django-jsonform" in page_of(admin_web, url)
    with unchanged():
        refused = errors_of(admin_web.post(url, {"inputs": '{"inputs": -1}'}))
    assert "inputs: -1 is less than the minimum of 0" in refused
    assert '"errorMap": {"inputs": ["-1 is less than the minimum of 0"]}' in refused
    assert admin_web.post(url, {"inputs": '{"inputs": 4}'}).status_code == 302
    assert Run.objects.get().inputs == 4


def test_run_now_keeps_the_json_box_for_a_schema_the_form_cannot_draw(admin_web):
    schema = {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]}
    chain = services.chain_save(name="either", inputs_schema=schema,
                                steps=[StepSpec("math.add", {}, 0)])
    url = reverse("admin:chains_chain_run", args=[chain.pk])
    page = page_of(admin_web, url)
    assert "data-django-jsonform" not in page and '<textarea id="id_inputs"' in page
    assert "The chain's inputs schema" in page and '"anyOf"' in page
    with unchanged():
        refused = errors_of(admin_web.post(url, {"inputs": '"x"'}))
    assert "inputs: 'x' is not valid under any of the given schemas" in refused
    assert admin_web.post(url, {"inputs": "[1, 2]"}).status_code == 302


def test_inputs_form_schema_and_its_inverse():
    assert inputs_form_schema(None) is None
    assert inputs_form_schema({"type": "object"}) is None  # no properties to draw
    assert inputs_form_schema({"type": ["string", "number"]}) is None
    schema, wrapped = inputs_form_schema(OBJECT_SCHEMA)
    assert not wrapped and schema["keys"]["count"] == {
        "type": "integer", "minimum": 1, "help_text": "How many."}
    assert schema["required"] == ["count"]
    schema, wrapped = inputs_form_schema({"type": ["integer", "null"], "title": "N"})
    assert wrapped and schema["keys"]["inputs"] == {"type": "integer", "title": "N"}
    rows, wrapped = inputs_form_schema({"type": "array", "items": {"type": "number"}})
    assert not wrapped and rows["items"] == {"type": "number"}
    assert inputs_from_form({"a": "", "b": None, "c": 0, "d": {"e": ""}}, wrapped=False) == {
        "c": 0, "d": {}}
    assert inputs_from_form({"inputs": 0}, wrapped=True) == 0
    assert inputs_error_map({"inputs.rows.0": ["bad"], "inputs": ["whole"], "chain": ["x"]},
                            wrapped=False) == {"rows§0": ["bad"]}
    assert inputs_error_map({"inputs": ["bad"]}, wrapped=True) == {"inputs": ["bad"]}


# --- The run page -----------------------------------------------------------------------------


def map_run(n: int, admin_user):
    chain = services.chain_save(name="mapped", steps=[
        StepSpec("math.multiply", {"numbers": [2]}, 0, map=True),
        StepSpec("math.add", {}, 1)])
    run = services.run_start(chain=chain, inputs=list(range(n)), user=admin_user)
    step = run.step_runs.get(index=0)
    services.step_execute(step_run_id=step.id, previous=list(range(n)))  # the items are made
    return run, step


def test_a_map_step_shows_its_items_counts_and_failures(admin_web, admin_user):
    run, step = map_run(30, admin_user)
    for item in MapItem.objects.filter(step_run=step, index__lt=5):
        services.map_item_execute(step_run_id=step.id, index=item.index, value=item.index,
                                  task_id=item.task_id)
    url = reverse("admin:chains_run_panel", args=[run.pk])
    panel = page_of(admin_web, url)
    assert "30 items" in panel
    assert "5 done · 0 failed · 0 running · 25 pending" in text_of(panel)
    assert "× 30" in panel  # the picture's map node, once its items are known
    assert panel.count('class="tc-step-row"') == 2  # the step once, not 30 rows
    services.map_item_fail(step_run_id=step.id, index=7, error="ValueError: seven")
    panel = page_of(admin_web, url)
    assert "5 done · 1 failed · 0 running · 0 pending · 24 cancelled" in text_of(panel)
    assert "<td>7</td><td class=\"tc-error\">ValueError: seven</td>" in panel
    assert "item 7: ValueError: seven" in panel  # the step's error names the item


def test_a_map_step_lists_at_most_20_failed_items(admin_web, admin_user):
    run, step = map_run(50, admin_user)
    # 26 failed items (rows set directly: the service fails the step at the first one).
    MapItem.objects.filter(step_run=step, index__gte=24).update(status=RunStatus.FAILED,
                                                                 error="boom")
    panel = page_of(admin_web, reverse("admin:chains_run_panel", args=[run.pk]))
    listed = panel[panel.index('class="tc-failed-items"'):]
    listed = listed[:listed.index("</table>")]
    assert listed.count("<tr>") == 21  # the header and 20 items
    assert "<td>24</td>" in listed and "<td>43</td>" in listed and "<td>44</td>" not in listed
    assert "and 6 more failed items" in panel


def approval_run(admin_user, **params):
    chain = services.chain_save(name="gated", steps=[
        StepSpec("math.add", {"numbers": [1]}, 0),
        StepSpec("flow.approval", {"message": "Ship the numbers?", **params}, 1),
        StepSpec("math.add", {"numbers": [1]}, 2)])
    run = services.run_start(chain=chain, inputs=1, user=admin_user)
    first, gate = run.step_runs.get(index=0), run.step_runs.get(index=1)
    services.step_execute(step_run_id=first.id, previous=1)
    services.step_execute(step_run_id=gate.id, previous=2)
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    return run


def test_approve_from_the_run_page(admin_web, admin_user):
    run = approval_run(admin_user)
    url = reverse("admin:chains_run_change", args=[run.pk])
    page = page_of(admin_web, url)
    assert 'id="tc-run-status">WAITING' in page and "tc-status-waiting" in page
    assert "Ship the numbers?" in page and "due " in page
    assert 'id="tc-approve"' in page and 'id="tc-reject"' in page
    assert 'data-finished="0"' in page  # WAITING is not finished: the panel keeps refreshing
    response = admin_web.post(reverse("admin:chains_run_approve", args=[run.pk]),
                              {"comment": "looks right"}, follow=True)
    page = html.unescape(response.content.decode())
    assert "Approved: the run goes on." in page
    approval = Approval.objects.get()
    assert (approval.decision, approval.decided_by, approval.comment) == (
        "approved", admin_user, "looks right")
    assert "Approved</span> by <strong>root</strong> at " in page
    assert "<q class=\"tc-comment\">looks right</q>" in page
    assert 'id="tc-approve"' not in page
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.steps_done == 2
    # A second decision is a 409 from the service, shown as a message; nothing changes.
    with unchanged(Approval, Run):
        again = admin_web.post(reverse("admin:chains_run_reject", args=[run.pk]),
                               {"comment": "no"}, follow=True)
    assert "Not decided: already decided: approved by root." in html.unescape(
        again.content.decode())


def test_reject_from_the_run_page(admin_web, admin_user):
    run = approval_run(admin_user)
    response = admin_web.post(reverse("admin:chains_run_reject", args=[run.pk]),
                              {"comment": "not today"}, follow=True)
    page = html.unescape(response.content.decode())
    assert "Rejected: the run is FAILED." in page
    assert "rejected by root: not today" in page
    run.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.FAILED, "rejected by root: not today")


def test_only_who_may_decide_sees_the_buttons_and_a_403_is_a_message(client, admin_user):
    run = approval_run(admin_user, approvers_group="finance")
    viewer = make_user("viewer", view_only=True)
    approver = make_user("approver", staff=True)
    approver.user_permissions.add(Permission.objects.get(codename="approve_run"),
                                  Permission.objects.get(codename="view_run"))
    url = reverse("admin:chains_run_change", args=[run.pk])
    for user in (viewer, approver):  # the approver is not in the group yet
        client.force_login(user)
        page = page_of(client, url)
        assert "Ship the numbers?" in page and 'id="tc-approve"' not in page
        assert "membership of the group finance" in page
        with unchanged(Approval, Run):
            response = client.post(reverse("admin:chains_run_approve", args=[run.pk]),
                                   follow=True)
        said = html.unescape(response.content.decode())
        assert "Not allowed: deciding needs the chains.approve_run permission" in said
        assert ("in group 'finance'." in said) is (user == approver)
    approver.groups.add(Group.objects.create(name="finance"))
    page = page_of(client, url)
    assert 'id="tc-approve"' in page
    client.post(reverse("admin:chains_run_approve", args=[run.pk]))
    assert Approval.objects.get().decided_by == approver


def test_parent_and_child_runs_link_to_each_other(admin_web, admin_user):
    services.chain_save(name="child", steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    parent_chain = services.chain_save(name="parent", steps=[
        StepSpec("flow.chain", {"chain": "child"}, 0), StepSpec("math.add", {}, 1)])
    run = services.run_start(chain=parent_chain, inputs=1, user=admin_user)
    calling = run.step_runs.get(index=0)
    services.step_execute(step_run_id=calling.id, previous=1)
    child = Run.objects.get(parent_step=calling)
    page = page_of(admin_web, reverse("admin:chains_run_change", args=[run.pk]))
    child_url = reverse("admin:chains_run_change", args=[child.pk])
    assert f'<a href="{child_url}" class="tc-child-run">{str(child.pk)[:8]} (child)</a>' in page
    assert f'<a href="{child_url}" class="tc-node-link">' in page  # the picture's node too
    page = page_of(admin_web, child_url)
    parent_url = reverse("admin:chains_run_change", args=[run.pk])
    assert (f'Child run of <a href="{parent_url}" id="tc-parent-link">run {str(run.pk)[:8]} '
            "(parent)</a>, started by its step 1 (flow.chain)") in page


def test_a_skipped_step_shows_as_skipped(admin_web, admin_user):
    chain = services.chain_save(name="conditional", steps=[
        StepSpec("math.add", {"numbers": [5]}, 0),
        StepSpec("math.multiply", {"numbers": [10]}, 1, when={"path": "", "op": ">",
                                                               "value": 100}),
        StepSpec("math.add", {"numbers": [1]}, 2)])
    run = services.run_start(chain=chain, inputs=0, user=admin_user)
    services.step_execute(step_run_id=run.step_runs.get(index=0).id, previous=0)
    services.step_execute(step_run_id=run.step_runs.get(index=1).id, previous=5)
    page = page_of(admin_web, reverse("admin:chains_run_panel", args=[run.pk]))
    assert '<span class="tc-status tc-status-skipped">SKIPPED</span>' in page
    assert "skipped: its condition was false; passed on <code>5</code>" in page
    assert "tc-node-skipped" in page and "when input > 100" in page
    assert "stage 1: 1/1" in page  # a skipped step is done with


def test_the_run_list_and_dashboard_know_waiting(admin_web, admin_user):
    waiting = approval_run(admin_user)
    services.run_submit_task(task_type="math_chain", config={"operation": "add",
                                                             "numbers": [1]})
    runs = page_of(admin_web, reverse("admin:chains_run_changelist"))
    assert "?status__exact=WAITING" in runs and "?status__exact=SKIPPED" not in runs
    listed = admin_web.get(reverse("admin:chains_run_changelist"), {"status__exact": "WAITING"})
    assert [r.pk for r in listed.context["cl"].result_list] == [waiting.pk]
    dashboard = page_of(admin_web, reverse("admin:chains_dashboard"))
    assert 'tc-status-waiting">Waiting</span> <strong>1</strong>' in dashboard
    assert "Waiting for a decision" in dashboard and "Ship the numbers?" in dashboard


def test_the_cancel_action_cancels_a_waiting_run(admin_web, admin_user):
    run = approval_run(admin_user)
    admin_web.post(reverse("admin:chains_run_changelist"), {
        "action": "cancel_selected_runs", "_selected_action": [str(run.pk)]})
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


# --- The picture preview ----------------------------------------------------------------------


def test_the_picture_preview_draws_workflow_steps(admin_web):
    leaf = services.chain_save(name="leaf", steps=[StepSpec("math.add", {}, 0)])
    rows = [{"stage": 0, "label": "", "type": "math.add", "map": True, "when": None},
            {"stage": 1, "label": "gate", "type": "flow.approval", "map": False,
             "when": {"path": "0", "op": "<", "value": 3}},
            {"stage": 2, "label": "", "type": "flow.chain", "chain": "leaf"},
            {"stage": 3, "label": "", "type": "flow.chain", "chain": "nowhere"},
            {"stage": 4, "label": "x", "type": "math.add", "when": {"op": "?"}}]
    svg = page_of(admin_web, reverse("admin:chains_chain_picture"), steps=json.dumps(rows))
    assert svg.count('class="tc-node ') == 5
    assert "× each" in svg and 'data-kind="map"' in svg
    assert "<polygon" in svg and "2. gate" in svg and "when 0 < 3" in svg
    assert "3. run leaf" in svg
    assert svg.count('class="tc-node-link"') == 1  # only a chain that exists is a link
    assert f'href="{reverse("admin:chains_chain_change", args=[leaf.pk])}"' in svg
    assert "when … (not valid yet)" in svg
    for bad in ('[{"stage": 1e999}]', '[{"stage": -1}]', '{"stage": 1}', "[3]"):
        assert admin_web.get(reverse("admin:chains_chain_picture"),
                             {"steps": bad}).status_code == 400, bad


def test_step_rows_keep_their_order_with_the_workflow_fields(admin_web):
    """The builder's hidden fields and the second line do not disturb positions."""
    admin_web.post(reverse("admin:chains_chain_add"), builder_form([
        {"position": "1", "params": '{"numbers": [1]}'},
        {"position": "0", "step_type": "math.multiply", "params": '{"numbers": [2]}',
         "stage": "0", "map": ""}]))
    assert list(Step.objects.order_by("position").values_list("step_type", flat=True)) == [
        "math.multiply", "math.add"]


def test_the_run_page_cuts_long_inputs(admin_web, admin_user):
    run, _ = map_run(10_000, admin_user)
    page = page_of(admin_web, reverse("admin:chains_run_change", args=[run.pk]))
    text = json.dumps(list(range(10_000)))
    assert text[:2000] + "…" in page and text not in page
    assert f"(10,000 items, {len(text):,} characters; all of them: " in page
    assert f'<a href="/api/runs/{run.pk}/">the API</a>' in page
    short = approval_run(admin_user)
    assert '<div class="readonly">1</div>' in page_of(
        admin_web, reverse("admin:chains_run_change", args=[short.pk]))
