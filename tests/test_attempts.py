"""A step's attempts are kept when another replaces it, and a run that failed and was retried
stays a failure in the statistics, the chain's performance and the recent failures."""
from datetime import timedelta

import pytest
from django.utils import timezone

from chains import selectors, services
from chains import states as run_states
from chains.models import AttemptEnd, Run, RunStatus, StepAttempt, StepRun
from chains.presets import StepSpec
from chains.services import runs
from tests.factories import make_chain

pytestmark = pytest.mark.django_db(transaction=True)  # runs are published once they commit


class _Canvas:
    """Stands in for the broker: every canvas is accepted and nothing runs."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def apply_async(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch, settings):
    monkeypatch.setattr(runs, "build_run_signature", _Canvas)
    settings.CHAINS_ORPHAN_SECONDS = 10**9  # the stall test jumps ahead; orphans stay out


def _failed_run(user, chain=None):
    """A run of `chain` whose first step completed and whose second failed."""
    chain = chain or make_chain("two", user=user, steps=[
        StepSpec("math.add", {"numbers": [1]}, 0), StepSpec("math.divide", {"numbers": [0]}, 1)])
    run = services.run_start(chain=chain, inputs=1, user=user)
    first, second = run.step_runs.order_by("index")
    services.step_execute(step_run_id=first.id, previous=1, worker="w1@host")
    run_states.move(StepRun.objects.filter(id=second.id), RunStatus.RUNNING, worker="w1@host",
                    started_at=timezone.now())
    services.step_fail(step_run_id=second.id, error="division by zero")
    return Run.objects.get(id=run.id)


def test_a_retry_keeps_the_failed_attempt_and_starts_a_new_one(user):
    run = _failed_run(user)
    failed = run.step_runs.get(index=1)
    run = services.run_retry(run=run)
    step = run.step_runs.get(index=1)
    assert (step.status, step.error, step.worker, step.started_at) == (
        RunStatus.PENDING, "", "", None)
    (kept,) = step.earlier_attempts.all()
    assert (kept.number, kept.status, kept.error, kept.ended_by, kept.task_id, kept.worker) == (
        1, RunStatus.FAILED, "division by zero", AttemptEnd.RUN_RETRIED, failed.task_id,
        "w1@host")
    assert kept.started_at == failed.started_at and kept.finished_at == failed.finished_at
    assert not run.step_runs.get(index=0).earlier_attempts.exists()  # it had completed
    assert (run.retries, run.retried_status, run.retried_error) == (
        1, RunStatus.FAILED, "step 2 (math.divide): division by zero")


def test_a_second_retry_adds_a_second_attempt(user):
    run = _failed_run(user)
    run = services.run_retry(run=run)
    second = run.step_runs.get(index=1)
    run_states.move(StepRun.objects.filter(id=second.id), RunStatus.RUNNING,
                    started_at=timezone.now())
    services.step_fail(step_run_id=second.id, error="still zero")
    run = services.run_retry(run=Run.objects.get(id=run.id))
    attempts = list(run.step_runs.get(index=1).earlier_attempts.values_list("number", "error"))
    assert attempts == [(1, "division by zero"), (2, "still zero")]
    assert run.retries == 2 and run.retried_error == "step 2 (math.divide): still zero"


def test_a_resumed_run_keeps_the_attempt_that_stalled(user, settings):
    run = _failed_run(user)
    run = services.run_retry(run=run)
    step = run.step_runs.get(index=1)
    run_states.move(StepRun.objects.filter(id=step.id), RunStatus.RUNNING, worker="w2@host",
                    started_at=timezone.now())
    stalled = timezone.now() + timedelta(seconds=settings.CHAINS_STALL_SECONDS
                                         + settings.CELERY_TASK_TIME_LIMIT + 1)
    assert services.reconcile_runs(now=stalled)["resumed"] == 1
    kept = list(step.earlier_attempts.values_list("number", "status", "ended_by", "worker"))
    assert kept == [(1, RunStatus.FAILED, AttemptEnd.RUN_RETRIED, "w1@host"),
                    (2, RunStatus.RUNNING, AttemptEnd.RUN_RESUMED, "w2@host")]


def test_steps_that_never_started_have_no_attempt_to_keep(user):
    run = services.run_start(chain=make_chain("one", user=user), inputs=1, user=user)
    services.run_cancel(run=run)
    run = services.run_retry(run=Run.objects.get(id=run.id))
    assert not StepAttempt.objects.filter(step_run__run=run).exists()


def _completed(run: Run, result) -> None:
    run_states.move(Run.objects.filter(id=run.id), RunStatus.RUNNING)
    services.run_finish(run_id=run.id, result=result)


def test_a_run_that_completed_after_a_retry_is_not_a_first_time_success(user, admin_user):
    chain = make_chain("two", user=user, steps=[
        StepSpec("math.add", {"numbers": [1]}, 0), StepSpec("math.divide", {"numbers": [0]}, 1)])
    clean = services.run_start(chain=chain, inputs=1, user=user)
    _completed(clean, 2)
    retried = services.run_retry(run=_failed_run(user, chain))
    _completed(retried, 0.5)

    (row,) = selectors.chain_performance(user=admin_user)
    assert (row["runs"], row["success_rate"], row["retried"]) == (2, 0.5, 1)
    counts = selectors.run_statistics(user=admin_user)
    assert (counts["completed"], counts["retried"]) == (2, 1)
    (failure,) = selectors.recent_failures(user=admin_user)
    assert failure.id == retried.id and failure.status == RunStatus.COMPLETED
    assert failure.failure == "step 2 (math.divide): division by zero"
    assert failure.failed_at == Run.objects.get(id=retried.id).retried_at


def test_a_cancelled_run_that_was_retried_is_not_a_failure(user, admin_user):
    run = services.run_start(chain=make_chain("one", user=user), inputs=1, user=user)
    services.run_cancel(run=run)
    services.run_retry(run=Run.objects.get(id=run.id))
    assert list(selectors.recent_failures(user=admin_user)) == []
    assert Run.objects.get(id=run.id).retried_status == RunStatus.CANCELLED
