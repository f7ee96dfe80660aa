"""Every write: starting, publishing, executing, finishing, cancelling and deleting runs, and
saving chains. Admin, API, commands, tasks and beat all come through here."""
import json
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, timedelta
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce, Now
from django.utils import timezone
from django_celery_results.models import TaskResult
from rest_framework.authtoken.models import Token

from chains import states
from chains.bounds import check_inputs, check_text, json_problem
from chains.broker import Holdings, holdings
from chains.canvas import build_run_signature
from chains.errors import ChainError, Conflict, LimitReached, NotAllowed
from chains.models import (
    Chain,
    ChainSchedule,
    IdempotencyKey,
    ResultMode,
    Run,
    RunStatus,
    RunTrigger,
    ScheduleKind,
    Step,
    StepRun,
    WorkerHeartbeat,
)
from chains.permissions import can_read_chain_inputs, can_schedule_chain
from chains.presets import PRESETS, Preset, StepSpec, build_preset
from chains.queues import queue_problem
from chains.steps import STEP_TYPES, ParamsInvalid, StepContext, StepFailed
from config.celery import app
from config.time_limits import hard_time_limit

logger = logging.getLogger(__name__)

MAX_STAGE = 10_000
MAX_STEP_NAME = 100
MAX_CHAIN_NAME = 200


class StepSkipped(Exception):
    """The step's run was cancelled, failed or deleted: do not run it."""


# --- Chains -------------------------------------------------------------------------------


def max_step_time_limit() -> int:
    """The longest soft time limit whose hard limit still ends within the broker's
    visibility timeout."""
    limit = settings.CHAINS_VISIBILITY_TIMEOUT
    while limit > 1 and hard_time_limit(limit) >= settings.CHAINS_VISIBILITY_TIMEOUT:
        limit -= 1
    return limit


def validate_step_specs(specs: list[StepSpec], *, prefix: str = "steps") -> list[StepSpec]:
    """Each step's type is in the registry and its params fit the type's schema."""
    errors: dict[str, list[str]] = {}
    checked: list[StepSpec] = []
    max_time_limit = max_step_time_limit()
    if not specs:
        errors[prefix] = ["a chain needs at least one step"]
    if len(specs) > settings.CHAINS_MAX_STEPS:
        errors[prefix] = [f"{len(specs)} steps is over the limit of {settings.CHAINS_MAX_STEPS}"]
    for index, spec in enumerate(specs):
        if not 0 <= spec.max_retries <= 10:
            errors[f"{prefix}.{index}.max_retries"] = ["must be between 0 and 10"]
        if not 0 <= spec.stage <= MAX_STAGE:
            errors[f"{prefix}.{index}.stage"] = [f"must be between 0 and {MAX_STAGE}"]
        check_text(errors, f"{prefix}.{index}.name", spec.name, MAX_STEP_NAME)
        if problem := queue_problem(spec.queue):
            errors[f"{prefix}.{index}.queue"] = [problem]
        if problem := json_problem(spec.params, max_bytes=settings.CHAINS_MAX_INPUT_BYTES):
            errors[f"{prefix}.{index}.params"] = [problem]
            continue
        if spec.time_limit is not None and spec.time_limit > max_time_limit:
            errors[f"{prefix}.{index}.time_limit"] = [
                f"must be at most {max_time_limit} s, so that the step ends before "
                "CHAINS_VISIBILITY_TIMEOUT and is never delivered twice"
            ]
        step_type = STEP_TYPES.get(spec.step_type)
        if step_type is None:
            errors[f"{prefix}.{index}.step_type"] = [f"unknown step type {spec.step_type!r}"]
            continue
        try:
            params = step_type.validate_params(spec.params, prefix=f"{prefix}.{index}.params")
        except ParamsInvalid as exc:
            errors.update(exc.messages())
            continue
        checked.append(StepSpec(**{**asdict(spec), "params": params}))
    if errors:
        raise ChainError("invalid steps", errors=errors)
    return checked


@transaction.atomic
def chain_save(
    *,
    chain: Chain | None = None,
    name: str,
    description: str = "",
    enabled: bool = True,
    default_inputs: dict | None = None,
    steps: list[StepSpec],
    user=None,
) -> Chain:
    """Create a chain, or replace an existing chain's fields and steps, all or nothing."""
    errors: dict[str, list[str]] = {}
    check_text(errors, "name", name, MAX_CHAIN_NAME)
    check_text(errors, "description", description, settings.CHAINS_MAX_DESCRIPTION_CHARS)
    if errors:
        raise ChainError("invalid chain", errors=errors)
    checked = validate_step_specs(steps)
    check_inputs(default_inputs or {}, field="default_inputs")
    if Chain.objects.filter(name=name).exclude(pk=getattr(chain, "pk", None)).exists():
        raise ChainError("name taken", errors={"name": [f"a chain named {name!r} exists"]})
    if chain is None:
        chain = Chain(created_by=user if getattr(user, "is_authenticated", False) else None)
    chain.name, chain.description, chain.enabled = name, description, enabled
    chain.default_inputs = default_inputs or {}
    try:
        with transaction.atomic():
            chain.save()
    except IntegrityError as exc:  # another request took the name since the check above
        raise ChainError("name taken", errors={"name": [f"a chain named {name!r} exists"]}
                         ) from exc
    chain.steps.all().delete()
    Step.objects.bulk_create(
        Step(chain=chain, position=index, **asdict(spec)) for index, spec in enumerate(checked)
    )
    return chain


@transaction.atomic
def chain_delete(*, chain: Chain) -> None:
    """The chain, its steps and its schedules with their beat entries; its runs stay, without
    their chain."""
    for schedule in chain.schedules.all():
        schedule_delete(schedule=schedule)
    chain.delete()


