"""Small helpers shared by tests."""
import contextlib
import time

from django.db.models import QuerySet
from django_celery_beat.models import PeriodicTask

from chains.models import Chain, ChainSchedule, Run, Step, StepRun


def wait_for_run(run_id, *, timeout: float = 30) -> Run:
    """Poll the database until the run is finished; fail the test if it is not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(id=run_id)
        if run.is_finished:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout}s")


def write_csv(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def task_results(task_ids: list[str], *, timeout: float = 15):
    """The TaskResult rows of `task_ids`, once there is one for each (or the deadline passed):
    a run's last step completes the run before its worker stores the step's task result."""
    from django_celery_results.models import TaskResult

    deadline = time.monotonic() + timeout
    while True:
        rows = TaskResult.objects.filter(task_id__in=task_ids)
        if rows.count() >= len(set(task_ids)) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def task_state(task_id: str, wanted: str, *, timeout: float = 15) -> str | None:
    """The state of a task's TaskResult once it is `wanted` (or the deadline passed): a step
    that fails its run does so before its worker stores the FAILURE."""
    from django_celery_results.models import TaskResult

    deadline = time.monotonic() + timeout
    while True:
        state = TaskResult.objects.filter(task_id=task_id).values_list("status",
                                                                       flat=True).first()
        if state == wanted or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


@contextlib.contextmanager
def unchanged(*sources):
    """Fail unless the block leaves the rows of each model or queryset as it found them, field
    for field: for the writes that must be refused. Without sources: the chains app's chains,
    steps, runs, step runs and schedules, and the beat's entries."""
    sources = sources or (Chain, Step, Run, StepRun, ChainSchedule, PeriodicTask)
    querysets = [s if isinstance(s, QuerySet) else s._default_manager.all() for s in sources]

    def rows() -> list[list[dict]]:
        return [list(qs.order_by("pk").values()) for qs in querysets]

    before = rows()
    yield
    after = rows()
    changed = {qs.model.__name__: (old, new)
               for qs, old, new in zip(querysets, before, after, strict=True) if old != new}
    assert not changed, f"rows changed (before, after): {changed}"
