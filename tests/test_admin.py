"""Admin pages and actions, through the test client (no worker)."""
import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django_celery_results.models import TaskResult

from chains import services
from chains.admin import start_chains
from chains.models import Chain, Run, RunTrigger, Step
from chains.presets import StepSpec
from tests.conftest import make_user

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
    assert f"task_id={step.task_id}" in page
    TaskResult.objects.create(task_id=step.task_id, status="SUCCESS", result="1")
    TaskResult.objects.create(task_id="other", status="SUCCESS", result="2")
    linked = admin_web.get(reverse("admin:django_celery_results_taskresult_changelist")
                           + f"?task_id={step.task_id}")
    assert linked.status_code == 200
    assert linked.context["cl"].result_count == 1


def test_run_selected_chains_action_starts_runs(admin_web, chain, admin_user):
    disabled = services.chain_save(name="off", enabled=False,
                                   steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    response = admin_web.post(reverse("admin:chains_chain_changelist"), {
        "action": "run_selected_chains", "_selected_action": [chain.pk, disabled.pk],
    }, follow=True)
    messages = [str(m) for m in response.context["messages"]]
    assert "Started 1 run(s)." in messages
    assert any("Not started: off: chain: chain 'off' is disabled" in m for m in messages)
    run = Run.objects.get()
    assert (run.chain, run.trigger, run.created_by) == (chain, RunTrigger.ADMIN, admin_user)


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
    assert "must be a number" in response.content.decode()
    assert Step.objects.get(pk=steps[1].pk).params == {"numbers": [3]}
    data["steps-1-params"] = '{"numbers": [5]}'
    assert admin_web.post(url, data).status_code == 302
    assert Step.objects.get(pk=steps[1].pk).params == {"numbers": [5]}


def test_view_only_staff_cannot_run_or_cancel(client, chain):
    viewer = make_user("viewer", staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_chain",
                                                                         "view_run"]))
    client.force_login(viewer)
    page = client.get(reverse("admin:chains_chain_changelist")).content.decode()
    assert "run_selected_chains" not in page
    response = client.post(reverse("admin:chains_chain_changelist"), {
        "action": "run_selected_chains", "_selected_action": [chain.pk]})
    assert not Run.objects.exists()
    assert response.status_code in (200, 302, 403)