def chain_problems(chain: Chain) -> list[str]:
    """What would stop the chain from running as meant, without running it: unknown step
    types, params that do not fit, time limits, stages whose input does not fit, and the
    canvas compiled from it all."""
    from types import SimpleNamespace

    from chains.compatibility import stage_problems, value_kind

    specs = chain_step_specs(chain)
    try:
        checked = validate_step_specs(specs)
    except ChainError as exc:
        return [f"{field}: {reason}" for field, reasons in exc.errors.items()
                for reason in reasons]
    problems = stage_problems(checked, first_input=value_kind(chain.default_inputs))
    fake_steps = [SimpleNamespace(id=i, index=i, stage=s.stage, step_type=s.step_type,
                                  queue=s.queue or STEP_TYPES[s.step_type].default_queue,
                                  task_id=f"check-{i}", time_limit=s.time_limit)
                  for i, s in enumerate(checked)]
    build_run_signature(SimpleNamespace(id="check"), fake_steps, first_input=None,
                        time_limit_default=settings.CELERY_TASK_SOFT_TIME_LIMIT)
    return problems


def chain_step_specs(chain: Chain) -> list[StepSpec]:
    return [
        StepSpec(
            step_type=step.step_type, params=step.params, stage=step.stage, name=step.name,
            max_retries=step.max_retries, time_limit=step.time_limit, queue=step.queue,
        )
        for step in chain.steps.order_by("position")
    ]


@transaction.atomic
def chain_duplicate(*, chain: Chain, user=None) -> Chain:
    """A copy of the chain and its steps under a free name ("name (copy)", "(copy 2)", ...)."""
    name, n = f"{chain.name} (copy)", 1
    while Chain.objects.filter(name=name).exists():
        n += 1
        name = f"{chain.name} (copy {n})"
    return chain_save(name=name, description=chain.description, enabled=chain.enabled,
                      default_inputs=chain.default_inputs, steps=chain_step_specs(chain),
                      user=user)


# --- Starting runs --------------------------------------------------------------------------


def run_start(
    *, chain: Chain, inputs: Any = None, trigger: str = RunTrigger.API, user=None,
    schedule: ChainSchedule | None = None, scheduled_for=None,
) -> Run:
    """Start a run of `chain`: snapshot its steps now, publish once the transaction commits."""
    if not chain.enabled:
        raise ChainError("disabled", errors={"chain": [f"chain {chain.name!r} is disabled"]})
    if (inputs is None and chain.default_inputs and user is not None
            and not can_read_chain_inputs(user, chain)):
        raise ChainError("inputs", errors={"inputs": [
            "required: this chain's default inputs are its author's"]})
    inputs = chain.default_inputs if inputs is None else inputs
    check_inputs(inputs, field="inputs")
    specs = validate_step_specs(chain_step_specs(chain))
    return _run_create(
        preset=Preset(specs=specs, inputs=inputs), chain=chain, trigger=trigger, user=user,
        description=chain.description, schedule=schedule, scheduled_for=scheduled_for,
    )


def run_start_once(
    *, user, key: str | None, fingerprint: str, start: Callable[[], Run],
) -> tuple[Run, bool]:
    """`start()`, remembered under the user's Idempotency-Key `key`: a repeat of the same
    request (same `fingerprint`) within CHAINS_IDEMPOTENCY_SECONDS gives the run it started
    (and False), so a client whose answer was lost may send it again; another request under
    the same key is a Conflict. Without a key, simply `start()`."""
    if not key:
        return start(), True
    if len(key) > 255:
        raise ChainError("key", errors={"Idempotency-Key": ["must be at most 255 characters"]})
    fresh = timezone.now() - timedelta(seconds=settings.CHAINS_IDEMPOTENCY_SECONDS)
    for _ in range(2):  # a second look when a request with the same key won the race
        earlier = (IdempotencyKey.objects.select_related("run")
                   .filter(user=user, key=key, created_at__gte=fresh).first())
        if earlier is not None:
            if earlier.fingerprint != fingerprint:
                raise Conflict("key reused", errors={"Idempotency-Key": [
                    "was used for a different request; use a new key for a new request"]})
            return earlier.run, False
        try:
            with transaction.atomic():
                IdempotencyKey.objects.filter(user=user, key=key,
                                              created_at__lt=fresh).delete()  # expired
                run = start()
                IdempotencyKey.objects.create(user=user, key=key, fingerprint=fingerprint,
                                              run=run)
            return run, True
        except IntegrityError:
            continue
    raise Conflict("key busy", errors={"Idempotency-Key": ["is in use; send it again"]})


def run_submit_task(
    *, task_type: str, config: Any, description: str = "", user=None,
    trigger: str = RunTrigger.API,
) -> Run:
    """The seed contract: start a run of one of the seed task types."""
    if task_type not in PRESETS:
        raise ChainError("task_type", errors={
            "task_type": [f"unknown task type {task_type!r}; one of {', '.join(PRESETS)}"]
        })
    try:
        preset = build_preset(task_type, config)
    except ParamsInvalid as exc:
        raise ChainError("invalid config", errors=exc.messages()) from exc
    return _run_create(
        preset=preset, task_type=task_type, description=description, trigger=trigger, user=user,
    )


def run_again(*, run: Run, trigger: str = RunTrigger.ADMIN, user=None) -> Run:
    """A new run with the same steps and inputs as `run` (its chain may have changed since)."""
    if run.chain is not None and not run.chain.enabled:
        raise ChainError("disabled", errors={"chain": [f"chain {run.chain.name!r} is disabled"]})
    specs = validate_step_specs([
        StepSpec(step_type=sr.step_type, params=sr.params, stage=sr.stage, name=sr.name,
                 max_retries=sr.max_retries, time_limit=sr.time_limit, queue=sr.queue)
        for sr in run.step_runs.order_by("index")])
    return _run_create(
        preset=Preset(specs=specs, inputs=run.inputs, result_mode=run.result_mode),
        chain=run.chain, task_type=run.task_type, description=run.description,
        trigger=trigger, user=user,
    )


