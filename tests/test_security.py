"""Nobody gets in without logging in, nobody sees or acts on what is not theirs, and hostile
input is refused before any work starts."""
import os
import pickle
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from chains import services
from chains.models import Chain, Run, RunStatus
from chains.presets import StepSpec
from tests.factories import make_user, token_client
from tests.helpers import unchanged, wait_for_run

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = {"uuid": str(uuid.uuid4()), "int": "1", "str": "x", "slug": "x", "path": "x"}
PUBLIC = {"/admin/login/", "/api-auth/login/", "/admin/logout/", "/api-auth/logout/"}


def _sample_for(match) -> str:
    """A value that the group's regex accepts."""
    import re

    for candidate in ("1", "math.add", SAMPLE["uuid"], "chains"):
        if re.fullmatch(match.group(1), candidate):
            return candidate
    raise AssertionError(f"no sample for {match.group(0)}")


def every_url(resolver: URLResolver = None, prefix: str = "") -> list[str]:
    """One concrete URL for every pattern in the URLconf, converters filled with samples."""
    import re

    resolver = resolver or get_resolver()
    urls = []
    for pattern in resolver.url_patterns:
        route = str(pattern.pattern)
        if "format>" in route:  # the same views with a .json suffix
            continue
        if route.startswith("^"):  # the router's regex routes: fill groups with samples
            route = re.sub(r"\(\?P<\w+>([^)]*)\)", _sample_for, route.strip("^$"))
            route = route.replace("/?", "/").replace("\\", "")
        route = re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLE.get(m.group(1) or "str", "x"),
                       route)
        if isinstance(pattern, URLResolver):
            urls += every_url(pattern, prefix + route)
        elif isinstance(pattern, URLPattern):
            urls.append("/" + prefix + route)
    return sorted(set(urls))


@pytest.mark.django_db
def test_every_url_refuses_anonymous_users(monkeypatch):
    from chains.api.throttles import AddressThrottle

    monkeypatch.setattr(AddressThrottle, "rate", "100000/min", raising=False)  # a sweep
    client = APIClient()
    urls = [u for u in every_url() if u not in PUBLIC]
    assert len(urls) > 40, urls
    with unchanged():
        for url in urls:
            for method in ("get", "post", "delete"):
                response = getattr(client, method)(url)
                if response.status_code == 302:
                    assert "login" in response["Location"] or url == "/", (method, url)
                else:
                    assert response.status_code in (401, 403, 404, 405), (
                        method, url, response.status_code)
                    assert response.status_code != 404 or url.startswith("/admin/"), (
                        method, url)


@pytest.mark.django_db
def test_other_users_get_404_for_every_run_action(api, other_api, user):
    task_id = api.post("/tasks/submit", {"task_type": "math_chain", "config": {
        "operation": "add", "numbers": [1]}}, format="json").json()["task_id"]
    services.step_fail(step_run_id=Run.objects.get(id=task_id).step_runs.get().id, error="x")
    for method, url in [
        ("get", f"/tasks/{task_id}/status"), ("get", f"/tasks/{task_id}/result"),
        ("delete", f"/tasks/{task_id}"), ("get", f"/api/runs/{task_id}/"),
        ("post", f"/api/runs/{task_id}/cancel/"), ("post", f"/api/runs/{task_id}/retry/"),
        ("delete", f"/api/runs/{task_id}/"),
    ]:
        assert getattr(other_api, method)(url).status_code == 404, (method, url)
    assert other_api.get("/api/runs/").json()["count"] == 0
    assert Run.objects.get(id=task_id).status == RunStatus.FAILED
    assert api.post(f"/api/runs/{task_id}/retry/").status_code == 200


@pytest.mark.django_db
def test_view_only_staff_can_look_but_not_run_or_cancel(api):
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    task_id = api.post("/tasks/submit", {"task_type": "math_chain", "config": {
        "operation": "add", "numbers": [1]}}, format="json").json()["task_id"]
    viewer = make_user("viewer", view_only=True)
    client = token_client(viewer)
    assert client.get(f"/tasks/{task_id}/status").status_code == 200
    assert client.get("/api/runs/").json()["count"] == 1
    assert client.post("/tasks/submit", {"task_type": "math_chain", "config": {
        "operation": "add", "numbers": [1]}}, format="json").status_code == 403
    assert client.post(f"/api/chains/{chain.id}/run/", {}, format="json").status_code == 403
    assert client.post(f"/api/runs/{task_id}/cancel/").status_code == 403
    assert client.delete(f"/tasks/{task_id}").status_code == 403
    assert Run.objects.count() == 1
    assert Run.objects.get().status == RunStatus.PENDING
    operator = make_user("operator", staff=True)
    operator.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_run", "add_run", "change_run"]))
    assert token_client(operator).post(f"/api/runs/{task_id}/cancel/").status_code == 200


