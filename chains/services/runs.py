"""Writes of runs: start (from a chain, a seed task type or another run), publish, retry,
finish, cancel and delete."""
from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from celery import current_app as app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Subquery
from django.utils import timezone
from django_celery_results.models import TaskResult

from chains import audit, states
from chains.bounds import check_inputs
from chains.canvas import build_run_signature
from chains.commits import unflushed
from chains.errors import ChainError, Conflict, LimitReached
from chains.events import run_ended, run_ready
from chains.inputs_schema import check_inputs_schema
from chains.models import (
    TASK_ID_MODELS,
    AttemptEnd,
    Chain,
    ChainSchedule,
    ChainVersion,
    IdempotencyKey,
    MapItem,
    OverlapPolicy,
    ResultMode,
    Run,
    RunStatus,
    RunTrigger,
    StepRun,
)
from chains.permissions import can_read_chain_inputs
from chains.presets import PRESETS, Preset, StepSpec, build_preset
from chains.services.attempts import attempts_keep
from chains.services.chains import chain_step_specs, validate_step_specs
from chains.services.metrics import metrics_run_ended, metrics_run_retried, metrics_run_started
from chains.services.versions import current_version
from chains.steps import STEP_TYPES, ParamsInvalid

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)


# --- Starting runs --------------------------------------------------------------------------


def run_start(
    *, chain: Chain, inputs: Any = None, trigger: str = RunTrigger.API,
    user: User | None = None, schedule: ChainSchedule | None = None,
    scheduled_for: datetime | None = None, parent_step: StepRun | None = None,
    after_active: bool = False,
) -> Run:
    """Start a run of `chain`: snapshot its steps now, publish once the transaction commits.
    Its inputs must fit the chain's inputs schema. `parent_step`: the flow.chain step of
    another run that starts this one as its child."""
    if not chain.enabled:
        raise ChainError("disabled", errors={"chain": [f"chain {chain.name!r} is disabled"]})
    if (inputs is None and chain.default_inputs and user is not None
            and not can_read_chain_inputs(user, chain)):
        raise ChainError("inputs", errors={"inputs": [
            "required: this chain's default inputs are its author's"]})
    inputs = chain.default_inputs if inputs is None else inputs
    check_inputs(inputs, field="inputs")
    check_inputs_schema(chain.inputs_schema, inputs, field="inputs")
    specs = validate_step_specs(chain_step_specs(chain))
    return run_create(
        preset=Preset(specs=specs, inputs=inputs), chain=chain, trigger=trigger, user=user,
        description=chain.description, schedule=schedule, scheduled_for=scheduled_for,
        parent_step=parent_step, version=current_version(chain), after_active=after_active,
    )


def run_start_once(
    *, user: User, key: str | None, fingerprint: str, start: Callable[[], Run],
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
    *, task_type: str, config: Any, description: str = "", user: User | None = None,
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
    return run_create(
        preset=preset, task_type=task_type, description=description, trigger=trigger, user=user,
    )


def run_again(*, run: Run, trigger: str = RunTrigger.ADMIN, user: User | None = None
              ) -> Run:
    """A new run with the same steps and inputs as `run` (its chain may have changed since)."""
    if run.chain is not None and not run.chain.enabled:
        raise ChainError("disabled", errors={"chain": [f"chain {run.chain.name!r} is disabled"]})
    specs = validate_step_specs([
        StepSpec(step_type=sr.step_type, params=sr.params, stage=sr.stage, name=sr.name,
                 max_retries=sr.max_retries, time_limit=sr.time_limit, queue=sr.queue,
                 map=sr.map, when=sr.when, retry_backoff=sr.retry_backoff,
                 retry_backoff_max=sr.retry_backoff_max)
        for sr in run.step_runs.order_by("index")])
    return run_create(
        preset=Preset(specs=specs, inputs=run.inputs, result_mode=run.result_mode),
        chain=run.chain, task_type=run.task_type, description=run.description,
        trigger=trigger, user=user, version=run.version,
    )


def run_create(
    *, preset: Preset, trigger: str, user: User | None = None, chain: Chain | None = None,
    task_type: str = "", description: str = "", schedule: ChainSchedule | None = None,
    scheduled_for: datetime | None = None, parent_step: StepRun | None = None,
    version: ChainVersion | None = None, after_active: bool = False,
) -> Run:
    """Write a run and its steps and ready it, in one transaction. It waits as QUEUED instead
    when its chain is at max_active_runs (or has older runs queued), or when `after_active`
    (its schedule's overlap policy buffers it behind the schedule's active run)."""
    run = Run(
        parent_step=parent_step,
        version=version,
        depth=parent_step.run.depth + 1 if parent_step is not None else 0,
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
            map=spec.map,
            when=spec.when,
            retry_backoff=spec.retry_backoff,
            retry_backoff_max=spec.retry_backoff_max,
            task_id=str(uuid.uuid4()),
        )
        for index, spec in enumerate(preset.specs)
    ]
    # Rows (the audit entry too) are built before the transaction: on SQLite it holds the
    # write lock from BEGIN.
    started = audit.entry_for("run started", run, user=run.created_by, trigger=trigger,
                              version=version.number if version else None)
    with transaction.atomic():
        _check_active_runs(run.created_by)
        if after_active or _chain_full(chain):
            run.status = RunStatus.QUEUED
        run.save(force_insert=True)
        created = StepRun.objects.bulk_create(step_runs)
        started.save(force_insert=True)
        # Last: on PostgreSQL the counter's row stays locked until COMMIT, and every start
        # of the same chain or task type adds to that one row.
        metrics_run_started(run)
        if run.status != RunStatus.QUEUED:
            run_ready.send(sender=Run, run_id=run.id, run=run, step_runs=created)
    return run


