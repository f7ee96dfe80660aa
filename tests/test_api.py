"""The seed contract and the resource API, over HTTP, without a worker."""
import uuid

import pytest
from rest_framework.test import APIClient

from chains import services
from chains.models import Run, RunStatus
from tests.factories import make_chain, make_run, make_user, token_client
from tests.helpers import unchanged

pytestmark = pytest.mark.django_db

MATH = {"task_type": "math_chain", "description": "d",
        "config": {"operation": "add", "numbers": [1, 2, 3], "iterations": 2}}


def submit(api, body=MATH):
    return api.post("/tasks/submit", body, format="json")


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/tasks/submit"),
        ("get", "/tasks/statistics"),
        ("get", "/tasks"),
        ("get", f"/tasks/{uuid.uuid4()}/status"),
        ("get", f"/tasks/{uuid.uuid4()}/result"),
        ("delete", f"/tasks/{uuid.uuid4()}"),
        ("get", "/api/chains/"),
        ("get", "/api/runs/"),
        ("get", "/api/step-types/"),
        ("get", "/api/schema/"),
    ],
)
def test_everything_requires_login(method, url):
    with unchanged():
        response = getattr(APIClient(), method)(url)
    assert response.status_code == 401


def test_wrong_token_is_refused():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    assert client.get("/tasks").status_code == 401


def test_submit_answers_201_with_the_task_id(api, user):
    response = submit(api)
    assert response.status_code == 201
    body = response.json()
    run = Run.objects.get(id=body["task_id"])
    assert body["status"] == "PENDING" and run.created_by == user
    assert body["progress"] == {"steps_done": 0, "steps_total": 2}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": {}}, "task_type"),
        ({"task_type": "shell", "config": {}}, "task_type"),
        ({"task_type": "math_chain"}, "config"),
        ({"task_type": "math_chain", "config": []}, "config"),
        ({"task_type": "math_chain", "config": {"operation": "add"}}, "config.numbers"),
        ({"task_type": "math_chain", "config": {"operation": "add", "numbers": [1],
                                                "iterations": 500}}, "config.iterations"),
        ({"task_type": "math_chain", "config": {"operation": "add",
                                                "numbers": list(range(1001))}},
         "config.numbers"),
        ({"task_type": "data_chain", "config": {"data_input": "nope.csv",
                                                "processing_steps": ["clean"]}},
         "config.data_input"),
        ({"task_type": "io_chain", "config": {"file_operations": ["stat"],
                                              "target_files": ["../../etc/passwd"]}},
         "config.target_files.0"),
    ],
)
def test_bad_submit_is_400_naming_the_field_and_creates_nothing(api, body, field):
    response = submit(api, body)
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not Run.objects.exists()


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e400"])
def test_non_finite_numbers_in_the_json_body_are_400(api, number):
    response = api.post("/tasks/submit", data='{"task_type": "math_chain", "config": '
                        f'{{"operation": "add", "numbers": [{number}]}}}}',
                        content_type="application/json")
    assert response.status_code == 400
    assert not Run.objects.exists()


def test_status_result_and_delete(api):
    task_id = submit(api).json()["task_id"]
    status = api.get(f"/tasks/{task_id}/status").json()
    assert set(status) >= {"task_id", "status", "created_at", "completed_at", "result"}
    pending = api.get(f"/tasks/{task_id}/result")
    assert pending.status_code == 409
    assert pending.json()["status"] == "PENDING"
    services.run_finish(run_id=task_id, result=12)
    done = api.get(f"/tasks/{task_id}/result")
    assert done.status_code == 200 and done.json()["result"] == 12
    assert api.delete(f"/tasks/{task_id}").status_code == 204
    assert api.get(f"/tasks/{task_id}/status").status_code == 404
    with unchanged():
        assert api.delete(f"/tasks/{task_id}").status_code == 404


def test_delete_of_an_unfinished_task_cancels_then_deletes(api):
    task_id = submit(api).json()["task_id"]
    assert api.delete(f"/tasks/{task_id}").status_code == 204
    assert not Run.objects.filter(id=task_id).exists()


def test_list_is_newest_first_filtered_and_limited(api):
    ids = [submit(api).json()["task_id"] for _ in range(3)]
    services.run_finish(run_id=ids[0], result=1)
    listed = api.get("/tasks").json()
    assert [t["task_id"] for t in listed] == ids[::-1]
    assert [t["task_id"] for t in api.get("/tasks?limit=2").json()] == ids[:0:-1]
    completed = api.get("/tasks?status=COMPLETED&limit=10").json()
    assert [t["task_id"] for t in completed] == [ids[0]]
    assert api.get("/tasks?status=DONE").status_code == 400
    assert "limit" in api.get("/tasks?limit=0").json()