def _run_create(
    *, preset: Preset, trigger: str, user=None, chain: Chain | None = None,
    task_type: str = "", description: str = "", schedule: ChainSchedule | None = None,
    scheduled_for=None,
) -> Run:
    run = Run(
        schedule=schedule,
        scheduled_for=scheduled_for,
        chain=chain,
        task_type=task_type,
        description=description,
        trigger=trigger,
        inputs=preset.inputs,
        result_mode=preset.result_mode,
        steps_total=len(preset.specs),
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    step_runs = [
        StepRun(
            run=run,
            index=index,
            stage=spec.stage,
            name=spec.name,
            step_type=spec.step_type,
            params=spec.params,
            queue=spec.queue or STEP_TYPES[spec.step_type].default_queue,
            max_retries=spec.max_retries,
            time_limit=spec.time_limit,
            task_id=str(uuid.uuid4()),
        )
        for index, spec in enumerate(preset.specs)
    ]
    # Rows are built before the transaction: on SQLite it holds the write lock from BEGIN.
    with transaction.atomic():
        _check_active_runs(run.created_by)
        run.save(force_insert=True)
        # Kept on the instance: the publish after commit (chains.signals) needs no read back.
        run.created_step_runs = StepRun.objects.bulk_create(step_runs)
    return run


def _check_active_runs(user) -> None:
    """Users who are not staff have at most CHAINS_MAX_ACTIVE_RUNS_PER_USER runs open."""
    limit = settings.CHAINS_MAX_ACTIVE_RUNS_PER_USER
    if user is None or user.is_staff or not limit:
        return
    open_runs = Run.objects.filter(created_by=user, status__in=states.OPEN)[:limit].count()
    if open_runs >= limit:
        raise LimitReached("too many open runs", errors={"non_field_errors": [
            f"you have {open_runs} runs PENDING or RUNNING; the limit is {limit} "
            "(CHAINS_MAX_ACTIVE_RUNS_PER_USER): wait for some to finish"]})


def run_publish(*, run_id, created: Run | None = None) -> bool:
    """Send an unfinished run's canvas to the broker, from its first unfinished stage. If the
    broker cannot be reached the run keeps its rows and stays unpublished (the outbox):
    `reconcile_runs` publishes it again. `created` is a run `_run_create` has just committed,
    with its step runs in memory: published whole, without reading it back."""
    step_runs = getattr(created, "created_step_runs", None)
    if step_runs and all(step_run.pk is not None for step_run in step_runs):
        run, remaining, first_input = created, step_runs, created.inputs
    else:
        run = Run.objects.filter(id=run_id, status__in=states.OPEN).first()
        if run is None:
            return False
        remaining, first_input = _resume_point(run)
    if not remaining:  # every step is done; only the finaliser was lost
        run_finish(run_id=run.id, result=first_input)
        return True
    signature = build_run_signature(
        run, remaining, first_input=first_input,
        time_limit_default=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    )
    try:
        signature.apply_async()
    except Exception:
        logger.exception("run %s is not published: the broker could not be reached", run_id)
        return False
    now = timezone.now()
    Run.objects.filter(id=run.id).update(published_at=now, last_progress_at=now)
    return True


def _resume_point(run: Run) -> tuple[list[StepRun], Any]:
    """The steps from the first stage that is not COMPLETED, and the input of that stage: the
    run's inputs, or the previous stage's result (a list when it was parallel)."""
    step_runs = list(run.step_runs.order_by("stage", "index"))
    previous: Any = run.inputs
    for stage, members in groupby(step_runs, key=lambda sr: sr.stage):
        members = list(members)
        if any(sr.status != RunStatus.COMPLETED for sr in members):
            return [sr for sr in step_runs if sr.stage >= stage], previous
        previous = members[0].result if len(members) == 1 else [sr.result for sr in members]
    return [], previous


def _renew_task_ids(run: Run) -> None:
    """Fresh task ids for the run's unfinished steps before it is published again: the old
    ids may be revoked, and their TaskResult rows describe attempts that are over."""
    unfinished = list(run.step_runs.exclude(status=RunStatus.COMPLETED))
    TaskResult.objects.filter(task_id__in=[sr.task_id for sr in unfinished]).delete()
    for step_run in unfinished:
        step_run.task_id = str(uuid.uuid4())
    StepRun.objects.bulk_update(unfinished, ["task_id"])


def _take_fixed_params(run: Run) -> None:
    """If the run's chain still has the same steps (types and stages), its unfinished steps
    take the chain's current settings: retrying after fixing a step's params uses the fix."""
    if run.chain is None:
        return
    specs = validate_step_specs(chain_step_specs(run.chain))
    step_runs = list(run.step_runs.order_by("index"))
    if [(s.step_type, s.stage) for s in specs] != [(sr.step_type, sr.stage) for sr in step_runs]:
        return
    unfinished = [sr for sr in step_runs if sr.status != RunStatus.COMPLETED]
    for step_run in unfinished:
        spec = specs[step_run.index]
        step_run.params, step_run.time_limit = spec.params, spec.time_limit
        step_run.max_retries = spec.max_retries
        step_run.queue = spec.queue or STEP_TYPES[spec.step_type].default_queue
    StepRun.objects.bulk_update(unfinished, ["params", "time_limit", "max_retries", "queue"])


@transaction.atomic
def run_retry(*, run: Run) -> Run:
    """Run a FAILED or CANCELLED run again from its first unfinished step, reusing the stored
    results of the steps before it. Unfinished steps take their chain's current params when
    the chain still has the same steps."""
    now = timezone.now()
    _check_active_runs(run.created_by)
    claimed = states.move(  # from FAILED or CANCELLED
        Run.objects.filter(id=run.id), RunStatus.PENDING, error="", result=None,
        started_at=None, finished_at=None, published_at=None, last_progress_at=now, resumes=0)
    if not claimed:  # the update is the check: two retries at once make one
        run.refresh_from_db()
        raise ChainError("not retryable", errors={
            "status": [f"only FAILED or CANCELLED runs can be retried; this one is {run.status}"]
        })
    states.move(run.step_runs.all(), RunStatus.PENDING, error="", attempts=0,
                started_at=None, finished_at=None, result=None)
    _take_fixed_params(run)
    _renew_task_ids(run)
    transaction.on_commit(partial(run_publish, run_id=run.id))
    run.refresh_from_db()
    return run


# --- Executing steps (called by chains.tasks) ----------------------------------------------


def step_execute(
    *, step_run_id: int, previous: Any, task_id: str | None = None, finish_run: bool = False,
    worker: str = "", worker_pid: int | None = None,
) -> Any:
    """Run one step. A step already COMPLETED (a redelivered message) returns its stored
    result without doing its work again. A step started more often than its retries allow
    plus CHAINS_MAX_DELIVERIES (its worker died each time) fails instead of running again.
    A delivery whose `task_id` is no longer the step's (the run was retried or resumed under
    fresh ids since) is skipped. `finish_run` marks the run's last step, which completes the
    run in the same transaction as itself (the canvas then needs no finaliser task)."""
    step_run = StepRun.objects.select_related("run").filter(id=step_run_id).first()
    if step_run is None:
        raise StepSkipped(f"step run {step_run_id} no longer exists")
    if task_id is not None and step_run.task_id != task_id:
        raise StepSkipped(f"task {task_id} is an older delivery of step run {step_run_id}")
    if step_run.status == RunStatus.COMPLETED:
        return step_run.result
    run = step_run.run
    if run.status in states.FINAL or step_run.status not in states.OPEN:
        raise StepSkipped(f"run {run.id} is {run.status}")
    starts_allowed = step_run.max_retries + settings.CHAINS_MAX_DELIVERIES
    if step_run.attempts >= starts_allowed:
        raise StepFailed(
            f"started {step_run.attempts} times without finishing (its worker died each time)"
        )
    _step_mark_running(step_run, run, worker=worker, worker_pid=worker_pid)
    context = StepContext(run_id=str(run.id), step_index=step_run.index,
                          may_read_run=partial(_may_read_run, run))
    result = STEP_TYPES[step_run.step_type].execute(step_run.params, previous, context)
    if problem := json_problem(result, max_bytes=settings.CHAINS_MAX_RESULT_BYTES):
        raise StepFailed(f"its result {problem}")
    now = timezone.now()
    with transaction.atomic():
        done = states.move(StepRun.objects.filter(id=step_run.id, task_id=step_run.task_id),
                           RunStatus.COMPLETED, result=result, error="", finished_at=now)
        if done and finish_run:
            _run_complete(run, result=result, now=now, steps_done=F("steps_done") + 1)
        elif done:
            Run.objects.filter(id=run.id).update(
                steps_done=F("steps_done") + 1, last_progress_at=now
            )
    return result


def _may_read_run(run: Run, other_run_id: str) -> bool:
    """Whether `run` may read another run's output folder: only if both the run's owner and
    its chain's author may (a user: their own runs; staff or an operator: any), so that
    neither whoever starts a chain nor whoever wrote it reads more through the other. Asked
    only when a step reads such a folder."""
    readers = {run.created_by_id, run.chain.created_by_id if run.chain_id else None} - {None}
    staff = set(get_user_model().objects.filter(id__in=readers, is_staff=True)
                .values_list("id", flat=True))
    users = readers - staff
    if not users:
        return True
    if len(users) > 1:
        return False
    try:
        other = uuid.UUID(other_run_id)
    except ValueError:
        return False
    return Run.objects.filter(id=other, created_by_id=users.pop()).exists()


def _step_mark_running(step_run: StepRun, run: Run, *, worker: str = "",
                       worker_pid: int | None = None) -> None:
    """The step is RUNNING on `worker` (its start counted towards the delivery limit); the
    run becomes RUNNING with its first step. The step's own start time is the run's progress
    while it runs (see `_is_stalled`), so later steps write nothing to the run row here."""
    now = timezone.now()
    started = states.move(
        StepRun.objects.filter(id=step_run.id, task_id=step_run.task_id), RunStatus.RUNNING,
        started_at=now, attempts=F("attempts") + 1, worker=worker[:255], worker_pid=worker_pid)
    if not started:
        raise StepSkipped(f"step run {step_run.id} was cancelled or retried meanwhile")
    if run.status == RunStatus.PENDING:
        states.move(Run.objects.filter(id=run.id), RunStatus.RUNNING,
                    started_at=Coalesce(F("started_at"), Value(now)), last_progress_at=now)


def step_max_retries(*, step_run_id: int) -> int:
    return StepRun.objects.filter(id=step_run_id).values_list("max_retries", flat=True).first() or 0


def step_fail(*, step_run_id: int, error: str, task_id: str | None = None) -> None:
    """A step failed for good: the step and its run become FAILED with the step's error, and
    any other outstanding step of the run is cancelled. A report from an older delivery
    (`task_id` no longer the step's) changes nothing."""
    step_run = StepRun.objects.filter(id=step_run_id).first()
    if step_run is None or (task_id is not None and step_run.task_id != task_id):
        return
    now = timezone.now()
    run_error = f"step {step_run.index + 1} ({step_run.step_type}): {error}"
    with transaction.atomic():
        states.move(StepRun.objects.filter(id=step_run.id), RunStatus.FAILED, error=error,
                    finished_at=now)
        failed = states.move(Run.objects.filter(id=step_run.run_id), RunStatus.FAILED,
                             error=run_error, finished_at=now)
        if failed:
            _cancel_outstanding_steps(step_run.run_id)


def step_fail_by_task_id(*, task_id: str) -> None:
    """Error callback path: the worker recorded a failure (time limit, lost process) that the
    step itself could not report."""
    step_run = StepRun.objects.filter(task_id=task_id).only("id", "status").first()
    if step_run is None or step_run.status not in states.OPEN:
        return
    task_result = TaskResult.objects.filter(task_id=task_id, status="FAILURE").first()
    if task_result is None:  # not a recorded failure (a retry, or a lost write): the
        return  # reconciler resumes the run if it really stalled
    step_fail(step_run_id=step_run.id, error=_task_error(task_result))


def _task_error(task_result: TaskResult) -> str:
    try:
        info = json.loads(task_result.result or "null")
    except ValueError:
        info = None
    if isinstance(info, dict) and "exc_type" in info:
        message = info.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(part) for part in message)
        return f"{info['exc_type']}: {message}" if message else info["exc_type"]
    return task_result.status