def _chain_full(chain: Chain | None) -> bool:
    """Inside a transaction: whether a new run of `chain` must wait for a slot: the chain is
    at max_active_runs, or older runs of it wait already (first come, first started). The
    chain's row is locked until the transaction ends, so two starts at once count in turn
    (SQLite's write lock does the same)."""
    if chain is None or not chain.max_active_runs:
        return False
    Chain.objects.select_for_update().filter(id=chain.id).first()
    runs = Run.objects.filter(chain_id=chain.id)
    return (runs.filter(status__in=states.HOLDS_SLOT).count() >= chain.max_active_runs
            or runs.filter(status=RunStatus.QUEUED).exists())


def runs_promote(*, chain_id: int, batch: int = 100) -> int:
    """Start the queued runs of a chain that may start now, oldest first: as many as it has
    free slots, skipping a run its schedule's overlap policy (buffer_one) holds behind the
    schedule's active run. Slots are counted from the ledger, so a crashed worker never keeps
    one. Called when a run ends, and by the reconciler. Returns how many started."""
    started: list[uuid.UUID] = []
    with transaction.atomic():
        chain = Chain.objects.select_for_update().filter(id=chain_id).first()
        queued = list(Run.objects.filter(chain_id=chain_id, status=RunStatus.QUEUED)
                      .select_related("schedule").order_by("created_at", "id")[:batch])
        if not queued:
            return 0
        limit = chain.max_active_runs if chain is not None else None
        free = (limit - Run.objects.filter(chain_id=chain_id, status__in=states.HOLDS_SLOT)
                .count()) if limit else len(queued)
        for run in queued:
            if free <= 0:
                break
            if (run.schedule is not None and run.schedule.overlap == OverlapPolicy.BUFFER_ONE
                    and Run.objects.filter(schedule_id=run.schedule_id,
                                           status__in=states.HOLDS_SLOT).exists()):
                continue
            if states.move(Run.objects.filter(id=run.id, status=RunStatus.QUEUED),
                           RunStatus.PENDING, last_progress_at=timezone.now()):
                run_ready.send(sender=Run, run_id=run.id)
                started.append(run.id)
                free -= 1
    return len(started)


def runs_promote_after(*, run_id: uuid.UUID | str) -> int:
    """A run ended: start what waited for its slot (one query when nothing waits)."""
    chain_id = Run.objects.filter(id=run_id).values("chain_id")
    if not Run.objects.filter(chain_id=Subquery(chain_id[:1]),
                              status=RunStatus.QUEUED).exists():
        return 0
    found = Run.objects.filter(id=run_id).values_list("chain_id", flat=True).first()
    return runs_promote(chain_id=found) if found is not None else 0


