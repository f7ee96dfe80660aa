"""Workflows under faults, with real processes: a worker killed in the middle of a 1,000-item
map, and a worker and Redis restarted while a run waits for its approval. Every process killed
here is one these tests started."""
import time

import pytest
from django.contrib.auth.models import Permission
from django.db.models import Count

from chains import services
from chains.models import MapItem, Run, RunStatus, RunTrigger, StepRun, WorkerHeartbeat
from chains.presets import Preset, StepSpec
from tests.helpers import wait_for_run

pytestmark = [pytest.mark.fault, pytest.mark.django_db(transaction=True)]


def start_run(*specs: StepSpec, inputs=0) -> Run:
    return services.run_create(preset=Preset(specs=list(specs), inputs=inputs),
                                trigger=RunTrigger.API)


def wait_until(check, *, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not {what} within {timeout}s")


def test_worker_killed_during_a_1000_item_map_the_run_completes_each_item_once(start_worker,
                                                                             start_beat):
    first = start_worker("first")
    start_beat()  # the reconciler, as in production
    run = start_run(StepSpec("math.multiply", {"numbers": [2]}, 0, map=True),
                    StepSpec("math.add", {}, 1), inputs=list(range(1000)))
    mapped = StepRun.objects.get(run=run, index=0)
    wait_until(lambda: MapItem.objects.filter(step_run=mapped, status="COMPLETED").count()
               >= 100, what="100 items done")
    first.kill_all()
    killed = MapItem.objects.filter(step_run=mapped, status="RUNNING").count()
    done_before = MapItem.objects.filter(step_run=mapped, status="COMPLETED").count()
    assert done_before < 1000, "the map ended before the kill; nothing was tested"
    start_worker("second")
    # Items the killed worker held come back once Redis' visibility timeout (10 s) passed.
    try:
        run = wait_for_run(run.id, timeout=120)
    except AssertionError:  # say where it stopped
        counts = dict(MapItem.objects.filter(step_run=mapped).values_list("status")
                      .annotate(n=Count("id")))
        steps = list(run.step_runs.values_list("index", "status", "attempts"))
        raise AssertionError(f"items {counts}, steps {steps}, killed while running: "
                             f"{killed}") from None
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.result == 2 * sum(range(1000))
    mapped.refresh_from_db()
    assert mapped.result == [2 * i for i in range(1000)]
    assert (mapped.items_total, mapped.items_done) == (1000, 1000)  # each counted once
    items = MapItem.objects.filter(step_run=mapped)
    assert set(items.values_list("status", flat=True)) == {"COMPLETED"}
    assert sorted(items.values_list("index", flat=True)) == list(range(1000))
    # The items the killed worker was running started a second time; no other did (those it
    # had fetched but not started come back unstarted; a done one gives its stored result).
    assert items.filter(attempts=2).count() == killed
    assert items.filter(attempts__gt=2).count() == 0


def test_worker_and_redis_restarted_while_a_run_waits_it_completes_once_approved(
    start_worker, embedded_redis, django_user_model
):
    worker = start_worker("before")
    run = start_run(StepSpec("math.add", {"numbers": [1]}, 0),
                    StepSpec("flow.approval", {"message": "ship it?"}, 1),
                    StepSpec("math.add", {"numbers": [1]}, 2), inputs=1)
    wait_until(lambda: Run.objects.get(id=run.id).status == RunStatus.WAITING,
               what="waiting")
    worker.stop()
    embedded_redis.stop()
    embedded_redis.start()  # empty: nothing of the waiting run was in it
    start_worker("after")
    assert Run.objects.get(id=run.id).status == RunStatus.WAITING
    boss = django_user_model.objects.create_user("boss", password="pw", is_staff=True)
    boss.user_permissions.add(Permission.objects.get(codename="approve_run"))
    boss = django_user_model.objects.get(pk=boss.pk)
    services.run_decide(run=Run.objects.get(id=run.id), user=boss, approve=True)
    run = wait_for_run(run.id, timeout=60)
    assert (run.status, run.result) == (RunStatus.COMPLETED, 3)
    assert list(run.step_runs.order_by("index").values_list("status", flat=True)) == [
        "COMPLETED", "COMPLETED", "COMPLETED"]


def test_redis_restarted_empty_during_a_map_the_lost_items_run_again(
    start_worker, start_beat, embedded_redis
):
    # Production timeouts: Redis gives nothing back by itself; the reconciler must see that
    # no live worker and no queue holds the unfinished items.
    env = {"CHAINS_VISIBILITY_TIMEOUT": "600", "CHAINS_STALL_SECONDS": "600"}
    worker = start_worker(**env)
    beat = start_beat(**env)
    run = start_run(StepSpec("flow.wait", {"seconds": 0.05}, 0, map=True),
                    inputs=list(range(300)))
    mapped = StepRun.objects.get(run=run, index=0)
    wait_until(lambda: MapItem.objects.filter(step_run=mapped, status="COMPLETED").count()
               >= 20, what="20 items done")
    embedded_redis.stop()  # it keeps nothing on disk: the queued items are lost
    embedded_redis.start()
    lost = MapItem.objects.filter(step_run=mapped).exclude(status="COMPLETED").count()
    assert lost > 0, "the map ended before Redis stopped; nothing was tested"
    try:
        run = wait_for_run(run.id, timeout=120)
    except AssertionError:  # say where it stopped
        items = list(MapItem.objects.filter(step_run=mapped).exclude(status="COMPLETED")
                     .values_list("index", "status", "worker", "attempts")[:20])
        steps = list(run.step_runs.values_list("index", "status", "attempts", "task_id"))
        heartbeats = list(WorkerHeartbeat.objects.values_list("hostname", "pid", "seen_at"))
        raise AssertionError(
            f"unfinished items {items}, steps {steps}, worker alive "
            f"{worker.process.poll() is None}, heartbeats {heartbeats}\n--- worker log\n"
            f"{worker.log_tail()}\n--- beat log\n{beat.log_tail()}") from None
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.result == list(range(300))
    mapped.refresh_from_db()
    assert (mapped.items_total, mapped.items_done) == (300, 300)
    assert mapped.earlier_attempts.filter(ended_by="worker_lost").exists()
