"""Services without a worker: what is written, what is queued on commit, what is refused."""
import pytest
from django_celery_results.models import TaskResult

from chains import services
from chains.errors import ChainError
from chains.models import Chain, Run, RunStatus, RunTrigger, StepRun
from chains.presets import StepSpec
from chains.services import runs
from tests.helpers import unchanged

pytestmark = pytest.mark.django_db


def submit_math(user=None, **config):
    config = {"operation": "add", "numbers": [1, 2, 3], "iterations": 2, **config}
    return services.run_submit_task(task_type="math_chain", config=config, user=user)


def test_submit_creates_the_run_and_its_steps_and_publishes_on_commit(
    user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        run = submit_math(user)
    assert len(callbacks) == 1  # the canvas is published only once the rows are committed
    assert (run.status, run.trigger, run.created_by, run.steps_total) == (
        RunStatus.PENDING, RunTrigger.API, user, 2)
    steps = list(run.step_runs.order_by("index"))
    assert [(s.step_type, s.queue, s.status) for s in steps] == [
        ("math.add", "math", RunStatus.PENDING)] * 2
    assert len({s.task_id for s in steps}) == 2


def test_bad_config_creates_nothing(user):
    with pytest.raises(ChainError) as info:
        submit_math(user, numbers=[1, float("nan")])
    assert "config.numbers.1" in info.value.errors
    with pytest.raises(ChainError) as info:
        services.run_submit_task(task_type="shell_chain", config={}, user=user)
    assert "task_type" in info.value.errors
    assert not Run.objects.exists() and not StepRun.objects.exists()


def test_step_execute_is_idempotent(user):
    run = submit_math(user)
    first = run.step_runs.get(index=0)
    assert services.step_execute(step_run_id=first.id, previous={}) == 6
    # A redelivered message returns the stored result without running the step again.
    assert services.step_execute(step_run_id=first.id, previous="ignored") == 6
    first.refresh_from_db()
    run.refresh_from_db()
    assert (first.status, first.attempts, first.result) == (RunStatus.COMPLETED, 1, 6)
    assert (run.status, run.steps_done) == (RunStatus.RUNNING, 1)


def test_steps_of_a_cancelled_run_are_skipped(user):
    run = submit_math(user)
    services.run_cancel(run=run)
    with pytest.raises(services.StepSkipped):
        services.step_execute(step_run_id=run.step_runs.get(index=0).id, previous=None)
    assert set(run.step_runs.values_list("status", flat=True)) == {RunStatus.CANCELLED}


def test_step_fail_fails_the_run_and_cancels_the_rest(user):
    run = submit_math(user, iterations=3)
    middle = run.step_runs.get(index=1)
    services.step_fail(step_run_id=middle.id, error="boom")
    run.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.FAILED, "step 2 (math.add): boom")
    assert list(run.step_runs.order_by("index").values_list("status", flat=True)) == [
        RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.CANCELLED]
    # A second report (the error callback after the step's own) changes nothing.
    services.step_fail(step_run_id=middle.id, error="again")
    run.refresh_from_db()
    assert run.error == "step 2 (math.add): boom"


def test_error_callback_reads_the_task_result(user):
    run = submit_math(user)
    step = run.step_runs.get(index=0)
    TaskResult.objects.create(
        task_id=step.task_id, status="FAILURE",
        result='{"exc_type": "TimeLimitExceeded", "exc_message": [60]}',
    )
    services.step_fail_by_task_id(task_id=step.task_id)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == "step 1 (math.add): TimeLimitExceeded: 60"


def test_finish_keeps_the_last_result_or_collects_all(user, data_dir):
    run = submit_math(user)
    services.run_finish(run_id=run.id, result=12)
    run.refresh_from_db()
    assert (run.status, run.result) == (RunStatus.COMPLETED, 12)
    (data_dir / "a").write_text("a")
    io_run = services.run_submit_task(task_type="io_chain", user=user, config={
        "file_operations": ["stat", "checksum"], "target_files": ["a"]})
    io_run.step_runs.filter(index=0).update(result={"n": 1})
    io_run.step_runs.filter(index=1).update(result={"n": 2})
    services.run_finish(run_id=io_run.id, result={"n": 2})
    io_run.refresh_from_db()
    assert io_run.result == [{"n": 1}, {"n": 2}]