def run_finish(*, run_id, result: Any) -> None:
    """The canvas's finaliser (after a parallel last stage): the run is COMPLETED."""
    run = Run.objects.filter(id=run_id).only("id", "result_mode").first()
    if run is not None:
        _run_complete(run, result=result, now=timezone.now())


def _run_complete(run: Run, *, result: Any, now, **fields: Any) -> None:
    """An open run becomes COMPLETED with its result: the last stage's, or every step's."""
    if run.result_mode == ResultMode.ALL_STEPS:
        result = list(run.step_runs.order_by("index").values_list("result", flat=True))
    states.move(Run.objects.filter(id=run.id), RunStatus.COMPLETED, result=result,
                finished_at=now, last_progress_at=now, **fields)


# --- Cancelling and deleting ----------------------------------------------------------------


def _cancel_outstanding_steps(run_id) -> list[str]:
    """Mark the run's open steps CANCELLED and revoke their tasks once this commits."""
    outstanding = StepRun.objects.filter(run_id=run_id, status__in=states.OPEN)
    task_ids = list(outstanding.values_list("task_id", flat=True))
    states.move(outstanding, RunStatus.CANCELLED, finished_at=timezone.now())
    if task_ids:
        transaction.on_commit(lambda: _revoke(task_ids))
    return task_ids


