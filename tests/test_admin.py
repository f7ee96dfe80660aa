"""Admin pages and actions, through the test client (no worker)."""
import html
import json

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django_celery_results.models import TaskResult

from chains import services
from chains.admin import start_chains
from chains.models import Chain, Run, RunTrigger, Step
from chains.presets import StepSpec
from tests.factories import make_user
from tests.helpers import unchanged

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(admin_user):
    return services.chain_save(name="demo", user=admin_user, steps=[
        StepSpec("math.add", {"numbers": [1, 2]}, 0),
        StepSpec("math.multiply", {"numbers": [3]}, 1),
    ])


@pytest.fixture
def admin_web(client, admin_user):
    client.force_login(admin_user)
    return client


def test_anonymous_is_sent_to_login(client):
    response = client.get("/admin/chains/run/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_pages_render(admin_web, chain):
    run = services.run_submit_task(task_type="math_chain",
                                   config={"operation": "add", "numbers": [1]})
    for url in (
        reverse("admin:index"),
        reverse("admin:chains_chain_changelist"),
        reverse("admin:chains_chain_change", args=[chain.pk]),
        reverse("admin:chains_chain_add"),
        reverse("admin:chains_run_changelist") + "?status__exact=PENDING",
        reverse("admin:chains_run_change", args=[run.pk]),
    ):
        response = admin_web.get(url)
        assert response.status_code == 200, url
    page = admin_web.get(reverse("admin:chains_run_change", args=[run.pk])).content.decode()
    assert "tc-status-pending" in page
    step = run.step_runs.get()
    assert f'title="{step.task_id} (no result stored yet)"' in page  # nothing to link to yet
    TaskResult.objects.create(task_id="other", status="SUCCESS", result="2")
    result = TaskResult.objects.create(task_id=step.task_id, status="SUCCESS", result="1")
    page = admin_web.get(reverse("admin:chains_run_change", args=[run.pk])).content.decode()
    link = reverse("admin:django_celery_results_taskresult_change", args=[result.pk])
    assert f'<a href="{link}" title="{step.task_id}">' in page  # the result's own page
    linked = admin_web.get(link)
    assert linked.status_code == 200 and step.task_id in linked.content.decode()


def test_run_selected_chains_action_starts_runs(admin_web, chain, admin_user):
    disabled = services.chain_save(name="off", enabled=False,
                                   steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    response = admin_web.post(reverse("admin:chains_chain_changelist"), {
        "action": "run_selected_chains", "_selected_action": [chain.pk, disabled.pk],
    }, follow=True)
    messages = [str(m) for m in response.context["messages"]]
    run = Run.objects.get()
    assert (run.chain, run.trigger, run.created_by) == (chain, RunTrigger.ADMIN, admin_user)
    link = reverse("admin:chains_run_change", args=[run.pk])
    assert f'Started 1 run: <a href="{link}">{str(run.pk)[:8]} (demo)</a>' in messages
    assert any("Not started: off: chain: chain 'off' is disabled" in m for m in messages)


def test_start_chains_helper_reports_errors_without_a_request(chain):
    runs, errors = start_chains(Chain.objects.all(), user=None)
    assert len(runs) == 1 and errors == []


def test_step_inline_validates_params(admin_web, chain):
    url = reverse("admin:chains_chain_change", args=[chain.pk])
    steps = list(chain.steps.order_by("position"))
    data = {
        "name": "demo", "description": "", "enabled": "on", "default_inputs": "{}",
        "steps-TOTAL_FORMS": "2", "steps-INITIAL_FORMS": "2",
        "steps-MIN_NUM_FORMS": "0", "steps-MAX_NUM_FORMS": "1000",
        "schedules-TOTAL_FORMS": "0", "schedules-INITIAL_FORMS": "0",
        "schedules-MIN_NUM_FORMS": "0", "schedules-MAX_NUM_FORMS": "1000",
    }
    for i, step in enumerate(steps):
        data.update({
            f"steps-{i}-id": step.pk, f"steps-{i}-chain": chain.pk,
            f"steps-{i}-position": step.position, f"steps-{i}-stage": step.stage,
            f"steps-{i}-name": "", f"steps-{i}-step_type": step.step_type,
            f"steps-{i}-params": '{"numbers": [1]}', f"steps-{i}-max_retries": "0",
            f"steps-{i}-time_limit": "", f"steps-{i}-queue": "",
        })
    data["steps-1-params"] = '{"numbers": ["x"]}'
    response = admin_web.post(url, data)
    assert response.status_code == 200
    assert "numbers.0: must be a number" in response.content.decode()
    assert Step.objects.get(chain=chain, position=1).params == {"numbers": [3]}
    data["steps-1-params"] = '{"numbers": [5]}'
    assert admin_web.post(url, data).status_code == 302
    assert Step.objects.get(chain=chain, position=1).params == {"numbers": [5]}


def test_view_only_staff_cannot_run_or_cancel(client, chain):
    viewer = make_user("viewer", staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_chain",
                                                                         "view_run"]))
    client.force_login(viewer)
    page = client.get(reverse("admin:chains_chain_changelist")).content.decode()
    assert "run_selected_chains" not in page
    response = client.post(reverse("admin:chains_chain_changelist"), {
        "action": "run_selected_chains", "_selected_action": [chain.pk]})
    assert response.status_code == 200  # the changelist again: no such action for them
    assert not Run.objects.exists()