@pytest.mark.django_db
def test_session_post_without_csrf_token_is_403(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/tasks/submit", {"task_type": "math_chain"},
                           content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_going_over_the_rate_limit_is_429(api, monkeypatch):
    monkeypatch.setattr(UserRateThrottle, "rate", "3/min", raising=False)
    cache.clear()
    try:
        codes = [api.get("/tasks/statistics").status_code for _ in range(5)]
    finally:
        cache.clear()
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["celery.map", "celery.chord", "celery.backend_cleanup",
                                 "chains.run_finish", "chains.step.math.add", "os.system"])
def test_only_registry_keys_name_work(api, key):
    response = api.post("/api/chains/", {"name": "x", "steps": [
        {"step_type": key, "params": {}}]}, format="json")
    assert response.status_code == 400
    assert "steps.0.step_type" in response.json()
    assert not Chain.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("params", [
    {"numbers": [1], "link": {"task": "celery.backend_cleanup"}},
    {"numbers": [{"task": "celery.map", "args": []}]},
    {"numbers": [1], "options": {"queue": "celery"}},
])
def test_nested_signatures_in_params_are_refused(api, params):
    response = api.post("/api/chains/", {"name": "x", "steps": [
        {"step_type": "math.add", "params": params}]}, format="json")
    assert response.status_code == 400, response.json()
    assert not Chain.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("path", [
    "../secret.txt", "/etc/passwd", "%2e%2e/secret.txt", "..%2fsecret.txt", "a\x00b",
    "link/secret.txt",
])
def test_paths_out_of_the_data_directory_are_400(api, data_dir, tmp_path, path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, data_dir / "link")
    before = sorted(p.name for p in outside.iterdir())
    for task_type, config in [
        ("io_chain", {"file_operations": ["copy", "compress"], "target_files": [path]}),
        ("data_chain", {"data_input": path, "processing_steps": ["clean"]}),
    ]:
        response = api.post("/tasks/submit", {"task_type": task_type, "config": config},
                            format="json")
        assert response.status_code == 400, (task_type, path)
    assert not Run.objects.exists()
    assert sorted(p.name for p in outside.iterdir()) == before


@pytest.mark.django_db
@pytest.mark.parametrize("numbers", [
    '["' + "9" * 5000 + '"]', "[" + "9" * 5000 + "]", "[1e999]", "[true]", "[null]",
    '{"a": 1}', "[[1, 2]]",
])
def test_hostile_numbers_are_400_before_any_work(api, numbers):
    body = '{"task_type": "math_chain", "config": {"operation": "power", "numbers": %s}}'
    response = api.post("/tasks/submit", data=body % numbers, content_type="application/json")
    assert response.status_code == 400
    assert not Run.objects.exists()


def test_deploy_check_with_the_production_profile_is_clean():
    env = {**{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
           "DJANGO_SETTINGS_MODULE": "config.production",
           "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
           "DJANGO_ALLOWED_HOSTS": "chains.example.com"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


class _Touch:
    """A pickle that creates a file when unpickled: what an attacker would send."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.mark.flow
@pytest.mark.django_db(transaction=True)
def test_worker_refuses_a_pickled_message(start_worker, data_dir):
    from config.celery import app

    worker = start_worker()
    marker = data_dir / "pwned"
    with app.connection_for_write() as connection:
        producer = connection.Producer()
        producer.publish(
            pickle.dumps(((_Touch(marker),), {}, {})), routing_key="math", exchange="",
            content_type="application/x-python-serialize", content_encoding="binary",
            headers={"task": "chains.step.math.add", "id": str(uuid.uuid4()), "lang": "py",
                     "argsrepr": "", "kwargsrepr": ""},
        )
    deadline = time.monotonic() + 20
    while "pickle" not in worker.log_text():
        assert time.monotonic() < deadline, worker.log_text()[-2000:]
        time.sleep(0.1)
    assert not marker.exists()
    assert "Refusing to deserialize" in worker.log_text() or "ContentDisallowed" in (
        worker.log_text())
    run = services.run_submit_task(task_type="math_chain",
                                   config={"operation": "add", "numbers": [2, 2]})
    assert wait_for_run(run.id).result == 4  # the worker lives on