def test_statistics_count_by_status(api):
    ids = [submit(api).json()["task_id"] for _ in range(3)]
    services.run_finish(run_id=ids[0], result=1)
    services.step_fail(step_run_id=Run.objects.get(id=ids[1]).step_runs.first().id, error="x")
    assert api.get("/tasks/statistics").json() == {
        "total_tasks": 3, "pending_tasks": 1, "running_tasks": 0, "completed_tasks": 1,
        "failed_tasks": 1, "cancelled_tasks": 0,
    }


def test_users_see_only_their_own_runs_and_staff_see_all(api, other_api):
    task_id = submit(api).json()["task_id"]
    for url in (f"/tasks/{task_id}/status", f"/tasks/{task_id}/result",
                f"/api/runs/{task_id}/"):
        assert other_api.get(url).status_code == 404
    assert other_api.delete(f"/tasks/{task_id}").status_code == 404
    assert other_api.post(f"/api/runs/{task_id}/cancel/").status_code == 404
    assert other_api.get("/tasks").json() == []
    assert other_api.get("/tasks/statistics").json()["total_tasks"] == 0
    staff = token_client(make_user("staff", staff=True))
    assert staff.get(f"/tasks/{task_id}/status").status_code == 200
    assert Run.objects.get(id=task_id).status == RunStatus.PENDING


# --- resource API ----------------------------------------------------------------------------

CHAIN = {"name": "c1", "description": "demo", "steps": [
    {"step_type": "math.add", "params": {"numbers": [1]}, "stage": 0},
    {"step_type": "math.multiply", "params": {"numbers": [2]}, "stage": 1},
]}


