"""The purge of old finished runs (services.runs_purge, manage.py purge_runs): every row that
hangs off a purged run or its steps goes with it, by its SQL or through Django's Collector
alike; what belongs to other runs, the audit trail and the stored metrics stay."""
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.db.models.signals import pre_delete
from django.utils import timezone
from django_celery_results.models import TaskResult

from chains import services
from chains.models import (
    Approval,
    Delivery,
    IdempotencyKey,
    MapItem,
    MetricCount,
    NotificationRule,
    Run,
    RunStatus,
    StepAttempt,
    StepRun,
)
from chains.presets import StepSpec
from chains.services import purge
from chains.services.metrics import metrics_add
from tests.factories import make_chain, make_run, make_user

pytestmark = pytest.mark.django_db

OLD = timedelta(days=10)
HELD = (StepRun, MapItem, Approval, StepAttempt, Delivery, IdempotencyKey)


def _run_with_everything(user, rule, *, status: str = RunStatus.COMPLETED, age=OLD):
    """A run of two steps, `status`, created `age` ago, with a row of every kind that hangs
    off a run or a step, and the task results of its steps, attempts and map items."""
    run = make_run(StepSpec("math.add", {"numbers": [1]}, 0),
                   StepSpec("math.multiply", {"numbers": [2]}, 1), user=user)
    Run.objects.filter(id=run.id).update(status=status, created_at=timezone.now() - age)
    first, second = run.step_runs.order_by("index")
    item = MapItem.objects.create(step_run=second, index=0, task_id=f"{second.task_id}-item")
    attempt = StepAttempt.objects.create(step_run=first, number=1,
                                         task_id=f"{first.task_id}-first",
                                         status=RunStatus.FAILED, ended_by="step_retried")
    Approval.objects.create(step_run=first, task_id=first.task_id, due_at=timezone.now())
    for task_id in (first.task_id, second.task_id, item.task_id, attempt.task_id):
        TaskResult.objects.create(task_id=task_id, status="SUCCESS")
    delivery = Delivery.objects.create(rule=rule, run=run, event="run_completed")
    Delivery.objects.create(rule=rule, run=run, event="run_completed", resend_of=delivery)
    IdempotencyKey.objects.create(user=user, key=str(run.id), fingerprint="f", run=run)
    return Run.objects.get(id=run.id)


def _rows_of(run) -> dict[str, int]:
    """How many rows of each kind the run holds, task results included."""
    steps = StepRun.objects.filter(run=run)
    counts = {model.__name__: (model.objects.filter(run=run) if model in (
        StepRun, Delivery, IdempotencyKey) else model.objects.filter(step_run__in=steps)).count()
        for model in HELD}
    task_ids = [*steps.values_list("task_id", flat=True),
                *MapItem.objects.filter(step_run__in=steps).values_list("task_id", flat=True),
                *StepAttempt.objects.filter(step_run__in=steps).values_list("task_id",
                                                                             flat=True)]
    counts["TaskResult"] = TaskResult.objects.filter(task_id__in=task_ids).count()
    return counts


@pytest.fixture
def rule():
    return NotificationRule.objects.create(chain=make_chain("notified"), events=["run_failed"],
                                           channel="webhook", url="https://example.com/hook")


@pytest.fixture(params=["sql", "collector"])
def way(request, monkeypatch):
    """The purge by its SQL, and through Django's Collector (taken when a model it deletes
    has a delete signal listener, or a relation it does not know)."""
    if request.param == "collector":
        def listener(**kwargs):
            pass

        pre_delete.connect(listener, sender=Run, weak=False)
        request.addfinalizer(lambda: pre_delete.disconnect(listener, sender=Run))
    assert purge._sql_is_complete() == (request.param == "sql")
    return request.param


