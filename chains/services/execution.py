"""The worker side of a run: execute a step idempotently, mark it running, fail it."""
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_celery_results.models import TaskResult

from chains import states
from chains.bounds import json_problem
from chains.canvas import pauses
from chains.commits import unflushed
from chains.models import MapItem, Run, RunStatus, StepRun
from chains.services.runs import _run_complete, step_fail
from chains.services.workflows import (
    MAP_PROGRESS_EVERY,
    StepSkipped,
    approval_wait,
    map_start,
    step_continue,
    step_skip_if,
    subchain_start,
)
from chains.steps import STEP_TYPES, StepContext, StepFailed
from chains.steps.base import TASK_NAME_PREFIX
from chains.steps.context import StepLog
from chains.steps.flow import APPROVAL

# A running step's progress is written at most this often (seconds).
PROGRESS_EVERY = 0.5
# What an item's start reads of the item, its step and its run.
ITEM_READ_ON_START = ("id", "task_id", "status", "result", "attempts", "step_run__id",
                      "step_run__run_id", "step_run__index", "step_run__step_type",
                      "step_run__params", "step_run__status", "step_run__max_retries",
                      "step_run__map", "step_run__stage", "step_run__task_id",
                      "step_run__run__id", "step_run__run__status",
                      "step_run__run__result_mode", "step_run__run__created_by_id",
                      "step_run__run__chain_id")
# The columns a step's start reads (a rarer path that needs another loads it when it asks):
# the run's own JSON and texts are the bulk of its row.
READ_ON_START = ("id", "run_id", "index", "stage", "step_type", "params", "queue", "status",
                 "task_id", "attempts", "max_retries", "time_limit", "map", "when", "result",
                 "run__id", "run__status", "run__result_mode", "run__created_by_id",
                 "run__chain_id", "run__depth")


def step_execute(
    *, step_run_id: int, previous: Any, task_id: str | None = None, finish_run: bool = False,
    worker: str = "", worker_pid: int | None = None,
    record_result: Callable[[Any], None] | None = None,
    counted_before: Callable[[], None] | None = None,
) -> Any:
    """Run one step. A step already COMPLETED (a redelivered message) returns its stored
    result without doing its work again. A step started more often than its retries allow
    plus CHAINS_MAX_DELIVERIES (its worker died each time) fails instead of running again.
    A delivery whose `task_id` is no longer the step's (the run was retried or resumed under
    fresh ids since) is skipped. `finish_run` marks the run's last step, which completes the
    run in the same transaction as itself (the canvas then needs no finaliser task).
    `record_result` writes the task's result record in that transaction too (and counts its
    chord down); `counted_before` is told when a delivery finds that done already."""
    found = (StepRun.objects.select_related("run").only(*READ_ON_START)
             .filter(id=step_run_id).order_by()[:1])
    step_run = found[0] if found else None
    if step_run is None:
        raise StepSkipped(f"step run {step_run_id} no longer exists")
    if task_id is not None and step_run.task_id != task_id:
        raise StepSkipped(f"task {task_id} is an older delivery of step run {step_run_id}")
    if step_run.status in states.DONE:  # done (or skipped) before: what it handed on
        if step_run.status == RunStatus.COMPLETED and counted_before is not None:
            counted_before()  # its completion wrote its result record and chord count
        return step_run.result
    run = step_run.run
    if run.status in states.FINAL or step_run.status not in states.OPEN:
        raise StepSkipped(f"run {run.id} is {run.status}")
    step_type = STEP_TYPES.get(step_run.step_type)
    if step_type is None:  # its app was removed since the run started
        raise StepFailed(f"unknown step type {step_run.step_type!r}: no installed app "
                         "declares it")
    starts_allowed = step_run.max_retries + settings.CHAINS_MAX_DELIVERIES
    if step_run.attempts >= starts_allowed:
        raise StepFailed(
            f"started {step_run.attempts} times without finishing (its worker died each time)"
        )
    skipped, handed_on = step_skip_if(step_run, previous, finish_run=finish_run)
    if skipped:
        return handed_on
    _step_mark_running(step_run, run, worker=worker, worker_pid=worker_pid)
    if pauses(step_run):  # the run's canvas ends here; the step goes on by itself
        if step_run.map:
            map_start(step_run, previous, time_limit_default=settings.CHAINS_STEP_TIME_LIMIT)
        elif step_run.step_type == APPROVAL:
            approval_wait(step_run, previous)
        else:
            subchain_start(step_run, run, previous)
        return None
    this_delivery = StepRun.objects.filter(id=step_run.id, task_id=step_run.task_id)
    kept, progress = StepLog(), _ProgressReporter(this_delivery)
    context = StepContext(run_id=str(run.id), step_index=step_run.index,
                          may_read_run=partial(_may_read_run, run),
                          attempt=step_run.attempts + 1, report_progress=progress,
                          log=_step_logger(step_run, kept))
    try:
        result = step_type.execute(step_run.params, previous, context)
    finally:  # kept with the step however it ends
        progress.flush()
        if kept.parts:
            this_delivery.update(log=kept.text)
    if problem := json_problem(result, max_bytes=settings.CHAINS_MAX_RESULT_BYTES):
        raise StepFailed(f"its result {problem}")
    now = timezone.now()
    with transaction.atomic():
        done = states.move(this_delivery, RunStatus.COMPLETED, result=result, error="",
                           finished_at=now)
        if done and finish_run:
            _run_complete(run, result=result, now=now, steps_done=F("steps_done") + 1)
        elif done:
            Run.objects.filter(id=run.id).update(
                steps_done=F("steps_done") + 1, last_progress_at=now
            )
        if done and record_result is not None:
            record_result(result)
    return result