def test_chain_page_has_tools_and_a_picture(admin_web, chain):
    page = admin_web.get(reverse("admin:chains_chain_change", args=[chain.pk])).content.decode()
    assert "Run now" in page and "Validate" in page and "Duplicate chain" in page
    assert page.count('class="tc-node tc-node-plan tc-kind-step"') == 2
    assert "data-django-jsonform" in page  # params are a generated form, not a JSON box


def test_pages_render_without_asking_the_broker(admin_web, chain, monkeypatch):
    from chains.admin import views as admin_views

    def broker_never_answers(**kwargs):
        raise AssertionError("a page waited on the broker")

    monkeypatch.setattr(admin_views, "cluster_state", broker_never_answers)
    for url in (reverse("admin:chains_dashboard"),
                reverse("admin:chains_chain_run", args=[chain.pk])):
        page = admin_web.get(url).content.decode()
        assert 'class="tc-cluster"' in page and "Asking the workers" in page


def test_the_cluster_panel_warns_about_queues_no_worker_consumes(admin_web, monkeypatch):
    from chains.admin import views as admin_views
    from chains.cluster import ClusterState

    state = ClusterState(workers={"w1@host": ["celery", "io"]})
    monkeypatch.setattr(admin_views, "cluster_state", lambda **kwargs: state)
    url = reverse("admin:chains_cluster_panel")
    page = admin_web.get(url + "?queue=celery&queue=math&queue=nope").content.decode()
    assert "No live worker consumes math: the run will wait until one does." in page
    assert "w1@host" in admin_web.get(url).content.decode()


def test_run_now_form_starts_the_run(admin_web, chain):
    url = reverse("admin:chains_chain_run", args=[chain.pk])
    assert admin_web.get(url).status_code == 200
    response = admin_web.post(url, {"inputs": "5"})
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:chains_run_change", args=[run.pk])
    assert (run.inputs, run.trigger) == (5, RunTrigger.ADMIN)
    with unchanged():
        bad = admin_web.post(url, {"inputs": "{nope"})
    assert bad.status_code == 200
    # The reason sits next to the field, with the text as typed, ready to fix.
    assert ('<ul class="errorlist" id="tc-inputs-error"><li>not valid JSON at line 1, column 2: '
            "Expecting property name enclosed in double quotes</li></ul>") in html.unescape(
        bad.content.decode())
    assert ">{nope</textarea>" in bad.content.decode()
    empty = admin_web.post(url, {"inputs": ""})  # empty: the chain's default inputs
    assert empty.status_code == 302 and Run.objects.latest("created_at").inputs == {}


def test_validate_reports_problems_without_running(admin_web, chain):
    url = reverse("admin:chains_chain_validate", args=[chain.pk])
    ok = admin_web.post(url, follow=True)
    assert "The chain is valid" in ok.content.decode()
    Step.objects.create(chain=chain, position=2, stage=2, step_type="data.clean")
    Step.objects.create(chain=chain, position=3, stage=3, step_type="math.add",
                        params={"numbers": ["x"]})
    page = admin_web.post(url, follow=True).content.decode()
    assert "steps.3.params.numbers.0: must be a number" in page
    Step.objects.filter(position=3).delete()
    page = admin_web.post(url, follow=True).content.decode()
    assert "stage 2: data.clean needs a file from the stage before" in page
    assert not Run.objects.exists()


def test_duplicate_chain(admin_web, chain):
    response = admin_web.post(reverse("admin:chains_chain_duplicate", args=[chain.pk]))
    copy = Chain.objects.get(name="demo (copy)")
    assert response["Location"] == reverse("admin:chains_chain_change", args=[copy.pk])
    assert list(copy.steps.values_list("step_type", "params")) == list(
        chain.steps.values_list("step_type", "params"))
    admin_web.post(reverse("admin:chains_chain_duplicate", args=[chain.pk]))
    assert Chain.objects.filter(name="demo (copy 2)").exists()