def _revoke(task_ids: list[str]) -> None:
    try:
        app.control.revoke(task_ids)
    except Exception:
        logger.exception("could not revoke %d task(s); they will be skipped when they run",
                         len(task_ids))


@transaction.atomic
def run_cancel(*, run: Run, reason: str = "cancelled") -> Run:
    """Cancel an unfinished run: every outstanding task is revoked; a step already running
    finishes, but nothing after it runs."""
    cancelled = states.move(Run.objects.filter(id=run.id), RunStatus.CANCELLED, error=reason,
                            finished_at=timezone.now())
    if not cancelled:
        run.refresh_from_db()
        raise ChainError("finished", errors={"status": [f"run is already {run.status}"]})
    _cancel_outstanding_steps(run.id)
    run.refresh_from_db()
    return run


@transaction.atomic
def run_delete(*, run: Run) -> None:
    """Delete a run with its steps, their TaskResult rows and the files its steps wrote."""
    if run.status in states.OPEN:
        try:
            run_cancel(run=run, reason="deleted")
        except ChainError:
            pass  # it finished meanwhile: delete it all the same
    task_ids = list(run.step_runs.values_list("task_id", flat=True))
    TaskResult.objects.filter(task_id__in=task_ids).delete()
    run_id = str(run.id)
    run.delete()
    transaction.on_commit(lambda: _remove_run_files(run_id))


def _remove_run_files(run_id: str, listed: set[str] | None = None) -> None:
    """`listed`: the names in runs/, listed once by a caller removing many runs' files, so
    that runs without a folder (most) cost no stat."""
    if listed is not None and run_id not in listed:
        return
    runs_dir = (Path(settings.CHAINS_DATA_DIR) / "runs").resolve()
    target = (runs_dir / run_id).resolve()
    if target.parent == runs_dir and target.is_dir():
        shutil.rmtree(target, ignore_errors=True)


# --- Reconciling (beat and `manage.py reconcile_runs`) --------------------------------------


def _is_stalled(run: Run, now) -> bool:
    """No progress for CHAINS_STALL_SECONDS, plus the hard time limit of a step that is (or
    may still be) running. Progress is the run's last stamp or a running step's start."""
    running = list(run.step_runs.filter(status=RunStatus.RUNNING)
                   .values_list("time_limit", "started_at"))
    allowance = max(
        [hard_time_limit(limit or settings.CELERY_TASK_SOFT_TIME_LIMIT) for limit, _ in running],
        default=0,
    )
    progress = max([run.last_progress_at, *(started for _, started in running if started)])
    return progress < now - timedelta(seconds=settings.CHAINS_STALL_SECONDS + allowance)


def reconcile_runs(*, now=None) -> dict[str, int]:
    """The database is the ledger: publish runs whose publishing failed, resume runs that made
    no progress past their deadline (a lost message, a dead broker or worker) from the last
    completed step, and fail those that stalled CHAINS_MAX_RESUMES times."""
    now = now or timezone.now()
    report = {"published": 0, "resumed": 0, "failed": 0}
    IdempotencyKey.objects.filter(
        created_at__lt=now - timedelta(seconds=settings.CHAINS_IDEMPOTENCY_SECONDS)).delete()
    report["recovered"] = recover_orphans(now=now)
    grace = now - timedelta(seconds=settings.CHAINS_PUBLISH_GRACE_SECONDS)
    unpublished = Run.objects.filter(
        status=RunStatus.PENDING, published_at__isnull=True, created_at__lt=grace,
    ).filter(Q(last_progress_at__isnull=True) | Q(last_progress_at__lt=grace)
             ).values_list("id", flat=True)
    for run_id in list(unpublished):
        report["published"] += _reconcile_one(run_publish, run_id=run_id)
    stalled = Run.objects.filter(
        status__in=states.OPEN, published_at__isnull=False,
        last_progress_at__lt=now - timedelta(seconds=settings.CHAINS_STALL_SECONDS),
    )
    for run in list(stalled):
        if not _is_stalled(run, now):
            continue
        if run.resumes >= settings.CHAINS_MAX_RESUMES:
            report["failed"] += _fail_stalled(run, now)
        elif _claim_resume(run):
            _renew_task_ids(run)
            if _reconcile_one(run_publish, run_id=run.id):
                report["resumed"] += 1
            else:  # the broker is still away: this attempt does not count
                Run.objects.filter(id=run.id).update(resumes=F("resumes") - 1)
    return report