def map_item_execute(*, step_run_id: int, index: int, value: Any, task_id: str | None,
                     worker: str = "") -> Any:
    """Run one item: an item already done returns its result; a delivery whose task id is not
    the item's (the map started again since) or whose run is over is skipped. The item that
    completes the last one completes the step, in the same transaction."""
    found = (MapItem.objects.select_related("step_run", "step_run__run")
             .only(*ITEM_READ_ON_START).filter(step_run_id=step_run_id, index=index)
             .order_by()[:1])
    item = found[0] if found else None
    if item is None or (task_id is not None and item.task_id != task_id):
        raise StepSkipped(f"item {index} of step run {step_run_id} is not this delivery's")
    if item.status == RunStatus.COMPLETED:
        return item.result
    step_run, run = item.step_run, item.step_run.run
    if run.status in states.FINAL or step_run.status != RunStatus.RUNNING:
        raise StepSkipped(f"run {run.id} is {run.status}")
    if item.attempts >= step_run.max_retries + settings.CHAINS_MAX_DELIVERIES:
        raise StepFailed(f"started {item.attempts} times without finishing (its worker died "
                         "each time)")
    this_delivery = MapItem.objects.filter(id=item.id, task_id=item.task_id)
    now = timezone.now()
    if not states.move(unflushed(this_delivery), RunStatus.RUNNING,
                       attempts=F("attempts") + 1, started_at=now, worker=worker[:255]):
        raise StepSkipped(f"item {index} of step run {step_run_id} moved meanwhile")
    step_type = STEP_TYPES.get(step_run.step_type)
    if step_type is None:
        raise StepFailed(f"unknown step type {step_run.step_type!r}: no installed app "
                         "declares it")
    context = StepContext(run_id=str(run.id), step_index=step_run.index,
                          may_read_run=partial(_may_read_run, run), attempt=item.attempts + 1,
                          report_progress=lambda fraction, message: None,
                          log=_step_logger(step_run, StepLog()))
    result = step_type.execute(step_run.params, value, context)
    if problem := json_problem(result, max_bytes=settings.CHAINS_MAX_RESULT_BYTES):
        raise StepFailed(f"its result {problem}")
    now = timezone.now()
    with transaction.atomic():
        if not states.move(this_delivery, RunStatus.COMPLETED, result=result, error="",
                           finished_at=now):
            return result
        done, total = _count_item_done(step_run.id)
        if done >= total:
            results = list(MapItem.objects.filter(step_run_id=step_run.id).order_by("index")
                           .values_list("result", flat=True))
            if problem := json_problem(results, max_bytes=settings.CHAINS_MAX_RESULT_BYTES):
                step_fail(step_run_id=step_run.id, error=f"map: the list of its items' "
                                                         f"results {problem}")
            else:  # the step's task id may have been renewed meanwhile: by id and status
                step_continue(step_run, result=results, now=now, any_delivery=True)
        elif _stamp_due(run.id):
            Run.objects.filter(id=run.id).filter(
                Q(last_progress_at__isnull=True)
                | Q(last_progress_at__lt=now - timedelta(seconds=MAP_PROGRESS_EVERY))
            ).update(last_progress_at=now)
    return result


def _count_item_done(step_run_id: int) -> tuple[int, int]:
    """One more of the map step's items is done (and its progress follows), in one statement
    that says how many are done of how many: the one write every item makes to its step."""
    table, quote = StepRun._meta.db_table, connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(table)} SET items_done = items_done + 1, progress = "
            "CAST(items_done + 1 AS DOUBLE PRECISION) / items_total "
            "WHERE id = %s RETURNING items_done, items_total", [step_run_id])
        done, total = cursor.fetchone()
    return done, total or 0


