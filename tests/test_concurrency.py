"""Concurrency limits and schedule overlap policies: the rules without a worker, then with a
real worker (five runs at once under max_active_runs=1) and a real beat firing every two
seconds at a slow chain, one test per overlap policy."""
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from chains import services, states
from chains.models import ChainSchedule, Run, RunStatus
from chains.presets import StepSpec
from tests.factories import make_chain
from tests.helpers import wait_for_run

ADD = StepSpec("math.add", {"numbers": [1]}, 0)
SLOW = StepSpec("flow.wait", {"seconds": 3}, 0)


@pytest.mark.django_db
def test_runs_past_the_limit_wait_queued_and_start_oldest_first_as_slots_free():
    chain = make_chain("limited", steps=[ADD], max_active_runs=2)
    runs = [services.run_start(chain=chain, inputs=n) for n in range(5)]
    assert [r.status for r in runs] == ["PENDING", "PENDING", "QUEUED", "QUEUED", "QUEUED"]
    assert services.runs_promote(chain_id=chain.id) == 0  # no slot is free
    services.run_end(runs[0].id, RunStatus.COMPLETED, finished_at=timezone.now())
    assert services.runs_promote_after(run_id=runs[0].id) == 1
    assert Run.objects.get(id=runs[2].id).status == "PENDING"  # the oldest waiting
    services.run_cancel(run=Run.objects.get(id=runs[1].id))
    services.runs_promote(chain_id=chain.id)
    statuses = [Run.objects.get(id=r.id).status for r in runs]
    assert statuses == ["COMPLETED", "CANCELLED", "PENDING", "PENDING", "QUEUED"]
    # A retried run waits for a slot like a new one.
    retried = services.run_retry(run=Run.objects.get(id=runs[1].id))
    assert retried.status == RunStatus.QUEUED


@pytest.mark.django_db
def test_the_seed_endpoints_report_queued_as_pending(admin_api):
    chain = make_chain("limited", steps=[ADD], max_active_runs=1)
    services.run_start(chain=chain, inputs=0)
    queued = services.run_start(chain=chain, inputs=0)
    assert queued.status == RunStatus.QUEUED
    assert admin_api.get(f"/tasks/{queued.id}/status").json()["status"] == "PENDING"
    assert admin_api.get(f"/api/runs/{queued.id}/").json()["status"] == "QUEUED"
    pending = admin_api.get("/tasks?status=PENDING").json()
    assert str(queued.id) in [task["task_id"] for task in pending]


@pytest.mark.django_db
def test_the_reconciler_starts_queued_runs_whose_slot_freed_unnoticed():
    chain = make_chain("limited", steps=[ADD], max_active_runs=1)
    first = services.run_start(chain=chain, inputs=0)
    second = services.run_start(chain=chain, inputs=0)
    Run.objects.filter(id=first.id).update(status="FAILED")  # an end nobody acted on
    assert services.reconcile_runs()["queued_started"] == 1
    assert Run.objects.get(id=second.id).status == "PENDING"


@pytest.fixture
def next_slot():
    """A firing for the next slot each time, as beat fires each interval."""
    fired = []

    def firing(schedule: ChainSchedule) -> Run | None:
        fired.append(schedule)
        return services.run_start_scheduled(
            schedule_id=schedule.id, now=timezone.now() + timedelta(hours=len(fired)))
    return firing


@pytest.mark.django_db
@pytest.mark.parametrize(("policy", "second", "first_after", "skipped"), [
    ("allow", "PENDING", "PENDING", 0),
    ("skip", None, "PENDING", 1),
    ("buffer_one", "QUEUED", "PENDING", 0),
    ("cancel_other", "PENDING", "CANCELLED", 0),
])
def test_a_firing_while_the_previous_run_is_active_follows_the_policy(
        admin_user, next_slot, policy, second, first_after, skipped):
    chain = make_chain("scheduled", steps=[SLOW], user=admin_user)
    schedule = services.schedule_save(chain=chain, user=admin_user, fields={
        "kind": "interval", "every_seconds": 3600, "overlap": policy})
    first = next_slot(schedule)
    assert first is not None and first.status == "PENDING"
    again = next_slot(schedule)
    assert (again.status if again else None) == second
    assert Run.objects.get(id=first.id).status == first_after
    schedule.refresh_from_db()
    assert schedule.skipped_firings == skipped
    if policy == "buffer_one":  # a third firing while one waits is skipped
        assert next_slot(schedule) is None
        assert ChainSchedule.objects.get(id=schedule.id).skipped_firings == 1
        services.run_end(first.id, RunStatus.COMPLETED, finished_at=timezone.now())
        services.runs_promote_after(run_id=first.id)
        assert Run.objects.get(id=again.id).status == "PENDING"
    if policy == "cancel_other":
        assert "overlap policy cancel_other" in Run.objects.get(id=first.id).error