def recover_orphans(*, now=None) -> int:
    """Runs quiet for CHAINS_ORPHAN_SECONDS whose current stage no live worker holds: its
    steps RUNNING on a worker whose heartbeat stopped (or that restarted since), or PENDING
    with a message the broker no longer has or gave to a consumer that never started it.
    Each is published again from its last completed stage under fresh task ids, at once:
    a killed worker or an emptied broker costs seconds, not the stall deadline. Fresh ids are
    taken only while the steps are as they were read, so a late delivery of the old message
    is skipped and no step runs twice. Returns how many runs were published again."""
    now = now or timezone.now()
    quiet = now - timedelta(seconds=settings.CHAINS_ORPHAN_SECONDS)
    run_ids = list(Run.objects.filter(
        status__in=states.OPEN, published_at__isnull=False, last_progress_at__lt=quiet,
    ).order_by("last_progress_at").values_list("id", flat=True)[:ORPHAN_BATCH])
    if not run_ids:
        return 0
    unfinished = list(StepRun.objects.filter(run_id__in=run_ids).exclude(
        status=RunStatus.COMPLETED).order_by("run_id", "stage", "index"))
    alive = _live_workers()
    broker = None
    if any(step.status == RunStatus.PENDING for step in unfinished):
        broker = holdings({step.queue for step in unfinished})
    recovered = 0
    for run_id in set(run_ids) - {step.run_id for step in unfinished}:
        # Every step is done and only the finaliser after a parallel last stage is missing.
        recovered += _reconcile_one(run_publish, run_id=run_id)
    for run_id, steps in groupby(unfinished, key=lambda step: step.run_id):
        steps = list(steps)
        current = [step for step in steps if step.stage == steps[0].stage]
        if any(_still_held(step, alive, broker) for step in current):
            continue
        if _reconcile_one(_republish_orphan, run_id=run_id, steps=steps):
            recovered += 1
    return recovered


ORPHAN_BATCH = 1000


def _live_workers() -> dict[tuple[str, int], Any]:
    """(host name, pid) -> boot time of each worker whose heartbeat is recent by the
    database's clock (the one heartbeats are written with)."""
    recent = Now() - timedelta(seconds=settings.CHAINS_WORKER_DEAD_SECONDS)
    return {(hostname, pid): booted for hostname, pid, booted in WorkerHeartbeat.objects
            .filter(seen_at__gte=recent).values_list("hostname", "pid", "booted_at")}


def _still_held(step: StepRun, alive: dict, broker: Holdings | None) -> bool:
    """Whether something still has this step in hand: a live worker running it (the same
    incarnation that started it), or a queue it waits in. Unknown counts as held."""
    if step.status == RunStatus.RUNNING:
        if step.worker_pid is None:  # started before workers said who they are
            return True
        booted = alive.get((step.worker, step.worker_pid))
        return booted is not None and booted <= step.started_at
    if broker is None:
        return True
    # Taken a moment ago: a worker is about to start it (or retries it after a countdown).
    taken_for = broker.taken.get(step.task_id)
    return step.task_id in broker.waiting or (
        taken_for is not None and taken_for < settings.CHAINS_ORPHAN_SECONDS)


@transaction.atomic
def _republish_orphan(*, run_id, steps: list[StepRun]) -> bool:
    """Fresh task ids (and PENDING) for the run's unfinished steps, each only if it is as it
    was read; then the run is published from its last completed stage once this commits."""
    for step in steps:
        as_read = StepRun.objects.filter(id=step.id, task_id=step.task_id, status=step.status,
                                         attempts=step.attempts)
        if step.status == RunStatus.PENDING:
            renewed = as_read.update(task_id=str(uuid.uuid4()))
        else:
            renewed = states.move(as_read, RunStatus.PENDING, task_id=str(uuid.uuid4()))
        if not renewed:  # it moved meanwhile: leave the run alone this time
            transaction.set_rollback(True)
            return False
    logger.warning("run %s lost its worker or its message: published again", run_id)
    transaction.on_commit(partial(run_publish, run_id=run_id))
    return True


def _reconcile_one(function, **kwargs) -> bool:
    """One run's trouble does not stop the reconciler from reaching the others."""
    try:
        return bool(function(**kwargs))
    except Exception:
        logger.exception("reconciling %s failed", kwargs)
        return False


def _claim_resume(run: Run) -> bool:
    """Only one reconciler resumes a run for a given stall: the update is the claim."""
    return bool(Run.objects.filter(id=run.id, resumes=run.resumes, status__in=states.OPEN)
                .update(resumes=run.resumes + 1, last_progress_at=timezone.now()))


@transaction.atomic
def _fail_stalled(run: Run, now) -> int:
    seconds = int((now - run.last_progress_at).total_seconds())
    failed = states.move(
        Run.objects.filter(id=run.id), RunStatus.FAILED, finished_at=now,
        error=f"no progress for {seconds}s after {run.resumes} resumes "
        "(lost messages, or workers that died or do not consume the step's queue)",
    )
    if failed:
        _cancel_outstanding_steps(run.id)
    return failed


# --- Schedules ------------------------------------------------------------------------------

RUN_SCHEDULED_TASK = "chains.run_scheduled"


def schedule_sync(*, schedule: ChainSchedule) -> None:
    """Create or update the django-celery-beat PeriodicTask behind a schedule. Its task is
    always chains.run_scheduled with the schedule's id: users never type a task name."""
    from django_celery_beat.models import (
        ClockedSchedule,
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
    )

    fields = {"interval": None, "crontab": None, "clocked": None,
              "one_off": schedule.kind == ScheduleKind.ONCE}
    if schedule.kind == ScheduleKind.INTERVAL:
        fields["interval"] = _first_or_create(
            IntervalSchedule, every=schedule.every_seconds, period=IntervalSchedule.SECONDS)
    elif schedule.kind == ScheduleKind.CRONTAB:
        fields["crontab"] = _first_or_create(
            CrontabSchedule,
            minute=schedule.minute or "*", hour=schedule.hour or "*",
            day_of_month=schedule.day_of_month or "*",
            month_of_year=schedule.month_of_year or "*",
            day_of_week=schedule.day_of_week or "*", timezone=schedule.timezone)
    else:
        fields["clocked"] = _first_or_create(ClockedSchedule, clocked_time=schedule.run_at)
    name = f"chain schedule {schedule.id}"
    task = (schedule.periodic_task or PeriodicTask.objects.filter(name=name).first()
            or PeriodicTask(name=name))
    task.task = RUN_SCHEDULED_TASK
    task.kwargs = json.dumps({"schedule_id": schedule.id})
    # A firing delivered late (a worker died with it, a long queue) expires instead of
    # starting a run for a later slot.
    task.expire_seconds = (max(1, min(schedule.every_seconds or 60, 60))
                           if schedule.kind != ScheduleKind.ONCE else None)
    task.enabled = schedule.enabled
    task.description = f"{schedule.chain.name}: {schedule.describe()}"
    for name, value in fields.items():
        setattr(task, name, value)
    task.save()
    if schedule.periodic_task_id != task.id:
        ChainSchedule.objects.filter(id=schedule.id).update(periodic_task=task)
        schedule.periodic_task = task


