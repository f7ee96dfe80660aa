"""Faults with real processes: pool children and whole workers killed mid-step, Redis stopped,
a step that kills its worker every time, and a load of concurrent submissions. Every process
killed here is one these tests started."""
import json
import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from rest_framework.authtoken.models import Token

from chains import services
from chains.models import Run, RunStatus, RunTrigger, StepRun
from chains.presets import Preset, StepSpec
from config.celery import app as celery_app
from tests.helpers import task_results, wait_for_run

pytestmark = [pytest.mark.fault, pytest.mark.django_db(transaction=True)]


def start_run(*specs: StepSpec, inputs=0, **kwargs) -> Run:
    return services.run_create(preset=Preset(specs=list(specs), inputs=inputs),
                                trigger=RunTrigger.API, **kwargs)


def add(n, stage):
    return StepSpec("math.add", {"numbers": [n]}, stage)


def wait(seconds, stage):
    return StepSpec("flow.wait", {"seconds": seconds}, stage)


def running_pid(step: StepRun, *, attempt: int = 1, timeout: float = 30) -> int:
    """The pid of the pool process running `step` in its `attempt`-th start: the step's row
    says RUNNING with that many attempts on a worker, and that worker's list of active tasks
    names the process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step.refresh_from_db()
        if step.status == RunStatus.RUNNING and step.attempts == attempt:
            active = celery_app.control.inspect(destination=[step.worker], timeout=1).active()
            for task in (active or {}).get(step.worker, []):
                if task["id"] == step.task_id:
                    return task["worker_pid"]
        time.sleep(0.02)
    raise AssertionError(f"step {step.index + 1} did not start attempt {attempt} in {timeout}s")


def kill_pool_child(worker, pid: int) -> None:
    assert worker.owns(pid) and pid != worker.pid, "only our own worker's pool children"
    os.kill(pid, signal.SIGKILL)


def assert_each_step_once(run: Run) -> None:
    steps = list(run.step_runs.order_by("index"))
    assert all(s.status == RunStatus.COMPLETED for s in steps)
    assert run.steps_done == run.steps_total == len(steps)
    rows = task_results([s.task_id for s in steps])
    assert sorted(r.status for r in rows) == ["SUCCESS"] * len(steps)


def test_pool_child_killed_during_step_3_the_run_completes(start_worker):
    worker = start_worker()
    run = start_run(add(1, 0), add(1, 1), wait(2, 2), add(1, 3), add(1, 4))
    step3 = run.step_runs.get(index=2)
    kill_pool_child(worker, running_pid(step3))
    run = wait_for_run(run.id, timeout=60)
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.result == 4  # 0+1+1, passed through the wait, +1+1: each addition once
    assert_each_step_once(run)
    step3.refresh_from_db()
    assert step3.attempts == 2  # the killed start and the redelivery
    assert list(run.step_runs.exclude(index=2).values_list("attempts", flat=True)) == [1] * 4


def test_whole_worker_killed_mid_step_a_new_worker_finishes_the_run(start_worker):
    first = start_worker("first")
    run = start_run(add(1, 0), add(1, 1), wait(2, 2), add(1, 3), add(1, 4))
    running_pid(run.step_runs.get(index=2))
    first.kill_all()
    killed_at = time.monotonic()
    start_worker("second")
    # The message comes back once Redis' visibility timeout (10 s here) has passed.
    run = wait_for_run(run.id, timeout=60)
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.result == 4
    assert_each_step_once(run)
    # visibility timeout (10 s) + a restore check every 10 s + a margin
    assert time.monotonic() - killed_at < 10 + 10 + 20


def test_redis_stopped_for_15_seconds_every_accepted_run_completes(
    start_worker, start_beat, embedded_redis, api
):
    env = {"CHAINS_STALL_SECONDS": "6", "CHAINS_PUBLISH_GRACE_SECONDS": "2",
           "CHAINS_RECONCILE_EVERY": "2"}
    start_worker(**env)
    start_beat(**env)
    in_flight = [start_run(wait(1, 0), add(1, 1), wait(1, 2), add(1, 3)) for _ in range(4)]
    for run in in_flight:
        running_pid(run.step_runs.get(index=0))
    embedded_redis.stop()
    down_at = time.monotonic()
    accepted = []
    for n in range(3):  # submitted while the broker is down: accepted, PENDING
        response = api.post("/tasks/submit", {"task_type": "math_chain", "config": {
            "operation": "add", "numbers": [n, 1], "iterations": 2}}, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["status"] == "PENDING"
        accepted.append(response.json()["task_id"])
    assert Run.objects.filter(id__in=accepted, published_at__isnull=True).count() == 3
    time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))
    embedded_redis.start()
    for run in in_flight:
        finished = wait_for_run(run.id, timeout=90)
        assert finished.status == RunStatus.COMPLETED, finished.error
        assert finished.result == 2
    for n, task_id in enumerate(accepted):
        finished = wait_for_run(task_id, timeout=60)
        assert finished.status == RunStatus.COMPLETED, finished.error
        assert finished.result == 2 * (n + 1)  # n+1, then (n+1)+n+1
    # And the workers consume new work again.
    fresh = start_run(add(5, 0))
    assert wait_for_run(fresh.id, timeout=30).result == 5


def test_a_parallel_header_task_killed_once_the_next_stage_runs_once(start_worker):
    worker = start_worker()
    run = start_run(wait(2, 0), add(1, 0), add(2, 0), StepSpec("math.add", {}, 1))
    slow = run.step_runs.get(index=0)
    kill_pool_child(worker, running_pid(slow))
    run = wait_for_run(run.id, timeout=60)
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.result == 0 + 1 + 2  # [0 (passed through the wait), 1, 2] summed
    body = run.step_runs.get(index=3)
    assert body.attempts == 1
    assert_each_step_once(run)


def test_a_step_that_kills_its_worker_every_time_fails_after_the_delivery_limit(start_worker):
    worker = start_worker(CHAINS_MAX_DELIVERIES="3")
    poison = start_run(wait(5, 0), add(1, 1))
    step = poison.step_runs.get(index=0)
    killed = 0
    others = []
    deadline = time.monotonic() + 90
    while not Run.objects.get(id=poison.id).is_finished:
        assert time.monotonic() < deadline, "the poison run never ended"
        try:
            pid = running_pid(step, attempt=killed + 1, timeout=2)
        except AssertionError:
            continue
        kill_pool_child(worker, pid)
        killed += 1
        others.append(start_run(add(len(others), 0)))
    poison = Run.objects.get(id=poison.id)
    assert poison.status == RunStatus.FAILED
    assert poison.error == ("step 1 (flow.wait): started 3 times without finishing "
                            "(its worker died each time)")
    assert killed == 3
    for n, other in enumerate(others):  # other runs kept flowing meanwhile
        other = wait_for_run(other.id, timeout=30)
        assert (other.status, other.result) == (RunStatus.COMPLETED, n)


def test_a_thousand_concurrent_submissions(start_worker, live_server, user, settings):
    settings.CHAINS_MAX_ACTIVE_RUNS_PER_USER = 0  # one user, a thousand open runs
    start_worker("one")
    start_worker("two")
    token = Token.objects.create(user=user).key
    body = json.dumps({"task_type": "math_chain",
                       "config": {"operation": "add", "numbers": [1, 2]}}).encode()

    def submit(_):
        request = urllib.request.Request(
            f"{live_server.url}/tasks/submit", data=body, method="POST",
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 201
            return json.load(response)["task_id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        task_ids = list(pool.map(submit, range(1000)))
    assert len(set(task_ids)) == 1000
    assert Run.objects.count() == 1000
    deadline = time.monotonic() + 300
    while Run.objects.filter(status__in=["PENDING", "RUNNING"]).exists():
        assert time.monotonic() < deadline, "runs still unfinished after 300 s"
        time.sleep(0.5)
    assert Run.objects.filter(status=RunStatus.COMPLETED, result=3).count() == 1000
    assert StepRun.objects.filter(status=RunStatus.COMPLETED).count() == 1000

    def get(path):
        request = urllib.request.Request(f"{live_server.url}{path}",
                                         headers={"Authorization": f"Token {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    statistics = get("/tasks/statistics")
    listed = get("/tasks?status=COMPLETED&limit=1000")
    assert statistics["total_tasks"] == statistics["completed_tasks"] == len(listed) == 1000
    assert {t["task_id"] for t in listed} == set(task_ids)




# --- Recovery within a minute, with the production visibility timeout ---------------------------

# The broker would give a dead worker's messages back only after this (the shipped default):
# what brings the runs back sooner is the ledger (heartbeats, the broker's holdings).
PRODUCTION_TIMEOUTS = {"CHAINS_VISIBILITY_TIMEOUT": "600", "CHAINS_STALL_SECONDS": "600"}
RECOVERY_DEADLINE = 60


def sixteen_runs_in_flight() -> list[Run]:
    runs = [start_run(wait(1, 0), add(1, 1), wait(1, 2), add(1, 3)) for _ in range(16)]
    deadline = time.monotonic() + 30
    while not StepRun.objects.filter(status=RunStatus.RUNNING).exists():
        assert time.monotonic() < deadline, "no step started"
        time.sleep(0.05)
    return runs


def wait_for_all(runs: list[Run], *, since: float) -> float:
    """Seconds from `since` until the last run finished; fails past RECOVERY_DEADLINE."""
    for run in runs:
        left = RECOVERY_DEADLINE - (time.monotonic() - since)
        finished = wait_for_run(run.id, timeout=max(left, 0.1))
        assert (finished.status, finished.result) == (RunStatus.COMPLETED, 2), finished.error
    return time.monotonic() - since


def test_runs_of_a_killed_worker_complete_within_a_minute_of_a_new_worker(
        start_worker, start_beat):
    first = start_worker("first", **PRODUCTION_TIMEOUTS)
    start_beat(**PRODUCTION_TIMEOUTS)
    runs = sixteen_runs_in_flight()
    first.kill_all()
    start_worker("second", **PRODUCTION_TIMEOUTS)
    back_at = time.monotonic()
    seconds = wait_for_all(runs, since=back_at)
    print(f"recovery after a killed worker: {seconds:.1f} s")
    for run in runs:
        assert_each_step_once(Run.objects.get(id=run.id))


def test_runs_in_flight_complete_within_a_minute_of_redis_coming_back_empty(
        start_worker, start_beat, embedded_redis):
    start_worker(**PRODUCTION_TIMEOUTS)
    start_beat(**PRODUCTION_TIMEOUTS)
    runs = sixteen_runs_in_flight()
    embedded_redis.stop()  # it keeps nothing on disk: every queued message is lost
    embedded_redis.start()
    back_at = time.monotonic()
    seconds = wait_for_all(runs, since=back_at)
    print(f"recovery after Redis came back empty: {seconds:.1f} s")
    for run in runs:
        assert_each_step_once(Run.objects.get(id=run.id))