def test_chain_crud(api):
    created = api.post("/api/chains/", CHAIN, format="json")
    assert created.status_code == 201, created.content
    chain_id = created.json()["id"]
    assert [s["position"] for s in created.json()["steps"]] == [0, 1]
    assert api.get(f"/api/chains/{chain_id}/").json()["created_by"] == "alice"
    updated = api.put(f"/api/chains/{chain_id}/", {**CHAIN, "steps": CHAIN["steps"][:1]},
                      format="json")
    assert updated.status_code == 200 and len(updated.json()["steps"]) == 1
    patched = api.patch(f"/api/chains/{chain_id}/", {"description": "new"}, format="json")
    assert patched.status_code == 200, patched.content
    assert patched.json()["description"] == "new" and len(patched.json()["steps"]) == 1
    assert api.delete(f"/api/chains/{chain_id}/").status_code == 204


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ([{"step_type": "celery.chord", "params": {}}], "steps.0.step_type"),
        ([{"step_type": "math.add", "params": {"numbers": "x"}}], "steps.0.params.numbers"),
        ([{"step_type": "math.add", "params": {"task": "celery.map"}}], "steps.0.params.task"),
        ([{"step_type": "io.stat", "params": {"path": "/etc/passwd"}}], "steps.0.params.path"),
        ([], "steps"),
    ],
)
def test_chain_with_bad_steps_is_400(api, steps, field):
    response = api.post("/api/chains/", {"name": "bad", "steps": steps}, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert api.get("/api/chains/").json()["count"] == 0


def test_only_the_author_or_staff_edit_a_chain(api, other_api):
    chain_id = api.post("/api/chains/", CHAIN, format="json").json()["id"]
    assert other_api.get(f"/api/chains/{chain_id}/").status_code == 200
    with unchanged():
        assert other_api.delete(f"/api/chains/{chain_id}/").status_code == 403
    assert other_api.post(f"/api/chains/{chain_id}/run/", {}, format="json").status_code == 201


def test_start_a_run_and_read_it(api):
    chain_id = api.post("/api/chains/", CHAIN, format="json").json()["id"]
    started = api.post(f"/api/chains/{chain_id}/run/", {"inputs": 5}, format="json")
    assert started.status_code == 201
    body = started.json()
    assert (body["status"], body["inputs"], body["trigger"]) == ("PENDING", 5, "api")
    assert [s["step_type"] for s in body["steps"]] == ["math.add", "math.multiply"]
    runs = api.get(f"/api/runs/?chain={chain_id}&status=PENDING").json()
    assert [r["id"] for r in runs["results"]] == [body["id"]]
    assert api.get("/api/runs/?status=NOPE").status_code == 400


def test_step_types_list_the_registry_with_schemas(api):
    rows = api.get("/api/step-types/").json()
    assert "math.add" in [r["key"] for r in rows]
    one = api.get("/api/step-types/io.read/").json()
    assert one["family"] == "io"
    assert one["params_schema"]["properties"]["max_bytes"]["maximum"] == 64 * 1024
    assert api.get("/api/step-types/celery.map/").status_code == 404


def test_openapi_schema_and_docs(api, user, client):
    schema = api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    assert "/tasks/submit" in schema.json()["paths"]
    client.force_login(user)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


@pytest.mark.broker
@pytest.mark.usefixtures("broker")
def test_cluster_endpoints_are_staff_only(api, admin_api):
    assert api.get("/api/workers/").status_code == 403
    assert api.get("/api/queues/").status_code == 403
    workers = admin_api.get("/api/workers/")
    assert workers.status_code == 200 and workers.json() == []  # no worker in unit tests
    queues = admin_api.get("/api/queues/").json()
    assert {q["name"] for q in queues} >= {"celery", "math", "data", "io"}
    assert all(q["workers"] == 0 for q in queues)


@pytest.mark.parametrize(("url", "status"), [
    ("/api/runs/?chain=9223372036854775808", 400),  # a filter value: refused
    ("/api/chains/9223372036854775808/", 404),      # an id no row can have
    ("/api/schedules/99999999999999999999/", 404),
])
def test_numbers_out_of_the_databases_range_are_4xx(api, url, status):
    assert api.get(url).status_code == status


def test_schedule_for_a_huge_chain_id_is_400(api):
    with unchanged():
        response = api.post("/api/schedules/", {"chain": 2**70, "kind": "interval",
                                                "every_seconds": 5}, format="json")
    assert response.status_code == 400


def test_view_only_staff_cannot_edit_chains_or_schedules(api, user):

    chain_id = api.post("/api/chains/", CHAIN, format="json").json()["id"]
    viewer = make_user("viewer3", view_only=True)
    client = token_client(viewer)
    with unchanged():
        assert client.put(f"/api/chains/{chain_id}/", CHAIN, format="json").status_code == 403
        assert client.delete(f"/api/chains/{chain_id}/").status_code == 403
        assert client.post("/api/chains/", {**CHAIN, "name": "v"},
                           format="json").status_code == 403
        assert client.post("/api/schedules/", {"chain": chain_id, "kind": "interval",
                                               "every_seconds": 60},
                           format="json").status_code == 403


def test_a_schedule_cannot_be_moved_onto_someone_elses_chain(api, other_api):
    mine = other_api.post("/api/chains/", {**CHAIN, "name": "bobs"}, format="json").json()["id"]
    theirs = api.post("/api/chains/", CHAIN, format="json").json()["id"]
    schedule = other_api.post("/api/schedules/", {"chain": mine, "kind": "interval",
                                                  "every_seconds": 60}, format="json").json()
    with unchanged():
        moved = other_api.patch(f"/api/schedules/{schedule['id']}/", {"chain": theirs},
                                format="json")
        assert moved.status_code == 403
        big = other_api.post("/api/schedules/", {"chain": mine, "kind": "interval",
                                                 "every_seconds": 60, "inputs": "x" * 70_000},
                             format="json")
    assert big.status_code == 400 and "inputs" in big.json()


def test_the_browsable_api_shows_each_actions_own_input(client, user):
    from chains.presets import StepSpec

    chain = make_chain(user=user)
    run = make_run(StepSpec("math.add", {"numbers": [1]}, 0), user=user)
    client.force_login(user)
    page = client.get(f"/api/chains/{chain.id}/run/", HTTP_ACCEPT="text/html").content.decode()
    assert 'name="inputs"' in page
    assert 'name="steps"' not in page and 'name="default_inputs"' not in page
    for action in ("retry", "cancel"):
        page = client.get(f"/api/runs/{run.id}/{action}/",
                          HTTP_ACCEPT="text/html").content.decode()
        assert 'id="post-object-form"' in page  # a POST button, and no fields to fill in
        assert 'name="status"' not in page and 'name="inputs"' not in page
    page = client.get("/api/chains/", HTTP_ACCEPT="text/html").content.decode()
    assert '<input type="checkbox" name="enabled" value="true" checked>' in page  # enabled

    # The HTML form's JSON is read as JSON, and its CSRF token is not an unknown key.
    response = client.post(f"/api/chains/{chain.id}/run/",
                           {"inputs": "[1, 2]", "csrfmiddlewaretoken": "x"})
    assert response.status_code == 201, response.content
    assert Run.objects.get(id=response.json()["id"]).inputs == [1, 2]
    with unchanged():
        response = client.post(f"/api/runs/{run.id}/retry/", {"force": True},
                               content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"force": ["unknown field"]}