def _first_or_create(model, **fields):
    """Beat's schedule tables have no unique constraint: reuse any equal row."""
    return model.objects.filter(**fields).first() or model.objects.create(**fields)


def schedule_unsync(*, periodic_task_id: int | None) -> None:
    from django_celery_beat.models import PeriodicTask

    if periodic_task_id:
        PeriodicTask.objects.filter(id=periodic_task_id).delete()


SCHEDULE_FIELDS = ["name", "kind", "every_seconds", "minute", "hour", "day_of_month",
                   "month_of_year", "day_of_week", "run_at", "timezone", "inputs", "enabled"]
SCHEDULE_TEXT_LIMITS = {"name": 100, "minute": 64, "hour": 64, "day_of_month": 64,
                        "month_of_year": 64, "day_of_week": 64, "timezone": 64}


@transaction.atomic
def schedule_save(
    *, schedule: ChainSchedule | None = None, chain: Chain, user, fields: dict[str, Any],
    past_run_at_allowed: bool = False,
) -> ChainSchedule:
    """Create or change a schedule of `chain` (with its beat entry), all or nothing, once
    `schedule_check` accepts it."""
    schedule = schedule_check(schedule=schedule, chain=chain, user=user, fields=fields,
                              past_run_at_allowed=past_run_at_allowed)
    if schedule.enabled:
        schedule.disabled_reason = ""
    schedule.save()  # chains.signals keeps its beat entry in step, in this transaction
    return schedule


def schedule_check(
    *, schedule: ChainSchedule | None = None, chain: Chain, user, fields: dict[str, Any],
    past_run_at_allowed: bool = False,
) -> ChainSchedule:
    """`schedule` (or a new one) with `fields`, unsaved, or ChainError saying why not. Its
    runs are started as its owner, so `user` must be allowed to edit the chain and start runs;
    users who are not staff keep to CHAINS_MIN_INTERVAL_SECONDS and
    CHAINS_MAX_SCHEDULES_PER_USER. `user` None is an operator (imports). A one-off time that
    is set must lie ahead, unless `past_run_at_allowed` (an import of a schedule that has
    fired)."""
    from chains.schedules import schedule_errors

    if user is not None and not can_schedule_chain(user, chain):
        raise NotAllowed("not allowed", errors={
            "chain": ["you may not schedule this chain: scheduling needs the right to edit "
                      "it and to start runs"]})
    unknown = set(fields) - set(SCHEDULE_FIELDS)
    if unknown:
        raise ChainError("unknown fields", errors={key: ["unknown field"] for key in unknown})
    previous_run_at = schedule.run_at if schedule else None
    schedule = schedule or ChainSchedule()
    # Whoever saves a schedule owns it from then on: its runs are theirs, on their rights. An
    # operator's import gives it to the chain's author.
    schedule.created_by = user if user is not None else chain.created_by
    schedule.chain = chain
    for name, value in fields.items():
        setattr(schedule, name, value)
    errors: dict[str, list[str]] = {}
    for name, limit in SCHEDULE_TEXT_LIMITS.items():
        check_text(errors, name, getattr(schedule, name), limit)
    if not errors:
        check_ahead = schedule.run_at != previous_run_at and not past_run_at_allowed
        errors.update(schedule_errors(schedule, now=timezone.now() if check_ahead else None))
    if user is not None and not user.is_staff:
        _check_schedule_limits(schedule, user, errors)
    try:
        check_inputs(schedule.inputs, field="inputs")
    except ChainError as exc:
        errors.update(exc.errors)
    if errors:
        raise ChainError("invalid schedule", errors=errors)
    return schedule


@transaction.atomic
def schedule_delete(*, schedule: ChainSchedule) -> None:
    """The schedule and its beat entry (chains.signals removes it)."""
    schedule.delete()


def _check_schedule_limits(schedule: ChainSchedule, user, errors: dict) -> None:
    minimum = settings.CHAINS_MIN_INTERVAL_SECONDS
    if (schedule.kind == ScheduleKind.INTERVAL and "every_seconds" not in errors
            and schedule.every_seconds < minimum):
        errors["every_seconds"] = [f"must be at least {minimum} s (CHAINS_MIN_INTERVAL_SECONDS)"]
    owned = ChainSchedule.objects.filter(created_by=user).exclude(pk=schedule.pk).count()
    if schedule.pk is None and owned >= settings.CHAINS_MAX_SCHEDULES_PER_USER:
        raise LimitReached("too many schedules", errors={"non_field_errors": [
            f"you have {owned} schedules; the limit is {settings.CHAINS_MAX_SCHEDULES_PER_USER} "
            "(CHAINS_MAX_SCHEDULES_PER_USER)"]})


def _schedule_owner_problem(schedule: ChainSchedule) -> str | None:
    """Why the schedule's owner may no longer start its runs, or None."""
    owner = schedule.created_by
    if owner is None:  # a schedule of an operator's chain, imported
        return None
    if not owner.is_active:
        return f"its owner {owner} is no longer active"
    if not can_schedule_chain(owner, schedule.chain):
        return f"its owner {owner} may no longer start runs of this chain"
    return None