def test_cancel_of_a_finished_run_is_refused(user):
    run = submit_math(user)
    services.run_finish(run_id=run.id, result=1)
    with unchanged(), pytest.raises(ChainError, match="finished"):
        services.run_cancel(run=run)


def test_delete_removes_task_results(user):
    run = submit_math(user)
    step = run.step_runs.get(index=0)
    TaskResult.objects.create(task_id=step.task_id, status="SUCCESS", result="6")
    TaskResult.objects.create(task_id="unrelated", status="SUCCESS", result="1")
    services.run_delete(run=run)
    assert not Run.objects.exists() and not StepRun.objects.exists()
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["unrelated"]


def spec(key="math.add", params=None, stage=0):
    return StepSpec(step_type=key, params={"numbers": [1]} if params is None else params,
                    stage=stage)


def test_chain_save_validates_every_step_and_writes_nothing_on_error(user):
    with pytest.raises(ChainError) as info:
        services.chain_save(name="c", steps=[
            spec(), spec("celery.backend_cleanup"), spec(params={"numbers": ["x"]}),
        ], user=user)
    assert info.value.errors == {
        "steps.1.step_type": ["unknown step type 'celery.backend_cleanup'"],
        "steps.2.params.numbers.0": ["must be a number"],
    }
    assert not Chain.objects.exists()
    with pytest.raises(ChainError) as info:
        services.chain_save(name="c", steps=[])
    assert "steps" in info.value.errors
    assert not Chain.objects.exists()


def test_chain_save_replaces_steps_and_keeps_names_unique(user):
    chain = services.chain_save(name="c", steps=[spec(), spec(stage=1)], user=user)
    assert chain.created_by == user
    services.chain_save(chain=chain, name="c", steps=[spec("math.multiply")])
    assert list(chain.steps.values_list("position", "step_type")) == [(0, "math.multiply")]
    with unchanged(), pytest.raises(ChainError) as info:
        services.chain_save(name="c", steps=[spec()])
    assert "name" in info.value.errors


def test_run_start_snapshots_steps(user, django_capture_on_commit_callbacks):
    chain = services.chain_save(name="c", steps=[spec(), spec("io.stat", {"path": "x"}, 1)],
                                default_inputs=[1, 2], user=user)
    with django_capture_on_commit_callbacks() as callbacks:
        run = services.run_start(chain=chain, trigger=RunTrigger.ADMIN, user=user)
    assert len(callbacks) == 1
    assert run.inputs == [1, 2]
    services.chain_save(chain=chain, name="c", steps=[spec("math.power")])
    assert list(run.step_runs.values_list("step_type", "queue")) == [
        ("math.add", "math"), ("io.stat", "io")]


def test_run_start_refuses_disabled_chains_and_bad_inputs(user):
    chain = services.chain_save(name="c", steps=[spec()], enabled=False)
    with pytest.raises(ChainError) as info:
        services.run_start(chain=chain, user=user)
    assert "chain" in info.value.errors
    chain.enabled = True
    chain.save()
    with pytest.raises(ChainError) as info:
        services.run_start(chain=chain, inputs="x" * 70_000, user=user)
    assert "inputs" in info.value.errors
    assert not Run.objects.exists()


def test_step_time_limits_end_within_the_visibility_timeout(settings):
    settings.CHAINS_VISIBILITY_TIMEOUT = 600
    assert services.max_step_time_limit() == 545  # 545 + 54 = 599 < 600
    with pytest.raises(ChainError) as info:
        services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0, time_limit=546)])
    assert "steps.0.time_limit" in info.value.errors
    assert not Chain.objects.exists()


