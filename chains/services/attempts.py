"""Every attempt of a step is kept: before a step is reset for another attempt (a Celery retry,
a retry of its run, a resume, a new start after its worker was lost), its latest attempt is
copied into a StepAttempt row, with the traceback its task stored."""
from django.db import IntegrityError, transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone
from django_celery_results.models import TaskResult

from chains.models import AttemptEnd, RunStatus, StepAttempt, StepRun


def attempts_keep(steps: QuerySet[StepRun], *, ended_by: AttemptEnd) -> int:
    """Copy the latest attempt of each of `steps` that got anywhere (it started, or ended with
    an error) into its history, as it stands: a step still RUNNING was lost with its worker or
    message. Returns how many were kept."""
    tried = list(steps.filter(Q(started_at__isnull=False) | ~Q(error="")))
    if not tried:
        return 0
    tracebacks = dict(TaskResult.objects.filter(task_id__in=[s.task_id for s in tried])
                      .values_list("task_id", "traceback"))
    _keep(tried, ended_by=ended_by, tracebacks=tracebacks)
    return len(tried)


def attempt_failed(*, step_run_id: int, error: str, traceback: str) -> None:
    """A step raised and Celery tries it again (its max_retries): this attempt is FAILED."""
    step = StepRun.objects.filter(id=step_run_id).first()
    if step is not None:
        step.status, step.error, step.finished_at = RunStatus.FAILED, error, timezone.now()
        _keep([step], ended_by=AttemptEnd.STEP_RETRIED, tracebacks={step.task_id: traceback})


def _keep(steps: list[StepRun], *, ended_by: AttemptEnd, tracebacks: dict[str, str]) -> None:
    """Numbered after the step's last kept attempt; two keepers at once (a worker's retry and
    the reconciler) both succeed, the second numbering after the first."""
    for tries_left in range(3, 0, -1):
        numbers = dict(StepAttempt.objects.filter(step_run__in=steps).values("step_run")
                       .annotate(last=Max("number")).values_list("step_run", "last"))
        try:
            with transaction.atomic():
                StepAttempt.objects.bulk_create(StepAttempt(
                    step_run=step, number=numbers.get(step.id, 0) + 1, task_id=step.task_id,
                    status=step.status, error=step.error, log=step.log,
                    traceback=tracebacks.get(step.task_id) or "", worker=step.worker,
                    started_at=step.started_at, finished_at=step.finished_at,
                    ended_by=ended_by,
                ) for step in steps)
            return
        except IntegrityError:
            if tries_left == 1:
                raise