def run_start_scheduled(*, schedule_id: int, now=None) -> Run | None:
    """A firing of a schedule: at most one run per schedule and time slot (the database's
    unique constraint decides between two beats or a message delivered twice), started as the
    schedule's owner. An owner who lost the right to start runs stops the schedule, with the
    reason recorded on it."""
    from chains.schedules import slot_for

    schedule = (ChainSchedule.objects.select_related("chain", "created_by")
                .filter(id=schedule_id).first())
    if schedule is None or not schedule.enabled or not schedule.chain.enabled:
        logger.info("schedule %s fired but is gone or disabled: no run", schedule_id)
        return None
    if problem := _schedule_owner_problem(schedule):
        schedule_disable(schedule=schedule, reason=f"stopped: {problem}")
        return None
    slot = slot_for(schedule, now or timezone.now())
    try:
        with transaction.atomic():
            return run_start(chain=schedule.chain, inputs=schedule.inputs,
                             trigger=RunTrigger.SCHEDULE, schedule=schedule,
                             scheduled_for=slot, user=schedule.created_by)
    except IntegrityError:
        logger.info("schedule %s slot %s already has its run", schedule_id, slot)
        return None
    except ChainError as exc:
        logger.error("schedule %s could not start a run: %s", schedule_id, exc.errors)
        return None


@transaction.atomic
def schedule_disable(*, schedule: ChainSchedule, reason: str) -> None:
    logger.warning("schedule %s %s", schedule.id, reason)
    schedule.enabled, schedule.disabled_reason = False, reason[:255]
    schedule.save(update_fields=["enabled", "disabled_reason"])  # the signal syncs beat


# --- Import -----------------------------------------------------------------------------------


@transaction.atomic
def chains_import(*, data: Any, user=None) -> list[Chain]:
    """Create or replace (by name) the chains in an export, with their steps and schedules.
    Everything is validated first; one error and nothing is written."""
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(
        data.get("chains"), list
    ):
        raise ChainError("format", errors={"file": ["not a chains export (version 1)"]})
    imported = []
    for index, item in enumerate(data["chains"]):
        prefix = f"chains.{index}"
        try:
            _refuse_unknown_keys(item, CHAIN_IMPORT_FIELDS)
            steps = []
            for n, step in enumerate(item["steps"]):
                _refuse_unknown_keys(step, STEP_IMPORT_FIELDS, prefix=f"steps.{n}.")
                steps.append(StepSpec(**step))
            chain = Chain.objects.filter(name=item["name"]).first()
            chain = chain_save(chain=chain, name=item["name"],
                               description=item.get("description", ""),
                               enabled=item.get("enabled", True),
                               default_inputs=item.get("default_inputs") or {}, steps=steps,
                               user=user)
        except ChainError as exc:
            raise ChainError("invalid", errors={f"{prefix}.{k}": v
                                                for k, v in exc.errors.items()}) from exc
        except (KeyError, TypeError) as exc:
            raise ChainError("invalid", errors={prefix: [f"malformed chain: {exc}"]}) from exc
        chain.schedules.all().delete()
        for n, raw in enumerate(item.get("schedules", [])):
            fields = dict(raw) if isinstance(raw, dict) else {}
            try:
                if not isinstance(raw, dict):
                    raise ChainError("invalid", errors={"": ["must be an object"]})
                if fields.get("run_at"):
                    fields["run_at"] = _parse_time(fields["run_at"])
                schedule_save(chain=chain, user=None, fields=fields, past_run_at_allowed=True)
            except ChainError as exc:
                raise ChainError("invalid", errors={
                    f"{prefix}.schedules.{n}.{k}".rstrip("."): v for k, v in exc.errors.items()
                }) from exc
        imported.append(chain)
    return imported


CHAIN_IMPORT_FIELDS = {"name", "description", "enabled", "default_inputs", "steps", "schedules"}
STEP_IMPORT_FIELDS = {"stage", "name", "step_type", "params", "max_retries", "time_limit",
                      "queue"}


def _refuse_unknown_keys(item: Any, allowed: set[str], *, prefix: str = "") -> None:
    """Imports take the documented fields only: never ids, owners or links to other rows."""
    if not isinstance(item, dict):
        raise ChainError("invalid", errors={prefix.rstrip(".") or "chain": ["must be an object"]})
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ChainError("invalid", errors={f"{prefix}{key}": ["unknown field"]
                                            for key in unknown})


def _parse_time(value: Any):
    from django.utils.dateparse import parse_datetime

    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise ChainError("invalid", errors={"run_at": ["not an ISO 8601 date and time"]})
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def runs_purge(*, older_than, status: str | None = None, chunk: int = 10_000,
               progress=None) -> int:
    """Delete finished runs created before `older_than`, with their steps, TaskResult rows and
    files, `chunk` runs at a time (memory stays flat however many there are)."""
    from django.db.models.signals import post_delete, pre_delete

    runs = Run.objects.filter(created_at__lt=older_than, status__in=states.FINAL)
    if status:
        runs = runs.filter(status=status)
    # Once its steps are gone nothing points at a run, so the runs go in one DELETE rather
    # than through the Collector, which loads every run first; unless a relation or a delete
    # signal on Run appears.
    raw = ({rel.related_model for rel in Run._meta.related_objects} <= {StepRun}
           and not pre_delete.has_listeners(Run) and not post_delete.has_listeners(Run))
    runs_dir = Path(settings.CHAINS_DATA_DIR) / "runs"
    deleted = 0
    while True:
        ids = list(runs.order_by("created_at").values_list("id", flat=True)[:chunk])
        if not ids:
            return deleted
        with transaction.atomic():
            steps = StepRun.objects.filter(run_id__in=ids)
            TaskResult.objects.filter(task_id__in=steps.values("task_id")).delete()
            steps.delete()
            chunk_runs = Run.objects.filter(id__in=ids)
            if raw:
                chunk_runs._raw_delete(chunk_runs.db)
            else:
                chunk_runs.delete()
        listed = {path.name for path in runs_dir.iterdir()} if runs_dir.is_dir() else set()
        for run_id in ids:
            _remove_run_files(str(run_id), listed)
        deleted += len(ids)
        if progress:
            progress(deleted)


# --- API tokens -------------------------------------------------------------------------------


@transaction.atomic
def token_regenerate(*, user) -> Token:
    """A new API token for `user`; the old one stops working at once."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)