# run id -> when this process last stamped the run's progress for a map item (monotonic s).
_stamped: dict[Any, float] = {}


def _stamp_due(run_id: Any) -> bool:
    """Whether this process should stamp the run's progress now: at most every
    MAP_PROGRESS_EVERY seconds per process (the UPDATE itself keeps it to that across them),
    so a fast map does not write the run row for every item."""
    now = time.monotonic()
    if now - _stamped.get(run_id, 0.0) < MAP_PROGRESS_EVERY:
        return False
    if len(_stamped) > 1000:
        _stamped.clear()
    _stamped[run_id] = now
    return True


class _ProgressReporter:
    """Writes a running step's progress for this delivery only, at most every
    PROGRESS_EVERY seconds; what came in between is written by `flush` when the step ends."""

    def __init__(self, delivery: QuerySet[StepRun]) -> None:
        self.delivery = delivery
        self.written_at = 0.0
        self.pending: tuple[float, str] | None = None

    def __call__(self, fraction: float, message: str) -> None:
        self.pending = (fraction, message)
        if time.monotonic() - self.written_at >= PROGRESS_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            fraction, message = self.pending
            self.delivery.filter(status=RunStatus.RUNNING).update(
                progress=fraction, progress_message=message)
            self.pending, self.written_at = None, time.monotonic()


class _ToWorkerLog(logging.Handler):
    """Passes a step's records on to the `chains.step` logger when the project's logging
    lets that level through there (the step's own logger keeps every level)."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger("chains.step")
        if target.isEnabledFor(record.levelno):
            target.handle(record)


def _step_logger(step_run: StepRun, kept: StepLog) -> logging.Logger:
    """A logger for one execution of a step: its records are kept with the step (`kept`) and
    reach the worker's log as the project's logging configures `chains.step`."""
    logger = logging.Logger(f"chains.step.{step_run.step_type}", level=logging.DEBUG)
    logger.propagate = False
    logger.addHandler(kept)
    logger.addHandler(_ToWorkerLog())
    return logger


def _may_read_run(run: Run, other_run_id: str) -> bool:
    """Whether `run` may read another run's output folder: only if both the run's owner and
    its chain's author may (a user: their own runs; staff or an operator: any), so that
    neither whoever starts a chain nor whoever wrote it reads more through the other. Asked
    only when a step reads such a folder."""
    readers = {run.created_by_id, run.chain.created_by_id if run.chain else None} - {None}
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
    started = states.move(  # its loss in a server crash: the step is delivered again
        unflushed(StepRun.objects.filter(id=step_run.id, task_id=step_run.task_id)),
        RunStatus.RUNNING,
        started_at=now, attempts=F("attempts") + 1, worker=worker[:255], worker_pid=worker_pid,
        progress=None, progress_message="", log="")  # this start's own, not an earlier one's
    if not started:
        raise StepSkipped(f"step run {step_run.id} was cancelled or retried meanwhile")
    if run.status == RunStatus.PENDING:
        states.move(Run.objects.filter(id=run.id), RunStatus.RUNNING,
                    started_at=Coalesce(F("started_at"), Value(now)), last_progress_at=now)


# Seconds before a retry when a step sets no backoff.
RETRY_DELAY_SECONDS = 2


@dataclass(frozen=True)
class RetryPolicy:
    """How often a step is tried again after an unexpected error, and how long it waits."""

    max_retries: int = 0
    backoff: int | None = None
    backoff_max: int = 600

    def delay(self, retries: int) -> float:
        """Seconds before retry number `retries + 1`: RETRY_DELAY_SECONDS, or with a backoff
        a random wait up to backoff * 2**retries (full jitter), at most backoff_max and at
        most half the broker's visibility timeout (a retried message waits, unacknowledged,
        in its worker until then)."""
        if self.backoff is None:
            return RETRY_DELAY_SECONDS
        ceiling = min(self.backoff * 2 ** min(retries, 30), self.backoff_max,
                      settings.CHAINS_VISIBILITY_TIMEOUT // 2)
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


def step_retry_policy(*, step_run_id: int) -> RetryPolicy:
    row = (StepRun.objects.filter(id=step_run_id)
           .values_list("max_retries", "retry_backoff", "retry_backoff_max").first())
    return RetryPolicy(*row) if row else RetryPolicy()


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
        if info["exc_type"] == "NotRegistered":  # the worker has no task for this step type
            key = str(message).strip("'\"").removeprefix(TASK_NAME_PREFIX)
            return f"unknown step type {key!r}: no app on the worker that took it declares it"
        return f"{info['exc_type']}: {message}" if message else str(info["exc_type"])
    return str(task_result.status)
