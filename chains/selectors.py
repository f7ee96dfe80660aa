"""Every read that admin, API and commands share."""
from django.db.models import Count, Q, QuerySet
from django_celery_results.models import TaskResult

from chains.models import Chain, Run, RunStatus, StepRun


def runs_visible_to(user) -> QuerySet[Run]:
    """Staff see every run; everyone else sees their own."""
    runs = Run.objects.select_related("chain", "created_by")
    if user.is_staff:
        return runs
    return runs.filter(created_by=user)


def run_list(
    *, user, status: str | None = None, chain: int | None = None, trigger: str | None = None,
    task_type: str | None = None,
) -> QuerySet[Run]:
    runs = runs_visible_to(user)
    if status:
        runs = runs.filter(status=status)
    if chain:
        runs = runs.filter(chain_id=chain)
    if trigger:
        runs = runs.filter(trigger=trigger)
    if task_type:
        runs = runs.filter(task_type=task_type)
    return runs.order_by("-created_at")


def run_statistics(*, user) -> dict[str, int]:
    """Counts by status in one query."""
    counts = runs_visible_to(user).aggregate(
        total=Count("id"),
        **{status.value.lower(): Count("id", filter=Q(status=status)) for status in RunStatus},
    )
    return {key: value or 0 for key, value in counts.items()}


def step_runs_with_results(run: Run) -> list[StepRun]:
    """The run's steps in order, each with `.task_result` (TaskResult or None): two queries."""
    step_runs = list(run.step_runs.order_by("index"))
    results = TaskResult.objects.in_bulk(
        [sr.task_id for sr in step_runs], field_name="task_id"
    )
    for step_run in step_runs:
        step_run.task_result = results.get(step_run.task_id)
    return step_runs


def chains_visible_to(user) -> QuerySet[Chain]:
    return Chain.objects.select_related("created_by").prefetch_related("steps")