def _check_active_runs(user: User | None) -> None:
    """Users who are not staff have at most CHAINS_MAX_ACTIVE_RUNS_PER_USER runs open."""
    limit = settings.CHAINS_MAX_ACTIVE_RUNS_PER_USER
    if user is None or user.is_staff or not limit:
        return
    open_runs = Run.objects.filter(created_by=user, status__in=states.OPEN)[:limit].count()
    if open_runs >= limit:
        raise LimitReached("too many open runs", errors={"non_field_errors": [
            f"you have {open_runs} open runs (queued, pending, running or waiting); the limit "
            f"is {limit} (CHAINS_MAX_ACTIVE_RUNS_PER_USER): wait for some to finish"]})


def run_publish(
    *, run_id: uuid.UUID | str, run: Run | None = None, step_runs: list[StepRun] | None = None,
    resumed: bool = False,
) -> bool:
    """Send an unfinished run's canvas to the broker, from its first unfinished stage. If the
    broker cannot be reached the run keeps its rows and stays unpublished (the outbox):
    `reconcile_runs` publishes it again, and a `resumed` run gets its resume back (a broker
    that is away does not use up CHAINS_MAX_RESUMES). `run` and `step_runs`: a new run's rows
    as `run_create` has just committed them, published whole without reading them back.
    The `run_ready` receiver calls it once the transaction that readied the run commits."""
    if run is not None and step_runs and all(step_run.pk is not None for step_run in step_runs):
        remaining, first_input = step_runs, run.inputs
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
        time_limit_default=settings.CHAINS_STEP_TIME_LIMIT,
    )
    try:
        signature.apply_async()
    except Exception:
        logger.exception("run %s is not published: the broker could not be reached", run_id)
        if resumed:
            Run.objects.filter(id=run.id, resumes__gt=0).update(resumes=F("resumes") - 1)
        return False
    _mark_published(run.id)
    return True


def _mark_published(run_id: uuid.UUID) -> None:
    """The run's canvas reached the broker: its published_at (and last progress), in one
    statement. On PostgreSQL, outside a transaction, that statement's commit does not wait
    for its WAL flush (set_config turns synchronous_commit off for that transaction alone;
    the server writes it within a few hundred ms): the run itself was committed durably
    before it was published, and should the server crash before the mark is written, the
    reconciler publishes the run again as after a publishing that failed (a step already
    started or done skips the second delivery)."""
    now = timezone.now()
    unflushed(Run.objects.filter(id=run_id)).update(published_at=now, last_progress_at=now)


def _resume_point(run: Run) -> tuple[list[StepRun], Any]:
    """The steps from the first stage that is not COMPLETED, and the input of that stage: the
    run's inputs, or the previous stage's result (a list when it was parallel)."""
    step_runs = list(run.step_runs.order_by("stage", "index"))
    previous: Any = run.inputs
    for stage, group in groupby(step_runs, key=lambda sr: sr.stage):
        members = list(group)
        if any(sr.status not in states.DONE for sr in members):
            return [sr for sr in step_runs if sr.stage >= stage], previous
        previous = members[0].result if len(members) == 1 else [sr.result for sr in members]
    return [], previous


def _renew_task_ids(run: Run) -> None:
    """Fresh task ids for the run's unfinished steps before it is published again: the old
    ids may be revoked, and their TaskResult rows describe attempts that are over."""
    unfinished = list(run.step_runs.exclude(status__in=states.DONE))
    TaskResult.objects.filter(task_id__in=[sr.task_id for sr in unfinished]).delete()
    for step_run in unfinished:
        step_run.task_id = str(uuid.uuid4())
    StepRun.objects.bulk_update(unfinished, ["task_id"])


def _take_fixed_params(run: Run) -> None:
    """If the run's chain still has the same steps (types and stages), its unfinished steps
    take the chain's current settings: retrying after fixing a step's params uses the fix,
    and the run records the chain's current version as the one it runs."""
    if run.chain is None:
        return
    specs = validate_step_specs(chain_step_specs(run.chain))
    step_runs = list(run.step_runs.order_by("index"))
    if ([(s.step_type, s.stage, s.map) for s in specs]
            != [(sr.step_type, sr.stage, sr.map) for sr in step_runs]):
        return
    unfinished = [sr for sr in step_runs if sr.status not in states.DONE]
    for step_run in unfinished:
        spec = specs[step_run.index]
        if step_run.map and (step_run.params, step_run.when) != (spec.params, spec.when):
            step_run.items.all().delete()  # items done with the old params do not count
        step_run.params, step_run.time_limit = spec.params, spec.time_limit
        step_run.max_retries, step_run.when = spec.max_retries, spec.when
        step_run.retry_backoff = spec.retry_backoff
        step_run.retry_backoff_max = spec.retry_backoff_max
        step_run.queue = spec.queue or STEP_TYPES[spec.step_type].default_queue
    StepRun.objects.bulk_update(unfinished, ["params", "time_limit", "max_retries", "queue",
                                             "when", "retry_backoff", "retry_backoff_max"])
    # What runs from here on is the chain's current version.
    Run.objects.filter(id=run.id).update(version=current_version(run.chain))