def test_step_form_schema_for_the_picker(admin_web):
    schema = admin_web.get(reverse("admin:chains_step_form_schema", args=["io.read"])).json()
    assert schema["keys"]["max_bytes"]["type"] == "integer"
    assert schema["keys"]["path"]["type"] == "string"
    assert admin_web.get(reverse("admin:chains_step_form_schema",
                                 args=["nope"])).status_code == 404


def test_run_page_panel_and_actions(admin_web, chain, admin_user):
    run = services.run_start(chain=chain, user=admin_user)
    page = admin_web.get(reverse("admin:chains_run_change", args=[run.pk])).content.decode()
    assert 'id="tc-run-panel"' in page and 'data-finished="0"' in page
    panel = admin_web.get(reverse("admin:chains_run_panel", args=[run.pk]))
    assert panel["X-Run-Finished"] == "0"
    assert 'id="tc-cancel"' in panel.content.decode()
    admin_web.post(reverse("admin:chains_run_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == "CANCELLED"
    panel = admin_web.get(reverse("admin:chains_run_panel", args=[run.pk]))
    assert panel["X-Run-Finished"] == "1"
    html = panel.content.decode()
    assert 'id="tc-retry"' in html and 'id="tc-again"' in html and 'id="tc-cancel"' not in html
    again = admin_web.post(reverse("admin:chains_run_again", args=[run.pk]))
    new = Run.objects.exclude(pk=run.pk).get()
    assert again["Location"] == reverse("admin:chains_run_change", args=[new.pk])
    admin_web.post(reverse("admin:chains_run_retry", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == "PENDING"


def test_dashboard(admin_web, chain, admin_user):
    run = services.run_start(chain=chain, user=admin_user)
    services.run_finish(run_id=run.id, result=1)
    page = admin_web.get(reverse("admin:chains_dashboard")).content.decode()
    assert "Runs per hour, last 24 hours" in page and "<svg" in page
    assert "demo" in page  # chain performance row
    assert "Workers and queues" in page
    index = admin_web.get(reverse("admin:index")).content.decode()
    assert reverse("admin:chains_dashboard") in index


def test_view_only_staff_see_runs_but_no_action_buttons(client, chain, admin_user):
    run = services.run_start(chain=chain, user=admin_user)
    viewer = make_user("viewer2", view_only=True)
    client.force_login(viewer)
    page = client.get(reverse("admin:chains_run_change", args=[run.pk])).content.decode()
    assert 'id="tc-run-panel"' in page and 'id="tc-cancel"' not in page
    with unchanged():
        assert client.post(reverse("admin:chains_run_cancel", args=[run.pk])).status_code == 403
    assert client.get(reverse("admin:chains_chain_run", args=[chain.pk])).status_code == 403


def test_run_list_counts_with_a_cap(admin_web, chain, admin_user, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chains.admin import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "COUNT_CAP", 3)
    for _ in range(5):
        services.run_start(chain=chain, user=admin_user)
    with CaptureQueriesContext(connection) as queries:
        page = admin_web.get(reverse("admin:chains_run_changelist"))
    assert page.status_code == 200
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    run_counts = [sql for sql in counts if "chains_run" in sql]
    assert run_counts and all("LIMIT" in sql.upper() for sql in run_counts)


def chain_form(steps: list[dict], **fields) -> dict:
    """The add form of the chain builder, as a browser posts it."""
    data = {"name": "new", "description": "", "enabled": "on", "default_inputs": "{}",
            "steps-TOTAL_FORMS": str(len(steps)), "steps-INITIAL_FORMS": "0",
            "steps-MIN_NUM_FORMS": "0", "steps-MAX_NUM_FORMS": "1000",
            "schedules-TOTAL_FORMS": "0", "schedules-INITIAL_FORMS": "0",
            "schedules-MIN_NUM_FORMS": "0", "schedules-MAX_NUM_FORMS": "1000", **fields}
    for i, step in enumerate(steps):
        row = {"position": i, "stage": i, "name": "", "step_type": "math.add",
               "params": "{}", "max_retries": "0", "time_limit": "", "queue": "", **step}
        data.update({f"steps-{i}-{key}": value for key, value in row.items()})
    return data


@pytest.mark.parametrize(("steps", "message"), [
    ([], "a chain needs at least one step"),
    ([{}] * 201, "201 steps is over the limit of 200"),
    ([{"time_limit": "100000"}], "must be at most"),
    ([{"queue": "unacked"}], "unknown queue 'unacked'"),
    ([{"params": '{"numbers": "x"}'}], "Input should be a valid list"),
    ([{"stage": "20000"}], "must be between 0 and 10000"),
    ([{"step_type": "data.load", "params": '{"path": "in.csv"}'}, {}],
     "stage 1: math.add needs a number or a list of numbers"),
])
def test_the_admin_refuses_what_the_api_refuses_and_saves_nothing(admin_web, api, steps,
                                                                  message):
    response = admin_web.post(reverse("admin:chains_chain_add"), chain_form(steps))
    assert response.status_code == 200
    assert message in html.unescape(response.content.decode())
    assert not Chain.objects.exists() and not Step.objects.exists()
    # The same steps, as an API client sends them.
    numbers = {"stage", "time_limit"}
    body = {"name": "new", "steps": [
        {"step_type": "math.add", "params": {}, "stage": i,
         **{key: int(value) if key in numbers else json.loads(value) if key == "params"
            else value for key, value in step.items()}}
        for i, step in enumerate(steps)]}
    with unchanged():
        refused = api.post("/api/chains/", body, format="json")
    assert refused.status_code == 400
    assert any(message in reason for reasons in refused.json().values() for reason in reasons)


def test_the_admin_saves_a_chain_through_the_service(admin_web, admin_user):
    response = admin_web.post(reverse("admin:chains_chain_add"), chain_form(
        [{"params": '{"numbers": [1]}'}, {"step_type": "math.multiply",
                                          "params": '{"numbers": [2]}'}]))
    assert response.status_code == 302
    chain = Chain.objects.get()
    assert chain.created_by == admin_user
    assert list(chain.steps.values_list("position", "step_type", "params")) == [
        (0, "math.add", {"numbers": [1]}), (1, "math.multiply", {"numbers": [2]})]


def test_the_admin_schedule_form_keeps_the_apis_rules(admin_web, chain):
    data = chain_form([{"params": '{"numbers": [1]}'}], name="demo")
    data.update({"schedules-TOTAL_FORMS": "1", "schedules-0-kind": "once",
                 "schedules-0-timezone": "UTC", "schedules-0-enabled": "on",
                 "schedules-0-overlap": "allow",
                 "schedules-0-run_at_0": "2020-01-01", "schedules-0-run_at_1": "00:00:00",
                 "schedules-0-inputs": "null"})
    url = reverse("admin:chains_chain_change", args=[chain.pk])
    with unchanged():  # neither the schedule nor the form's one step in place of two
        response = admin_web.post(url, data)
    assert response.status_code == 200
    assert "must be in the future" in response.content.decode()
    assert not chain.schedules.exists()


def test_the_chain_list_takes_the_same_queries_for_1_or_20_chains(admin_web):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_web.get(reverse("admin:chains_chain_changelist")).status_code == 200
        return len(captured)

    services.chain_save(name="c0", steps=[StepSpec("math.add", {}, 0)])
    one = queries()
    for n in range(1, 20):
        services.chain_save(name=f"c{n}", steps=[StepSpec("math.add", {}, 0)] * 2)
    assert queries() == one
    assert "<td class=\"field-step_count\">2</td>" in admin_web.get(
        reverse("admin:chains_chain_changelist")).content.decode()


def test_the_admin_refuses_chain_fields_the_api_refuses(admin_web):
    big = '{"blob": "' + "x" * 70_000 + '"}'
    for fields, message in (({"description": "d" * 10_001}, "the limit is 10000"),
                            ({"default_inputs": big}, "the limit is 65536")):
        response = admin_web.post(reverse("admin:chains_chain_add"),
                                  chain_form([{"params": '{"numbers": [1]}'}], **fields))
        assert response.status_code == 200
        assert message in html.unescape(response.content.decode())
    assert not Chain.objects.exists()


def test_the_admin_deletes_a_schedule_through_the_service(admin_web, chain, admin_user):
    from django_celery_beat.models import PeriodicTask

    schedule = services.schedule_save(chain=chain, user=admin_user, fields={
        "kind": "interval", "every_seconds": 3600})
    # Beat's own page names the task after the chain and the schedule.
    assert schedule.periodic_task.name == f"demo · every 3600 s (schedule {schedule.pk})"
    steps = chain.steps.order_by("position")
    data = chain_form([{"step_type": s.step_type, "stage": str(s.stage),
                        "params": json.dumps(s.params)} for s in steps], name="demo")
    data.update({"schedules-TOTAL_FORMS": "1", "schedules-INITIAL_FORMS": "1",
                 "schedules-0-id": str(schedule.pk), "schedules-0-chain": str(chain.pk),
                 "schedules-0-kind": "interval", "schedules-0-every_seconds": "3600",
                 "schedules-0-timezone": "UTC", "schedules-0-inputs": "null",
                 "schedules-0-DELETE": "on"})
    response = admin_web.post(reverse("admin:chains_chain_change", args=[chain.pk]), data)
    assert response.status_code == 302
    assert not chain.schedules.exists()
    assert not PeriodicTask.objects.filter(id=schedule.periodic_task_id).exists()


def test_the_run_list_shows_short_ids_progress_errors_and_chain_names(admin_web, chain,
                                                                        admin_user):
    run = services.run_start(chain=chain, user=admin_user)
    first = run.step_runs.get(index=0)
    services.step_execute(step_run_id=first.id, previous=0)
    services.step_fail(step_run_id=run.step_runs.get(index=1).id,
                       error="ValueError: no\nsecond line")
    page = admin_web.get(reverse("admin:chains_run_changelist")).content.decode()
    assert f'<code class="tc-run-id" title="{run.pk}">{str(run.pk)[:8]}</code>' in page
    assert '<span style="width: 50%"></span></span> 1/2' in page
    assert ">step 2 (math.multiply): ValueError: no</small>" in page  # the first line
    assert ("<td class=\"field-what\">demo <small class=\"tc-version-tag\" "
            "title=\"chain version 1\">v1</small><br><small") in page


@pytest.mark.parametrize("term", ["id prefix", "chain name", "task id", "full id"])
def test_the_run_list_finds_runs_by_id_prefix_chain_name_and_task_id(admin_web, chain,
                                                                      admin_user, term):
    wanted = services.run_start(chain=chain, user=admin_user)
    other = services.run_submit_task(task_type="math_chain", user=admin_user,
                                     config={"operation": "add", "numbers": [1]})
    query = {"id prefix": str(wanted.pk)[:6], "chain name": "DEM",
             "task id": wanted.step_runs.get(index=1).task_id[:10],
             "full id": str(wanted.pk)}[term]
    page = admin_web.get(reverse("admin:chains_run_changelist"), {"q": query})
    shown = {str(run.pk) for run in page.context["cl"].result_list}
    assert shown == {str(wanted.pk)}
    assert str(other.pk) not in shown


def test_the_dashboard_is_in_the_sidebar_and_lists_task_types(admin_web, chain, admin_user):
    from django.utils import timezone

    from chains import states
    from chains.models import RunStatus

    seed = services.run_submit_task(task_type="math_chain", user=admin_user,
                                    config={"operation": "add", "numbers": [1]})
    states.move(Run.objects.filter(id=seed.id), RunStatus.RUNNING, started_at=timezone.now())
    services.run_finish(run_id=seed.id, result=1)
    page = admin_web.get(reverse("admin:chains_chain_changelist")).content.decode()
    dashboard = reverse("admin:chains_dashboard")
    assert f'<th scope="row" id="chains-dashboard"><a href="{dashboard}">Dashboard</a>' in page
    runs = admin_web.get(reverse("admin:chains_run_changelist")).content.decode()
    assert f'<a href="{dashboard}" class="tc-dashboard-tool">Dashboard</a>' in runs  # any project
    page = admin_web.get(dashboard).content.decode()
    assert (f'<a href="{reverse("admin:chains_run_changelist")}?task_type=math_chain">'
            "math_chain</a> <small>(task type)</small>") in page
    assert "Data as of" in page and 'data-refresh-seconds="30"' in page
    assert '<strong id="tc-retried-count">0</strong>' in page
    assert "var(--font-family-primary" in page  # the chart speaks the admin's font


def test_the_picture_preview_draws_the_rows_on_screen(admin_web):
    url = reverse("admin:chains_chain_picture")
    page = admin_web.get(url, {"steps": json.dumps([[0, "load"], [1, "a"], [1, "b"]])})
    assert page.status_code == 200
    svg = page.content.decode()
    assert svg.count('class="tc-node') == 3
    assert "1. load" in svg and "2. a" in svg and "3. b" in svg
    assert admin_web.get(url, {"steps": "[[1e999, \"x\"]]"}).status_code == 400
    assert admin_web.get(url, {"steps": "nope"}).status_code == 400
