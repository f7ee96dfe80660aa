"""Celery tasks: one per registry row (named chains.step.<key>), the run finaliser and the
step error callback. Thin: they receive ids and JSON and call services."""
import logging
import traceback
from functools import partial
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.signals import task_postrun, task_prerun
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from chains import audit, heartbeats, services
from chains.canvas import FINISH_TASK
from chains.steps import StepFailed, StepType, on_register

DATABASE_RETRY_SECONDS = 3
DATABASE_ERRORS = (OperationalError, InterfaceError)

logger = logging.getLogger(__name__)


class StepTask(Task):
    """Runs a registry step through services.step_execute and reports how it ended. The step's
    row records its start (status, time, worker), so no STARTED task result is written.
    A step's own failure (StepFailed) is expected: one WARNING line, no traceback in the log
    (its traceback is still stored with the task's result); anything else is logged by Celery
    at ERROR with its traceback."""

    throws = (StepFailed,)

    def execute_step(self, previous: Any, step_run_id: int, finish_run: bool,
                     item: int | None = None) -> Any:
        """One step, or with `item` one item of a map step (`previous` is then the item)."""
        task_id = self.request.id
        if item is None:
            def fail(error: str) -> None:
                services.step_fail(step_run_id=step_run_id, error=error, task_id=task_id)
        else:
            def fail(error: str) -> None:
                services.map_item_fail(step_run_id=step_run_id, index=item, error=error,
                                       task_id=task_id)
        try:
            if item is not None:
                return services.map_item_execute(step_run_id=step_run_id, index=item,
                                                 value=previous, task_id=task_id,
                                                 worker=self.request.hostname or "")
            store_with_step = getattr(self.backend, "store_with_step", None)
            counted_before = getattr(self.backend, "counted_with_step_before", None)
            return services.step_execute(
                step_run_id=step_run_id, previous=previous, task_id=task_id,
                finish_run=finish_run, worker=self.request.hostname or "",
                worker_pid=heartbeats.worker_main_pid(),
                record_result=store_with_step and partial(store_with_step, task_id,
                                                          request=self.request),
                counted_before=counted_before and partial(counted_before, task_id))
        except services.StepSkipped as exc:
            raise Ignore(str(exc)) from exc
        except StepFailed as exc:
            logger.warning("step %s%s (task %s) failed: %s", step_run_id,
                           "" if item is None else f" item {item}", task_id, exc)
            fail(str(exc))
            raise
        except SoftTimeLimitExceeded:
            fail("time limit exceeded")
            raise
        except DATABASE_ERRORS as exc:
            # The ledger is unreachable (a restart, a failover): try again until it is back.
            raise self.retry(exc=exc, countdown=DATABASE_RETRY_SECONDS, max_retries=None) from exc
        except Exception as exc:
            policy = services.step_retry_policy(step_run_id=step_run_id)
            if self.request.retries < policy.max_retries:
                if item is None:
                    services.attempt_failed(step_run_id=step_run_id,
                                            error=f"{type(exc).__name__}: {exc}",
                                            traceback=traceback.format_exc())
                raise self.retry(exc=exc, countdown=policy.delay(self.request.retries),
                                 max_retries=policy.max_retries) from exc
            fail(f"{type(exc).__name__}: {exc}")
            raise


def _register_step_task(step_type: StepType) -> Task:
    def run(self: StepTask, previous: Any = None, *, step_run_id: int,
            finish_run: bool = False, item: int | None = None, run_id: str = "",
            chain: str = "") -> Any:
        # run_id and chain are for Flower and `celery inspect`; the step's row knows both.
        return self.execute_step(previous, step_run_id, finish_run, item)

    run.__name__ = step_type.key.replace(".", "_")
    run.__doc__ = step_type.description
    return shared_task(run, bind=True, base=StepTask, name=step_type.task_name)


# One Celery task per step type, for those declared so far and those declared later.
STEP_TASKS: dict[str, Task] = {}
on_register(lambda step_type: STEP_TASKS.setdefault(step_type.key,
                                                    _register_step_task(step_type)))


# Audit entries made by a task come from `beat` (what beat runs) or the `worker`.
BEAT_TASKS = frozenset({"chains.run_scheduled", "chains.reconcile_runs"})
_audit_tokens: dict[str, Any] = {}


@task_prerun.connect(dispatch_uid="chains.audit_source")
def _audit_source(task_id: str, task: Task, **kwargs: Any) -> None:
    _audit_tokens[task_id] = audit.enter(source="beat" if task.name in BEAT_TASKS else "worker")


@task_postrun.connect(dispatch_uid="chains.audit_source_done")
def _audit_source_done(task_id: str, **kwargs: Any) -> None:
    token = _audit_tokens.pop(task_id, None)
    if token is not None:
        audit.leave(token)


@task_postrun.connect(dispatch_uid="chains.close_old_connections")
def _close_old_connections(task: Task, **kwargs: Any) -> None:
    """A worker's connection kept across tasks (CELERY_DB_REUSE_MAX) is closed once it failed
    or outlived CONN_MAX_AGE, as Django closes one after a request (a task applied in the
    caller's process leaves the caller's connection alone)."""
    if not getattr(task.request, "is_eager", False):
        close_old_connections()


@shared_task(name=FINISH_TASK, ignore_result=True)
def run_finish(result: Any = None, *, run_id: str) -> None:
    services.run_finish(run_id=run_id, result=result)


@shared_task(name="chains.step_failed", ignore_result=True)
def step_failed(task_id: str) -> None:
    """The error callback that steps published before the result backend failed their runs
    carry: finalises the run when the step could not."""
    services.step_fail_by_task_id(task_id=task_id)


@shared_task(bind=True, name="chains.deliver_notification", ignore_result=True)
def deliver_notification(self: Task, delivery_id: int) -> None:
    """One notification (services.notifications), on the general queue: a failure that may
    pass is tried again after delivery_backoff, CHAINS_NOTIFY_MAX_RETRIES times at most."""
    retries = settings.CHAINS_NOTIFY_MAX_RETRIES
    if services.delivery_attempt(delivery_id=delivery_id, last=self.request.retries >= retries):
        raise self.retry(countdown=services.delivery_backoff(self.request.retries),
                         max_retries=retries)


@shared_task(name="chains.reconcile_runs", ignore_result=True)
def reconcile_runs() -> dict:
    """Run by beat every CHAINS_RECONCILE_EVERY seconds."""
    return services.reconcile_runs()


@shared_task(name="chains.run_scheduled", ignore_result=True)
def run_scheduled(schedule_id: int) -> str | None:
    """What every ChainSchedule's PeriodicTask runs."""
    run = services.run_start_scheduled(schedule_id=schedule_id)
    return str(run.id) if run else None


@shared_task(name="chains.runs_bulk_job", ignore_result=True)
def runs_bulk_job(job_id: str) -> None:
    """A bulk cancel, retry or delete too large for one request (services.bulk)."""
    services.bulk_job_run(job_id=job_id)