@transaction.atomic
def run_retry(*, run: Run) -> Run:
    """Run a FAILED or CANCELLED run again from its first unfinished step, reusing the stored
    results of the steps before it. Unfinished steps take their chain's current params when
    the chain still has the same steps."""
    now = timezone.now()
    _check_active_runs(run.created_by)
    queued = _chain_full(run.chain)  # it waits for a slot like a new run
    claimed = states.move(  # from FAILED or CANCELLED; what it ended with is kept
        Run.objects.filter(id=run.id), RunStatus.QUEUED if queued else RunStatus.PENDING,
        error="", result=None,
        started_at=None, finished_at=None, published_at=None, last_progress_at=now, resumes=0,
        retries=F("retries") + 1, retried_status=F("status"), retried_error=F("error"),
        retried_at=now)
    if not claimed:  # the update is the check: two retries at once make one
        run.refresh_from_db()
        raise ChainError("not retryable", errors={
            "status": [f"only FAILED or CANCELLED runs can be retried; this one is {run.status}"]
        })
    audit.record("run retried", run, changes={"status": [run.status, RunStatus.PENDING]})
    metrics_run_retried(run)
    unfinished = run.step_runs.exclude(status__in=states.DONE)
    attempts_keep(unfinished, ended_by=AttemptEnd.RUN_RETRIED)
    states.move(unfinished, RunStatus.PENDING, error="", attempts=0, worker="",
                worker_pid=None, started_at=None, finished_at=None, result=None,
                progress=None, progress_message="", log="")
    _take_fixed_params(run)
    _renew_task_ids(run)
    if not queued:
        run_ready.send(sender=Run, run_id=run.id)
    run.refresh_from_db()
    return run

def run_finish(*, run_id: uuid.UUID | str, result: Any) -> None:
    """The canvas's finaliser (after a parallel last stage): the run is COMPLETED."""
    run = Run.objects.filter(id=run_id).only("id", "result_mode").first()
    if run is not None:
        _run_complete(run, result=result, now=timezone.now())


def _run_complete(run: Run, *, result: Any, now: datetime, **fields: Any) -> None:
    """An open run becomes COMPLETED with its result: the last stage's, or every step's."""
    if run.result_mode == ResultMode.ALL_STEPS:
        result = list(run.step_runs.order_by("index").values_list("result", flat=True))
    run_end(run.id, RunStatus.COMPLETED, result=result, finished_at=now, last_progress_at=now,
            **fields)


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
        failed = run_end(step_run.run_id, RunStatus.FAILED, error=run_error, finished_at=now)
        if failed:
            _cancel_outstanding_steps(step_run.run_id)


def _is_current_child(child: Run, step_run: StepRun) -> bool:
    """Whether `child` was started by the step's current attempt (a retried parent starts a
    new child; an earlier one's end must not decide the step)."""
    return step_run.started_at is not None and child.created_at >= step_run.started_at


def parent_step_fail(child: Run, *, error: str) -> None:
    """Inside a transaction: the flow.chain step waiting for `child` fails with `error` (the
    child is being deleted, so its end will never be seen)."""
    step_run = child.parent_step
    if (step_run is not None and step_run.status == RunStatus.WAITING
            and _is_current_child(child, step_run)):
        step_fail(step_run_id=step_run.id, error=error)


def run_end(run_id: uuid.UUID | str, to: str, **fields: Any) -> int:
    """The run, if still open, ends as `to` (COMPLETED, FAILED or CANCELLED) with `fields`;
    `run_ended` goes out once this commits (a parent run waiting for it goes on)."""
    with transaction.atomic(savepoint=False):  # the end and its metrics commit together
        ended = states.move(Run.objects.filter(id=run_id), to, **fields)
        if ended:
            known = metrics_run_ended(run_id)  # chain_id, parent_step_id
            run_ended.send(sender=Run, run_id=run_id, **known)
    return ended


