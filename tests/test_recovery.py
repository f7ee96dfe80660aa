"""Orphan recovery without a worker: which runs the reconciler publishes again at once (their
steps' worker is dead, or their message is gone) and which it leaves alone."""
from datetime import timedelta

import pytest
from django.utils import timezone

from chains import services
from chains.broker import Holdings
from chains.models import RunStatus, WorkerHeartbeat
from chains.services import reconcile, runs
from tests.test_services import _Published, submit_math

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch) -> _Published:
    recorder = _Published()
    monkeypatch.setattr(runs, "build_run_signature", recorder)
    return recorder


@pytest.fixture
def broker(monkeypatch):
    """What the broker is said to hold: set .waiting / .taken, or .readable = False."""

    class Fake:
        waiting: set = set()
        taken: dict = {}
        readable = True

    fake = Fake()
    monkeypatch.setattr(reconcile, "holdings", lambda queues: Holdings(
        waiting=set(fake.waiting), taken=dict(fake.taken)) if fake.readable else None)
    return fake


def quiet_run(user, *, status=RunStatus.RUNNING, worker="w1@host", pid=100, iterations=2):
    """A published run whose first step is `status`, 20 s without progress."""
    run = submit_math(user, iterations=iterations)
    long_ago = timezone.now() - timedelta(seconds=20)
    run.step_runs.filter(index=0).update(status=status, worker=worker, worker_pid=pid,
                                         started_at=long_ago, attempts=1)
    run.__class__.objects.filter(id=run.id).update(
        status=RunStatus.RUNNING, published_at=long_ago, last_progress_at=long_ago)
    return run


def heartbeat(hostname="w1@host", pid=100, *, booted_ago=3600, seen_ago=1):
    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname=hostname, pid=pid,
                                   booted_at=now - timedelta(seconds=booted_ago),
                                   seen_at=now - timedelta(seconds=seen_ago))


def recover(django_capture_on_commit_callbacks) -> int:
    with django_capture_on_commit_callbacks(execute=True):
        return services.recover_orphans()


def test_a_step_running_on_a_silent_worker_is_published_again(
        user, published, broker, django_capture_on_commit_callbacks):
    run = quiet_run(user)
    heartbeat(seen_ago=60)  # silent for longer than three beats
    old = run.step_runs.get(index=0).task_id
    assert recover(django_capture_on_commit_callbacks) == 1
    step = run.step_runs.get(index=0)
    assert (step.status, step.attempts) == (RunStatus.PENDING, 1)  # the lost start counts
    assert step.task_id != old
    assert published.calls == [(str(run.id), [0, 1], {})]
    (lost,) = step.earlier_attempts.all()  # the start the dead worker never finished
    assert (lost.number, lost.status, lost.ended_by, lost.task_id, lost.worker) == (
        1, RunStatus.RUNNING, "worker_lost", old, "w1@host")


def test_a_step_running_on_a_live_worker_is_left_alone(
        user, published, broker, django_capture_on_commit_callbacks):
    run = quiet_run(user)
    heartbeat()
    old = run.step_runs.get(index=0).task_id
    assert recover(django_capture_on_commit_callbacks) == 0
    assert run.step_runs.get(index=0).task_id == old and published.calls == []


def test_a_worker_that_restarted_under_the_same_name_and_pid_does_not_vouch_for_the_old_one(
        user, published, broker, django_capture_on_commit_callbacks):
    quiet_run(user)
    heartbeat(booted_ago=5)  # booted after the step started
    assert recover(django_capture_on_commit_callbacks) == 1


@pytest.mark.parametrize(("where", "recovered"), [
    ("waiting", 0),       # in a queue: a worker will take it
    ("taken just now", 0),  # a worker is about to start it (or retries it after a countdown)
    ("taken long ago", 1),  # handed to a consumer that never started it: it died
    ("nowhere", 1),       # the broker lost it
])
def test_a_pending_step_is_recovered_unless_a_queue_or_a_live_consumer_has_it(
        user, published, broker, django_capture_on_commit_callbacks, where, recovered):
    run = quiet_run(user, status=RunStatus.PENDING, worker="", pid=None)
    task_id = run.step_runs.get(index=0).task_id
    if where == "waiting":
        broker.waiting.add(task_id)
    elif where.startswith("taken"):
        broker.taken[task_id] = 1.0 if where == "taken just now" else 60.0
    assert recover(django_capture_on_commit_callbacks) == recovered


def test_nothing_is_recovered_when_the_broker_cannot_be_read(
        user, published, broker, django_capture_on_commit_callbacks):
    quiet_run(user, status=RunStatus.PENDING, worker="", pid=None)
    broker.readable = False
    assert recover(django_capture_on_commit_callbacks) == 0


def test_a_run_with_recent_progress_is_not_looked_at(
        user, published, broker, django_capture_on_commit_callbacks):
    run = quiet_run(user)
    run.__class__.objects.filter(id=run.id).update(last_progress_at=timezone.now())
    assert recover(django_capture_on_commit_callbacks) == 0


def test_a_step_that_started_meanwhile_is_not_renewed(
        user, published, broker, monkeypatch, django_capture_on_commit_callbacks):
    run = quiet_run(user)
    step = run.step_runs.get(index=0)
    old_task_id = step.task_id
    original = reconcile._republish_orphan

    def started_meanwhile(*, run_id, steps):  # a redelivery starts the step before renewal
        step.__class__.objects.filter(id=step.id).update(attempts=2, worker="w2@host")
        return original(run_id=run_id, steps=steps)

    monkeypatch.setattr(reconcile, "_republish_orphan", started_meanwhile)
    assert recover(django_capture_on_commit_callbacks) == 0
    step.refresh_from_db()
    assert (step.task_id, step.status, step.attempts) == (old_task_id, RunStatus.RUNNING, 2)
    assert published.calls == []


@pytest.mark.django_db(transaction=True)  # finished once the readied run commits
def test_a_run_whose_steps_are_all_done_is_finished(
        user, published, broker, django_capture_on_commit_callbacks):
    run = quiet_run(user, iterations=1)
    run.step_runs.update(status=RunStatus.COMPLETED, result=6)
    run.__class__.objects.filter(id=run.id).update(steps_done=1)
    assert recover(django_capture_on_commit_callbacks) == 1
    run.refresh_from_db()
    assert (run.status, run.result) == (RunStatus.COMPLETED, 6)


@pytest.mark.broker
@pytest.mark.usefixtures("broker")
def test_holdings_reads_what_redis_keeps_waiting_and_taken():
    """Pins the Redis transport's layout the reconciler reads (queues, the unacknowledged
    hash and its index): a kombu upgrade that changes it fails here."""
    import uuid

    from chains.broker import holdings
    from config.celery import app

    queue = f"probe-{uuid.uuid4().hex[:8]}"
    task_id = str(uuid.uuid4())
    app.send_task("chains.probe", task_id=task_id, queue=queue)
    seen = holdings([queue])
    assert task_id in seen.waiting and task_id not in seen.taken
    with app.connection_for_read() as connection:
        consumer_queue = connection.SimpleQueue(queue, no_ack=False)
        message = consumer_queue.get(timeout=5)
        taken = holdings([queue])
        assert task_id not in taken.waiting
        assert 0 <= taken.taken[task_id] < 5
        message.ack()
        consumer_queue.close()
    assert task_id not in holdings([queue]).taken
