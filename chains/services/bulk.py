"""Cancel, retry or delete many runs at once: each run checked and acted on exactly as a
single action is (chains.permissions, then the run service, each in its own short
transaction), the matching runs walked in chunks of ids. More runs than IN_REQUEST_LIMIT go
to a BulkJob that a Celery task works through, keeping its progress on the job's row."""
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from celery import current_app as app
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from chains import audit, selectors
from chains.errors import ChainError
from chains.models import BulkJob, BulkJobStatus, Run
from chains.permissions import Actor, can_change_run, can_delete_run, signed_in
from chains.services.runs import run_cancel, run_delete, run_retry

Action = Literal["cancel", "retry", "delete"]
ACTIONS: tuple[Action, ...] = ("cancel", "retry", "delete")
# Skip reasons: the user may not act on the run; its status does not allow the action (the
# service refused it: retrying a COMPLETED run, cancelling a finished one); it was deleted
# between the walk reading its id and the action.
NOT_PERMITTED = "not permitted"
WRONG_STATUS = "wrong status"
GONE = "gone"
# At most this many matching runs are acted on within the request; more go to a BulkJob.
IN_REQUEST_LIMIT = 1000
CHUNK = 500
# Fields a run's action never needs: large JSON left in the database while a chunk is read.
_UNREAD = ("inputs", "result")

Progress = Callable[[int, dict[str, int]], None]


def as_action(value: str) -> Action:
    """`value` as an action, or a ChainError naming the field."""
    for action in ACTIONS:
        if value == action:
            return action
    raise ChainError("unknown action", errors={"action": [
        f"{value[:32]!r} is not one of {', '.join(ACTIONS)}"]})


def _permitted(action: Action, user: Actor, run: Run) -> bool:
    return can_delete_run(user, run) if action == "delete" else can_change_run(user, run)


def _act(action: Action, run: Run) -> None:
    if action == "cancel":
        run_cancel(run=run, reason="cancelled (bulk)")
    elif action == "retry":
        run_retry(run=run)
    else:
        run_delete(run=run)


def _one(action: Action, user: Actor, run: Run | None) -> str | None:
    """Act on one run; None when done, else why it was skipped."""
    if run is None:
        return GONE
    if not _permitted(action, user, run):
        return NOT_PERMITTED
    try:
        _act(action, run)
    except Run.DoesNotExist:  # deleted while the service read it again
        return GONE
    except ChainError as exc:
        if not Run.objects.filter(id=run.id).exists():
            return GONE
        if exc.message in ("finished", "not retryable"):
            return WRONG_STATUS
        return exc.message  # e.g. "too many open runs" (a user's limit), said as it is
    return None


def runs_bulk(*, user: Actor, action: Action, runs: QuerySet[Run] | dict[str, Any],
              chunk: int = CHUNK, progress: Progress | None = None) -> dict[str, Any]:
    """Apply `action` to every run of `runs` (a queryset, or a filter of selectors.run_list
    over the runs `user` sees), oldest first, `chunk` ids at a time. `progress(done,
    skipped)` is called after each chunk. Returns {"done": n, "skipped": {reason: n}}."""
    action = as_action(action)
    if isinstance(runs, dict):
        runs = selectors.run_list(user=user, **runs)
    done = 0
    skipped: Counter[str] = Counter()
    for ids in selectors.run_id_chunks(runs, chunk):
        found = Run.objects.select_related("created_by").defer(*_UNREAD).in_bulk(ids)
        for run_id in ids:
            reason = _one(action, user, found.get(run_id))
            if reason is None:
                done += 1
            else:
                skipped[reason] += 1
        if progress is not None:
            progress(done, dict(skipped))
    return {"done": done, "skipped": dict(skipped)}


def matching_count(runs: QuerySet[Run], *, cap: int | None = None) -> int:
    """How many runs match, counting at most `cap` + 1 (enough to tell "more than cap")."""
    ids = runs.order_by().values("pk")
    return (ids[: cap + 1] if cap is not None else ids).count()


def bulk_job_create(*, user: Actor, action: Action, filter: dict[str, Any],
                    source: str = "api") -> BulkJob:
    """A job for runs_bulk over `filter`, started by the worker once this transaction
    commits (chains.tasks.runs_bulk_job)."""
    job = BulkJob.objects.create(user=signed_in(user), action=as_action(action), filter=filter,
                                 source=source)
    transaction.on_commit(lambda: _publish(job.id))
    return job


def _publish(job_id: Any) -> None:
    # chains.tasks imports the services: the task is sent by name, on the default queue.
    app.send_task("chains.runs_bulk_job", kwargs={"job_id": str(job_id)})


def bulk_job_run(*, job_id: Any, chunk: int = CHUNK) -> BulkJob:
    """Work through a job: count what matches, act chunk by chunk, writing the counts to the
    job after each chunk; a job already started (a redelivered task) is left alone."""
    claimed = BulkJob.objects.filter(id=job_id, status=BulkJobStatus.PENDING).update(
        status=BulkJobStatus.RUNNING)
    job = BulkJob.objects.select_related("user").get(id=job_id)
    if not claimed:
        return job
    user = get_user_model().objects.get(pk=job.user_id)
    runs = selectors.run_list(user=user, **job.filter)
    BulkJob.objects.filter(id=job.id).update(matched=matching_count(runs))

    def progress(done: int, skipped: dict[str, int]) -> None:
        BulkJob.objects.filter(id=job.id).update(done=done, skipped=skipped)

    try:
        with audit.acting(source=job.source, user=user):
            counts = runs_bulk(user=user, action=as_action(job.action), runs=runs, chunk=chunk,
                               progress=progress)
    except Exception as exc:
        BulkJob.objects.filter(id=job.id).update(status=BulkJobStatus.FAILED, error=str(exc),
                                                 finished_at=timezone.now())
        raise
    BulkJob.objects.filter(id=job.id).update(
        status=BulkJobStatus.COMPLETED, done=counts["done"], skipped=counts["skipped"],
        finished_at=timezone.now())
    job.refresh_from_db()
    return job