# --- Cancelling and deleting ----------------------------------------------------------------


def _cancel_outstanding_steps(run_id: uuid.UUID | str, *, stop_running: bool = False
                              ) -> tuple[int, int]:
    """Mark the run's open steps CANCELLED and revoke their tasks once this commits: waiting
    ones never start; with `stop_running`, running ones are terminated on their workers (the
    message is acknowledged, so it is not delivered again). Without it they finish there and
    their result is discarded. Returns (waiting, running) steps cancelled."""
    now = timezone.now()
    outstanding = StepRun.objects.filter(run_id=run_id, status__in=states.OPEN)
    running = outstanding.filter(status=RunStatus.RUNNING)
    running_ids = list(running.values_list("task_id", flat=True))
    stopped = states.move(running.filter(task_id__in=running_ids), RunStatus.CANCELLED,
                          finished_at=now, error=(
                              "stopped on its worker by the cancel" if stop_running else
                              "cancelled while running: it finishes on its worker and its "
                              "result is discarded"))
    waiting_ids = list(outstanding.values_list("task_id", flat=True))
    waiting = states.move(outstanding.filter(task_id__in=waiting_ids), RunStatus.CANCELLED,
                          finished_at=now)
    # A map step's items that have not finished will not (they skip themselves if delivered).
    states.move(MapItem.objects.filter(step_run__run_id=run_id,
                                       status__in=[RunStatus.PENDING, RunStatus.RUNNING]),
                RunStatus.CANCELLED, finished_at=now)
    if waiting_ids:
        transaction.on_commit(lambda: _revoke(waiting_ids))
    if running_ids:
        transaction.on_commit(lambda: _revoke(running_ids, terminate=stop_running))
    return waiting, stopped


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _revoke(task_ids: list[str], *, terminate: bool = False) -> None:
    try:
        app.control.revoke(task_ids, terminate=terminate, signal="SIGTERM")
    except Exception:
        logger.exception("could not revoke %d task(s); they will be skipped when they run",
                         len(task_ids))


@transaction.atomic
def run_cancel(*, run: Run, reason: str = "cancelled") -> Run:
    """Cancel an unfinished run: its waiting steps are revoked, its running steps are
    stopped on their workers and its child runs are cancelled; the run's error says which."""
    status_before = run.status
    cancelled = run_end(run.id, RunStatus.CANCELLED, error=reason, finished_at=timezone.now())
    if not cancelled:
        run.refresh_from_db()
        raise ChainError("finished", errors={"status": [f"run is already {run.status}"]})
    waiting, stopped = _cancel_outstanding_steps(run.id, stop_running=True)
    what = []
    if stopped:
        what.append(_count(stopped, "running step") + " stopped on the worker")
    if waiting:
        what.append(_count(waiting, "waiting step") + " will not start")
    children = 0
    for child in Run.objects.filter(parent_step__run_id=run.id, status__in=states.OPEN):
        try:
            run_cancel(run=child, reason="cancelled with its parent run")
            children += 1
        except ChainError:
            pass  # it ended meanwhile
    if children:
        what.append(_count(children, "child run") + " cancelled")
    if what:
        Run.objects.filter(id=run.id).update(error=f"{reason}: {'; '.join(what)}")
    run.refresh_from_db()
    audit.record("run cancelled", run, changes={"status": [status_before, run.status]},
                 error=run.error)
    return run


@transaction.atomic
def run_delete(*, run: Run) -> None:
    """Delete a run with its steps, the TaskResult rows of their attempts and map items, and
    the files its steps wrote."""
    if run.status in states.OPEN:
        try:
            run_cancel(run=run, reason="deleted")
        except ChainError:
            pass  # it finished meanwhile: delete it all the same
    if run.parent_step_id is not None:  # its end will never be seen: the parent fails now
        parent_step_fail(run, error=f"child run {run.id} was deleted")
    task_ids: list[str] = []  # the steps', their earlier attempts', items' and approvals'
    for model in TASK_ID_MODELS:
        rows = cast(Any, model).objects.filter(
            **({"run": run} if model is StepRun else {"step_run__run": run}))
        task_ids += rows.values_list("task_id", flat=True)
    for chunk in range(0, len(task_ids), 10_000):
        TaskResult.objects.filter(task_id__in=task_ids[chunk:chunk + 10_000]).delete()
    run_id = str(run.id)
    audit.record("run deleted", run)
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