def test_a_purged_run_takes_every_row_it_holds_and_leaves_the_others(way, rule):
    user = make_user("owner")
    gone = [_run_with_everything(user, rule),
            _run_with_everything(user, rule, status=RunStatus.FAILED)]
    kept = [_run_with_everything(user, rule, age=timedelta(days=1)),
            _run_with_everything(user, rule, status=RunStatus.RUNNING)]
    before = {run.id: _rows_of(run) for run in kept}
    assert all(_rows_of(run) == before[kept[0].id] for run in gone)
    assert all(before[kept[0].id].values())
    metrics_add({("chains_runs_finished_total", '["COMPLETED"]'): 1})
    entries = LogEntry.objects.count()
    counters = set(MetricCount.objects.values_list("name", "labels", "value"))
    assert entries and counters

    assert services.runs_purge(older_than=timezone.now() - timedelta(days=7), chunk=1) == 2

    assert set(Run.objects.values_list("id", flat=True)) == {run.id for run in kept}
    assert not StepRun.objects.filter(run_id__in=[run.id for run in gone]).exists()
    for model in HELD:  # nothing of the purged runs is left
        assert model.objects.count() == sum(before[run.id][model.__name__] for run in kept)
    assert TaskResult.objects.count() == sum(before[run.id]["TaskResult"] for run in kept)
    assert {run.id: _rows_of(run) for run in kept} == before
    # The trail and the counters are not the purge's to change.
    assert LogEntry.objects.count() == entries
    assert set(MetricCount.objects.values_list("name", "labels", "value")) == counters


def test_a_run_started_by_a_purged_step_stays_and_loses_its_link(way, rule):
    user = make_user("owner")
    parent = _run_with_everything(user, rule)
    child = _run_with_everything(user, rule, status=RunStatus.FAILED)
    Run.objects.filter(id=child.id).update(parent_step=parent.step_runs.first(), depth=1)

    assert services.runs_purge(older_than=timezone.now() - timedelta(days=7),
                               status=RunStatus.COMPLETED) == 1

    assert list(Run.objects.values_list("id", "parent_step")) == [(child.id, None)]


def test_a_resend_of_a_purged_runs_delivery_stays_and_loses_its_link(way, rule):
    user = make_user("owner")
    gone, kept = _run_with_everything(user, rule), _run_with_everything(user, rule, age=OLD / 2)
    Delivery.objects.filter(run=kept).update(resend_of=Delivery.objects.filter(run=gone)[0])

    assert services.runs_purge(older_than=timezone.now() - OLD / 4 * 3) == 1

    assert list(Delivery.objects.values_list("run", "resend_of")) == [(kept.id, None)] * 2


def test_chunks_walk_runs_created_at_the_same_moment(way):
    at = timezone.now() - OLD
    runs = [make_run(StepSpec("math.add", {"numbers": [1]}, 0)) for _ in range(5)]
    Run.objects.update(status=RunStatus.CANCELLED, created_at=at)
    done = []

    assert services.runs_purge(older_than=timezone.now(), chunk=2, progress=done.append) == 5

    assert done == [2, 4, 5] and not Run.objects.exists() and len(runs) == 5


def test_the_purge_knows_every_relation_to_what_it_deletes():
    """A new model pointing at a run or a step (or at one of their rows) needs a statement of
    its own in the purge's SQL; until it has one the purge takes the Collector."""
    assert purge._sql_is_complete()


def test_deleting_a_run_through_django_still_takes_what_hangs_off_its_steps(rule):
    """Map items, approvals and earlier attempts have no foreign key in the database (nor a
    sub-chain's link to its parent step): Django's own cascade still removes them."""
    user = make_user("owner")
    run, child = _run_with_everything(user, rule), _run_with_everything(user, rule)
    Run.objects.filter(id=child.id).update(parent_step=run.step_runs.first())

    Run.objects.filter(id=run.id).delete()

    assert [count for name, count in _rows_of(run).items() if name != "TaskResult"] == [0] * 6
    assert Run.objects.get(id=child.id).parent_step is None


def test_deleting_one_run_takes_the_task_results_of_its_attempts_and_items(rule):
    user = make_user("owner")
    run = _run_with_everything(user, rule)
    other = _run_with_everything(user, rule)
    assert _rows_of(run)["TaskResult"] == 4
    gone = Run(id=run.id)
    gone._state.adding = False  # stands for the deleted run in _rows_of's filters
    services.run_delete(run=run)
    assert not Run.objects.filter(id=gone.id).exists()
    assert set(_rows_of(gone).values()) == {0}
    assert _rows_of(other)["TaskResult"] == 4  # another run's stay
