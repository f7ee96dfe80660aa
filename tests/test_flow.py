"""End to end: the seed contract and the resource API against a real Celery worker on a real
Redis, writing to the test database. Nothing here is mocked or eager."""
import gzip
import hashlib
import json
import time

import pytest
from django.core.management import call_command
from django_celery_results.models import TaskResult

from chains.broker import holdings
from chains.models import Run, RunStatus, StepRun
from config.celery import app
from tests.helpers import task_results, task_state, wait_for_run, write_csv

pytestmark = [pytest.mark.flow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _worker(celery_worker):
    return celery_worker


def submit(api, task_type: str, config: dict, description: str = "") -> str:
    response = api.post("/tasks/submit", {"task_type": task_type, "config": config,
                                          "description": description}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "PENDING"
    return response.json()["task_id"]


def finished_status(api, task_id: str) -> dict:
    wait_for_run(task_id)
    response = api.get(f"/tasks/{task_id}/status")
    assert response.status_code == 200
    return response.json()


def test_math_chain_folds_over_previous_result(api):
    task_id = submit(api, "math_chain", {"operation": "add", "numbers": [1, 2, 3],
                                         "iterations": 2}, "sum twice")
    body = finished_status(api, task_id)
    assert body["status"] == "COMPLETED", body
    assert body["result"] == 12
    assert body["completed_at"] is not None
    steps = list(StepRun.objects.filter(run_id=task_id).order_by("index"))
    assert [s.result for s in steps] == [6, 12]
    result = api.get(f"/tasks/{task_id}/result")
    assert result.status_code == 200
    assert result.json()["result"] == 12


@pytest.mark.parametrize(
    ("operation", "numbers", "iterations", "expected"),
    [
        ("subtract", [10, 1, 2], 2, -6),  # 10-1-2 = 7, then 7-10-1-2 = -6
        ("multiply", [2, 3], 3, 216),  # 6, then 36, then 216
        ("divide", [100, 2, 5], 1, 10),
        ("power", [2, 3], 2, 262144),  # 2**3 = 8, then (8**2)**3
        ("add", [0.5, 0.25], 1, 0.75),
    ],
)
def test_math_chain_operations(api, operation, numbers, iterations, expected):
    task_id = submit(api, "math_chain", {"operation": operation, "numbers": numbers,
                                         "iterations": iterations})
    body = finished_status(api, task_id)
    assert body["status"] == "COMPLETED", body
    assert body["result"] == expected


def test_division_by_zero_fails_the_run_with_the_step_error(api):
    task_id = submit(api, "math_chain", {"operation": "divide", "numbers": [1, 0],
                                         "iterations": 3})
    body = finished_status(api, task_id)
    assert body["status"] == "FAILED"
    assert body["error"] == "step 1 (math.divide): division by zero"
    result = api.get(f"/tasks/{task_id}/result").json()
    assert result["status"] == "FAILED" and result["result"] is None
    statuses = list(StepRun.objects.filter(run_id=task_id).order_by("index")
                    .values_list("status", flat=True))
    assert statuses == [RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CANCELLED]
    failed = StepRun.objects.get(run_id=task_id, index=0)
    assert task_state(failed.task_id, "FAILURE") == "FAILURE"
    task_result = TaskResult.objects.get(task_id=failed.task_id)
    assert "division by zero" in task_result.traceback


def test_power_overflow_fails_cleanly(api):
    task_id = submit(api, "math_chain", {"operation": "power", "numbers": [10, 300],
                                         "iterations": 2})
    body = finished_status(api, task_id)
    assert body["status"] == "FAILED"
    assert body["error"].startswith("step 2 (math.power): ")
    assert "too large" in body["error"]


def test_step_task_ids_are_the_task_result_ids(api):
    task_id = submit(api, "math_chain", {"operation": "multiply", "numbers": [2, 2],
                                         "iterations": 3})
    assert finished_status(api, task_id)["status"] == "COMPLETED"
    steps = StepRun.objects.filter(run_id=task_id)
    results = task_results([s.task_id for s in steps])
    assert {r.task_name for r in results} == {"chains.step.math.multiply"}
    assert {r.status for r in results} == {"SUCCESS"}
    assert results.count() == 3
    assert {json.loads(r.result) for r in results} == {4, 16, 64}


def test_data_chain_cleans_transforms_and_analyzes(api, data_dir):
    write_csv(data_dir / "in" / "people.csv",
              "name, score ,age\n a ,10, 30\nb,20,40\n\n a ,10, 30\nc,30,50\n,,\n")
    task_id = submit(api, "data_chain", {"data_input": "in/people.csv",
                                         "processing_steps": ["clean", "analyze"]})
    body = finished_status(api, task_id)
    assert body["status"] == "COMPLETED", body
    result = body["result"]
    assert result["rows"] == 3  # a blank row, an all-empty row and a duplicate dropped
    assert result["columns"]["score"] == {"count": 3, "mean": 20.0, "min": 10.0, "max": 30.0,
                                          "std": 10.0}
    assert result["columns"]["age"]["mean"] == 40.0
    assert "name" not in result["columns"]
    cleaned = (data_dir / result["file"]).read_text()
    assert cleaned.splitlines() == ["name,score,age", "a,10,30", "b,20,40", "c,30,50"]


def test_data_chain_transform_scales_to_unit_range(api, data_dir):
    write_csv(data_dir / "t.csv", "x,y,label\n0,5,a\n5,5,b\n10,5,c\n")
    task_id = submit(api, "data_chain", {"data_input": "t.csv",
                                         "processing_steps": ["transform", "analyze"]})
    body = finished_status(api, task_id)
    assert body["status"] == "COMPLETED", body
    columns = body["result"]["columns"]
    assert (columns["x"]["min"], columns["x"]["mean"], columns["x"]["max"]) == (0.0, 0.5, 1.0)
    assert columns["y"]["max"] == 0.0  # a constant column becomes 0
    step = StepRun.objects.get(run_id=task_id, step_type="data.transform")
    assert step.result["scaled_columns"] == ["x", "y"]
    assert (data_dir / step.result["file"]).read_text().splitlines()[1:] == [
        "0,0,a", "0.5,0,b", "1,0,c"]


def test_data_chain_bad_csv_fails_the_run(api, data_dir):
    (data_dir / "bad.csv").write_bytes(b"a,b\n1,2\n\xff\xfe,3\n")
    task_id = submit(api, "data_chain", {"data_input": "bad.csv",
                                         "processing_steps": ["analyze"]})
    body = finished_status(api, task_id)
    assert body["status"] == "FAILED"
    assert body["error"] == "step 1 (data.load): file 'bad.csv' is not UTF-8 text"


def test_io_chain_applies_each_operation_to_each_file(api, data_dir):
    (data_dir / "a.txt").write_text("hello\n")
    (data_dir / "b.txt").write_text("world\n" * 100)
    task_id = submit(api, "io_chain", {"file_operations": ["stat", "checksum", "compress",
                                                           "read", "copy"],
                                       "target_files": ["a.txt", "b.txt"]})
    body = finished_status(api, task_id)
    assert body["status"] == "COMPLETED", body
    result = body["result"]
    assert [(r["file"], r["operation"]) for r in result] == [
        (f, op) for f in ("a.txt", "b.txt")
        for op in ("stat", "checksum", "compress", "read", "copy")
    ]
    assert result[0]["size"] == 6
    assert result[1]["checksum"] == hashlib.sha256(b"hello\n").hexdigest()
    assert gzip.decompress((data_dir / result[7]["compressed"]).read_bytes()) == b"world\n" * 100
    assert result[3]["content"] == "hello\n" and result[3]["truncated"] is False
    assert (data_dir / result[4]["copy"]).read_text() == "hello\n"


def test_delete_removes_the_run_its_results_and_files(api, data_dir):
    (data_dir / "a.txt").write_text("x")
    task_id = submit(api, "io_chain", {"file_operations": ["copy"], "target_files": ["a.txt"]})
    assert finished_status(api, task_id)["status"] == "COMPLETED"
    task_ids = list(StepRun.objects.filter(run_id=task_id).values_list("task_id", flat=True))
    assert (data_dir / "runs" / task_id).is_dir()
    assert api.delete(f"/tasks/{task_id}").status_code == 204
    assert api.get(f"/tasks/{task_id}/status").status_code == 404
    assert not TaskResult.objects.filter(task_id__in=task_ids).exists()
    assert not (data_dir / "runs" / task_id).exists()


def test_parallel_stage_runs_as_a_chord(api):
    chain = api.post("/api/chains/", {
        "name": "fan-out",
        "steps": [
            {"step_type": "math.add", "params": {"numbers": [1, 2]}, "stage": 0},
            {"step_type": "math.multiply", "params": {"numbers": [10]}, "stage": 1},
            {"step_type": "math.multiply", "params": {"numbers": [100]}, "stage": 1},
            {"step_type": "math.subtract", "params": {"numbers": [0.5]}, "stage": 1},
            {"step_type": "math.add", "params": {}, "stage": 2},
        ],
    }, format="json")
    assert chain.status_code == 201, chain.content
    started = api.post(f"/api/chains/{chain.json()['id']}/run/", {"inputs": 1}, format="json")
    assert started.status_code == 201, started.content
    run = wait_for_run(started.json()["id"])
    assert run.status == RunStatus.COMPLETED, run.error
    # inputs 1 -> 1+1+2 = 4 -> [40, 400, 3.5] -> 443.5
    assert run.result == 443.5
    detail = api.get(f"/api/runs/{run.id}/").json()
    assert [s["result"] for s in detail["steps"]] == [4, 40, 400, 3.5, 443.5]
    assert all(s["task_status"] == "SUCCESS" and s["worker"] for s in detail["steps"])
    assert detail["steps_done"] == detail["steps_total"] == 5


def test_failure_inside_a_parallel_stage_fails_the_run(api):
    chain = api.post("/api/chains/", {
        "name": "fan-fail",
        "steps": [
            {"step_type": "math.add", "params": {"numbers": [1]}, "stage": 0},
            {"step_type": "math.divide", "params": {"numbers": [1, 0]}, "stage": 0},
            {"step_type": "math.add", "params": {}, "stage": 1},
        ],
    }, format="json").json()
    run_id = api.post(f"/api/chains/{chain['id']}/run/", {}, format="json").json()["id"]
    run = wait_for_run(run_id)
    assert run.status == RunStatus.FAILED
    assert run.error == "step 2 (math.divide): division by zero"
    assert StepRun.objects.get(run=run, index=2).status == RunStatus.CANCELLED


def test_a_steps_own_failure_is_logged_as_expected_in_one_line(api, celery_worker):
    chain = api.post("/api/chains/", {"name": "zero", "steps": [
        {"step_type": "math.divide", "params": {"numbers": [1, 0]}}]}, format="json").json()
    run_id = api.post(f"/api/chains/{chain['id']}/run/", {}, format="json").json()["id"]
    assert wait_for_run(run_id).status == RunStatus.FAILED
    task_id = StepRun.objects.get(run_id=run_id).task_id
    line = f"(task {task_id}) failed: division by zero"
    deadline = time.monotonic() + 10
    while line not in celery_worker.log_text():
        assert time.monotonic() < deadline, celery_worker.log_tail()
        time.sleep(0.1)
    (logged,) = [x for x in celery_worker.log_text().splitlines() if line in x]
    assert "WARNING" in logged
    assert f"[{task_id}] raised unexpected" not in celery_worker.log_text()


def test_cancel_stops_the_running_step_and_revokes_the_rest(api, celery_worker):
    chain = api.post("/api/chains/", {"name": "slow", "steps": [
        {"step_type": "flow.wait", "params": {"seconds": 30}, "stage": i} for i in range(5)],
    }, format="json").json()
    run_id = api.post(f"/api/chains/{chain['id']}/run/", {}, format="json").json()["id"]
    first = StepRun.objects.get(run_id=run_id, index=0)
    deadline = time.monotonic() + 20
    while first.task_id not in (active := _active_tasks(celery_worker)):
        assert time.monotonic() < deadline, "the first step never started"
        time.sleep(0.05)
    # Flower and `celery inspect` show which run and chain a step task belongs to.
    assert active[first.task_id]["kwargs"] == {"step_run_id": first.id, "run_id": run_id,
                                               "chain": "slow"}
    response = api.post(f"/api/runs/{run_id}/cancel/")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "CANCELLED"
    assert response.json()["error"] == (
        "cancelled: 1 running step stopped on the worker; 4 waiting steps will not start")

    # The step that was running is terminated on its worker (it would run 30 s more) ...
    assert [row.status for row in task_results([first.task_id])] == ["REVOKED"]
    deadline = time.monotonic() + 10
    while first.task_id in _active_tasks(celery_worker):
        assert time.monotonic() < deadline, "the running step was not stopped"
        time.sleep(0.2)
    # ... and its message is acknowledged: the broker will not deliver it again.
    held = holdings(["celery"])
    assert held is not None
    assert first.task_id not in held.waiting and first.task_id not in held.taken

    run = Run.objects.get(id=run_id)
    steps = list(StepRun.objects.filter(run=run).order_by("index"))
    assert [s.status for s in steps] == [RunStatus.CANCELLED] * 5
    assert steps[0].error == "stopped on its worker by the cancel"
    assert [s.attempts for s in steps] == [1, 0, 0, 0, 0]
    assert run.steps_done == 0
    assert api.post(f"/api/runs/{run_id}/cancel/").status_code == 400


def _active_tasks(worker) -> dict[str, dict]:
    """The tasks `worker` runs now, by id, as `celery inspect active` reports them."""
    with app.connection_for_read() as connection:
        active = app.control.inspect(timeout=2, connection=connection).active() or {}
    mine = worker.hostname.split("@")[0]  # its name before the host part
    return {task["id"]: task for name, tasks in active.items() if name.startswith(mine)
            for task in tasks}


def test_run_chain_command_waits_for_the_result(capsys):
    from chains.models import Chain, Step

    chain = Chain.objects.create(name="cmd")
    Step.objects.create(chain=chain, position=0, step_type="math.multiply",
                        params={"numbers": [3]})
    call_command("run_chain", "cmd", "--input", "7", "--wait", "--timeout", "30")
    captured = capsys.readouterr()
    run = Run.objects.get()
    assert captured.out.splitlines() == [str(run.id), "21"]  # the bare id, then the result
    assert captured.err.splitlines()[-1] == "COMPLETED 1/1"  # progress goes to stderr
    assert run.trigger == "command"


def test_step_over_its_time_limit_fails_the_run(api):
    chain = api.post("/api/chains/", {"name": "slow", "steps": [
        {"step_type": "flow.wait", "params": {"seconds": 5}, "time_limit": 1},
        {"step_type": "math.add", "params": {"numbers": [1]}, "stage": 1},
    ]}, format="json")
    assert chain.status_code == 201, chain.content
    run_id = api.post(f"/api/chains/{chain.json()['id']}/run/", {}, format="json").json()["id"]
    run = wait_for_run(run_id, timeout=40)
    assert run.status == RunStatus.FAILED
    assert run.error == "step 1 (flow.wait): time limit exceeded"
    assert StepRun.objects.get(run=run, index=1).status == RunStatus.CANCELLED


def test_unexpected_errors_are_retried_then_fail_the_run(api, data_dir, settings):
    from tests.services import WRITABLE_DIRS

    settings.CHAINS_WRITABLE_DIRS = WRITABLE_DIRS
    (data_dir / "a.txt").write_text("a")
    (data_dir / "shared" / "taken").mkdir(parents=True)
    chain = api.post("/api/chains/", {"name": "retry", "steps": [
        {"step_type": "io.copy", "params": {"path": "a.txt", "destination": "shared/taken"},
         "max_retries": 1},
    ]}, format="json").json()
    run_id = api.post(f"/api/chains/{chain['id']}/run/", {}, format="json").json()["id"]
    run = wait_for_run(run_id)
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("step 1 (io.copy): IsADirectoryError")
    step = StepRun.objects.get(run=run)
    assert step.attempts == 2  # the first try and one retry
    assert task_state(step.task_id, "FAILURE") == "FAILURE"
    (first,) = step.earlier_attempts.all()  # the first try, kept when Celery retried it
    assert (first.number, first.status, first.ended_by) == (1, "FAILED", "step_retried")
    assert first.error.startswith("IsADirectoryError") and "Traceback" in first.traceback
    assert first.task_id == step.task_id and first.worker == step.worker


def test_a_retried_run_keeps_its_failed_attempt_everywhere(api, admin_client):
    chain = api.post("/api/chains/", {"name": "fix me", "steps": [
        {"step_type": "math.add", "params": {"numbers": [1]}},
        {"step_type": "math.divide", "params": {"numbers": [0]}, "stage": 1},
    ]}, format="json").json()
    run_id = api.post(f"/api/chains/{chain['id']}/run/", {"inputs": 1},
                      format="json").json()["id"]
    assert wait_for_run(run_id).status == RunStatus.FAILED
    failed = StepRun.objects.get(run_id=run_id, index=1)
    task_results([failed.task_id])  # its worker stores the FAILURE (and traceback) after the run
    chain["steps"][1]["params"] = {"numbers": [2]}  # the fix
    assert api.put(f"/api/chains/{chain['id']}/", chain, format="json").status_code == 200
    assert api.post(f"/api/runs/{run_id}/retry/").status_code == 200
    run = wait_for_run(run_id)
    assert (run.status, run.result, run.retries, run.retried_status) == (
        RunStatus.COMPLETED, 1.0, 1, "FAILED")
    assert run.retried_error.startswith("step 2 (math.divide): ")

    steps = api.get(f"/api/runs/{run_id}/").json()["steps"]
    assert steps[0]["earlier_attempts"] == []  # completed the first time: kept its result
    (attempt,) = steps[1]["earlier_attempts"]
    assert (attempt["number"], attempt["status"], attempt["ended_by"], attempt["task_id"]) == (
        1, "FAILED", "run_retried", failed.task_id)
    assert attempt["error"] == "division by zero"
    assert "StepFailed: division by zero" in attempt["traceback"]
    assert attempt["started_at"] and attempt["finished_at"] and attempt["worker"]
    assert steps[1]["task_id"] != failed.task_id and steps[1]["status"] == "COMPLETED"

    page = admin_client.get(f"/admin/chains/run/{run_id}/change/").content.decode()
    assert "1 earlier attempt" in page and "division by zero" in page
    assert "Retried 1 time" in page
    dashboard = admin_client.get("/admin/chains/run/dashboard/").content.decode()
    assert "step 2 (math.divide)" in dashboard and "retried" in dashboard
    assert '<strong id="tc-retried-count">1</strong>' in dashboard


def test_cluster_status_lists_the_worker_and_its_step_tasks(capsys, celery_worker):
    call_command("cluster_status", "--json", "--timeout", "2")
    report = json.loads(capsys.readouterr().out)
    names = [w["name"] for w in report["workers"]]
    assert any(name.startswith(celery_worker.hostname.split("@")[0]) for name in names)
    worker = report["workers"][0]
    assert set(worker["queues"]) == {"celery", "math", "data", "io"}
    assert "chains.step.math.add" in worker["registered"]
    assert set(report["queues"]) >= {"celery", "math", "data", "io"}