# --- With a real worker and a real beat -----------------------------------------------------


@pytest.mark.flow
@pytest.mark.django_db(transaction=True)
def test_five_runs_at_once_under_a_limit_of_one_never_run_two_at_a_time(start_worker):
    start_worker()
    chain = make_chain("one at a time", max_active_runs=1,
                       steps=[StepSpec("flow.wait", {"seconds": 0.5}, 0),
                              StepSpec("math.add", {"numbers": [1]}, 1)])
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # the ledger, while they run
        try:
            while not stop.is_set():
                seen.append(Run.objects.filter(chain=chain, status__in=states.HOLDS_SLOT)
                            .count())
                time.sleep(0.02)
        finally:
            connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = []
    threads = [threading.Thread(target=lambda n=n: started.append(
        services.run_start(chain=chain, inputs=n))) for n in range(5)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        finished = [wait_for_run(run.id, timeout=60) for run in started]
    finally:
        stop.set()
        watcher.join()
    assert [run.status for run in finished] == ["COMPLETED"] * 5
    assert sorted(run.result for run in finished) == [1, 2, 3, 4, 5]
    assert max(seen) == 1 and len(seen) > 20  # never two at once, watched throughout
    spans = sorted((run.started_at, run.finished_at) for run in finished)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def beat_a_slow_chain(start_worker, start_beat, admin_user, policy: str, seconds: float):
    """A real beat firing every 2 s at a chain that takes 5 s, for `seconds`."""
    start_worker()
    chain = make_chain(f"slow {policy}", user=admin_user,
                       steps=[StepSpec("flow.wait", {"seconds": 5}, 0)])
    schedule = services.schedule_save(chain=chain, user=admin_user, fields={
        "kind": "interval", "every_seconds": 2, "overlap": policy})
    samples: list[tuple[int, int]] = []
    start_beat()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = Run.objects.filter(schedule=schedule)
        samples.append((runs.filter(status__in=states.HOLDS_SLOT).count(),
                        runs.filter(status=RunStatus.QUEUED).count()))
        time.sleep(0.1)
    services.schedule_save(schedule=ChainSchedule.objects.get(id=schedule.id), chain=chain,
                           user=admin_user, fields={"enabled": False})
    return ChainSchedule.objects.get(id=schedule.id), samples


@pytest.mark.flow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("policy", ["allow", "skip", "buffer_one", "cancel_other"])
def test_each_overlap_policy_with_a_real_beat(start_worker, start_beat, admin_user, policy):
    schedule, samples = beat_a_slow_chain(start_worker, start_beat, admin_user, policy, 12)
    runs = list(Run.objects.filter(schedule=schedule).order_by("scheduled_for"))
    assert len(runs) >= 2, f"the beat fired {len(runs)} times"
    most_active = max(active for active, _ in samples)
    if policy == "allow":
        assert most_active >= 2  # they overlap
    else:
        assert most_active == 1  # never two at once
    if policy == "skip":
        assert schedule.skipped_firings >= 2 and schedule.last_skipped_at is not None
    if policy == "buffer_one":
        assert max(queued for _, queued in samples) == 1
        assert schedule.skipped_firings >= 1  # firings while one already waited
    if policy == "cancel_other":
        cancelled = [run for run in runs if run.status == "CANCELLED"]
        assert cancelled and all("overlap policy cancel_other" in run.error
                                 for run in cancelled)