class _Published:
    """Stands in for the broker in unit tests: records what would have been published."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.away = False  # True: the broker refuses every canvas

    def __call__(self, run, step_runs, *, first_input, time_limit_default):
        recorder = self

        class _Signature:
            def apply_async(self):
                if recorder.away:
                    raise ConnectionError("the broker is away")
                recorder.calls.append((str(run.id), [sr.index for sr in step_runs], first_input))

        return _Signature()


@pytest.fixture
def published(monkeypatch, settings) -> _Published:
    """Canvases recorded instead of sent. The stall tests jump far ahead in time, where every
    open run would look orphaned too: orphan recovery (tested on its own) stays out of them."""
    recorder = _Published()
    monkeypatch.setattr(runs, "build_run_signature", recorder)
    settings.CHAINS_ORPHAN_SECONDS = 10**9
    return recorder


@pytest.mark.django_db(transaction=True)  # the reconciler publishes once readied runs commit
def test_reconcile_publishes_runs_the_broker_never_got(user, published, settings):
    from datetime import timedelta

    from django.utils import timezone

    published.away = True
    run = submit_math(user)
    assert Run.objects.get(id=run.id).published_at is None
    published.away = False
    assert services.reconcile_runs() == {"published": 0, "resumed": 0, "failed": 0,
                                         "recovered": 0, "approvals_timed_out": 0,
                                                "children_ended": 0,
                                                "queued_started": 0}
    later = timezone.now() + timedelta(seconds=settings.CHAINS_PUBLISH_GRACE_SECONDS + 1)
    assert services.reconcile_runs(now=later)["published"] == 1
    assert published.calls == [(str(run.id), [0, 1], {})]
    run.refresh_from_db()
    assert run.published_at is not None and run.status == RunStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_reconcile_resumes_a_stalled_run_from_its_last_completed_stage(
    user, published, settings
):
    from datetime import timedelta

    from django.utils import timezone

    run = submit_math(user, iterations=3)
    services.run_publish(run_id=run.id)
    first = run.step_runs.get(index=0)
    services.step_execute(step_run_id=first.id, previous={})  # 6, then the message is lost
    old_ids = set(run.step_runs.exclude(index=0).values_list("task_id", flat=True))
    stalled = timezone.now() + timedelta(seconds=settings.CHAINS_STALL_SECONDS + 1)
    assert services.reconcile_runs(now=stalled) == {"published": 0, "resumed": 1, "failed": 0,
                                                       "recovered": 0, "approvals_timed_out": 0,
                                                "children_ended": 0,
                                                "queued_started": 0}
    assert published.calls[-1] == (str(run.id), [1, 2], 6)  # from step 2, with step 1's result
    run.refresh_from_db()
    assert run.resumes == 1
    new_ids = set(run.step_runs.exclude(index=0).values_list("task_id", flat=True))
    assert not new_ids & old_ids  # fresh task ids: the old ones may be revoked
    assert run.step_runs.get(index=0).task_id == first.task_id


def test_reconcile_fails_a_run_that_keeps_stalling(user, published, settings):
    from datetime import timedelta

    from django.utils import timezone

    run = submit_math(user)
    services.run_publish(run_id=run.id)
    Run.objects.filter(id=run.id).update(resumes=settings.CHAINS_MAX_RESUMES)
    stalled = timezone.now() + timedelta(seconds=settings.CHAINS_STALL_SECONDS + 1)
    assert services.reconcile_runs(now=stalled)["failed"] == 1
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error.startswith(f"no progress for {settings.CHAINS_STALL_SECONDS + 1}s after 3 ")
    assert set(run.step_runs.values_list("status", flat=True)) == {RunStatus.CANCELLED}


@pytest.mark.django_db(transaction=True)
def test_a_running_step_extends_the_deadline_by_its_hard_time_limit(user, published, settings):
    from datetime import timedelta

    from django.utils import timezone

    run = submit_math(user)
    services.run_publish(run_id=run.id)
    run.step_runs.filter(index=0).update(status=RunStatus.RUNNING, time_limit=100)
    soon = timezone.now() + timedelta(seconds=settings.CHAINS_STALL_SECONDS + 50)
    assert services.reconcile_runs(now=soon)["resumed"] == 0
    later = timezone.now() + timedelta(seconds=settings.CHAINS_STALL_SECONDS + 111)
    assert services.reconcile_runs(now=later)["resumed"] == 1


def test_retry_runs_again_from_the_failed_step(user, published):
    run = submit_math(user, iterations=3)
    services.step_execute(step_run_id=run.step_runs.get(index=0).id, previous={})
    failed = run.step_runs.get(index=1)
    services.step_fail(step_run_id=failed.id, error="boom")
    with unchanged(), pytest.raises(ChainError, match="finished"):  # FAILED: nothing to cancel
        services.run_cancel(run=Run.objects.get(id=run.id))
    run = services.run_retry(run=Run.objects.get(id=run.id))
    assert (run.status, run.error, run.steps_done) == (RunStatus.PENDING, "", 1)
    steps = list(run.step_runs.order_by("index"))
    assert [s.status for s in steps] == [RunStatus.COMPLETED, RunStatus.PENDING,
                                        RunStatus.PENDING]
    assert steps[1].task_id != failed.task_id and steps[1].attempts == 0
    services.run_publish(run_id=run.id)
    assert published.calls[-1] == (str(run.id), [1, 2], 6)
    with unchanged(), pytest.raises(ChainError, match="not retryable"):
        services.run_retry(run=run)


def test_retry_takes_the_chains_fixed_params(user, published):
    chain = services.chain_save(name="fragile", steps=[
        StepSpec("math.add", {"numbers": [1]}, 0), StepSpec("math.divide", {"numbers": [0]}, 1)])
    run = services.run_start(chain=chain, user=user)
    services.step_execute(step_run_id=run.step_runs.get(index=0).id, previous={})
    services.step_fail(step_run_id=run.step_runs.get(index=1).id, error="division by zero")
    services.chain_save(chain=chain, name="fragile", steps=[
        StepSpec("math.add", {"numbers": [100]}, 0), StepSpec("math.divide", {"numbers": [2]}, 1)])
    run = services.run_retry(run=Run.objects.get(id=run.id))
    steps = list(run.step_runs.order_by("index"))
    assert steps[0].params == {"numbers": [1]}  # finished: its stored result is reused
    assert steps[1].params == {"numbers": [2]}  # unfinished: takes the fix
    assert services.step_execute(step_run_id=steps[1].id, previous=1) == 0.5


def test_an_older_delivery_of_a_step_changes_nothing(user):
    run = submit_math(user)
    step = run.step_runs.get(index=0)
    with pytest.raises(services.StepSkipped, match="older delivery"):
        services.step_execute(step_run_id=step.id, previous={}, task_id="an-old-task-id")
    services.step_fail(step_run_id=step.id, error="late", task_id="an-old-task-id")
    step.refresh_from_db()
    run.refresh_from_db()
    assert (step.status, step.attempts, run.status) == (RunStatus.PENDING, 0, RunStatus.PENDING)
    assert services.step_execute(step_run_id=step.id, previous={}, task_id=step.task_id) == 6


def test_two_retries_at_once_make_one(user, published):
    run = submit_math(user)
    services.step_fail(step_run_id=run.step_runs.get(index=0).id, error="boom")
    stale = Run.objects.get(id=run.id)
    services.run_retry(run=Run.objects.get(id=run.id))
    with unchanged(), pytest.raises(ChainError, match="not retryable"):
        services.run_retry(run=stale)  # loaded as FAILED before the first retry


def test_delete_of_a_run_that_finished_meanwhile(user):
    run = submit_math(user)
    stale = Run.objects.get(id=run.id)
    services.run_finish(run_id=run.id, result=1)
    services.run_delete(run=stale)
    assert not Run.objects.filter(id=run.id).exists()


@pytest.mark.django_db(transaction=True)
def test_reconciler_does_not_count_a_resume_the_broker_refused(user, published, settings):
    from datetime import timedelta

    from django.utils import timezone

    run = submit_math(user)
    assert Run.objects.get(id=run.id).published_at is not None
    published.away = True  # and stays away when the stalled run is resumed
    stalled = timezone.now() + timedelta(seconds=settings.CHAINS_STALL_SECONDS + 1)
    assert services.reconcile_runs(now=stalled)["resumed"] == 0
    assert Run.objects.get(id=run.id).resumes == 0


def test_saving_refuses_stages_whose_input_does_not_fit(user):
    with unchanged(), pytest.raises(ChainError) as info:
        services.chain_save(name="mismatch", user=user, steps=[
            StepSpec("data.load", {"path": "in.csv"}, 0), StepSpec("math.add", {}, 1)])
    assert info.value.errors == {"steps.1.step_type": [
        "stage 1: math.add needs a number or a list of numbers, but the stage before gives "
        "a file"]}
    with unchanged(), pytest.raises(ChainError) as info:  # the first stage gets the defaults
        services.chain_save(name="record", user=user, default_inputs={"a": 1},
                            steps=[StepSpec("math.add", {}, 0)])
    assert list(info.value.errors) == ["steps.0.step_type"]
