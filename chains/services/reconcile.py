"""The reconciler (beat, and `manage.py reconcile_runs`): publish runs the broker never got,
recover runs whose worker or message was lost, resume or fail stalled ones."""
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from chains import states
from chains.broker import Holdings, holdings
from chains.events import run_ready
from chains.models import (
    AttemptEnd,
    IdempotencyKey,
    MapItem,
    Run,
    RunStatus,
    StepRun,
    WorkerHeartbeat,
)
from chains.services.attempts import attempts_keep
from chains.services.metrics import metrics_reconciled
from chains.services.runs import (
    _cancel_outstanding_steps,
    _renew_task_ids,
    run_end,
    runs_promote,
)
from chains.services.workflows import approvals_time_out, waiting_children_ended
from chains.time_limits import hard_time_limit

logger = logging.getLogger(__name__)

# Runs the orphan check looks at in one pass, the longest quiet first.
ORPHAN_BATCH = 1000


def _is_stalled(run: Run, now: datetime) -> bool:
    """No progress for CHAINS_STALL_SECONDS, plus the hard time limit of a step that is (or
    may still be) running. Progress is the run's last stamp or a running step's start."""
    running = list(run.step_runs.filter(status=RunStatus.RUNNING)
                   .values_list("time_limit", "started_at"))
    allowance = max(
        [hard_time_limit(limit or settings.CHAINS_STEP_TIME_LIMIT) for limit, _ in running],
        default=0,
    )
    stamps = [run.last_progress_at, *(started for _, started in running)]
    progress = max((stamp for stamp in stamps if stamp is not None), default=now)
    return progress < now - timedelta(seconds=settings.CHAINS_STALL_SECONDS + allowance)


def reconcile_runs(*, now: datetime | None = None) -> dict[str, int]:
    """The database is the ledger: publish runs whose publishing failed, resume runs that made
    no progress past their deadline (a lost message, a dead broker or worker) from the last
    completed step, and fail those that stalled CHAINS_MAX_RESUMES times."""
    now = now or timezone.now()
    IdempotencyKey.objects.filter(
        created_at__lt=now - timedelta(seconds=settings.CHAINS_IDEMPOTENCY_SECONDS)).delete()
    report = {"published": 0, "resumed": 0, "failed": 0, "recovered": recover_orphans(now=now),
              "approvals_timed_out": approvals_time_out(now=now),
              "children_ended": waiting_children_ended(),
              "queued_started": _start_queued()}
    grace = now - timedelta(seconds=settings.CHAINS_PUBLISH_GRACE_SECONDS)
    unpublished = Run.objects.filter(
        status=RunStatus.PENDING, published_at__isnull=True, created_at__lt=grace,
    ).filter(Q(last_progress_at__isnull=True) | Q(last_progress_at__lt=grace)
             ).values_list("id", flat=True)
    for run_id in list(unpublished):
        report["published"] += _reconcile_one(_publish_again, run_id=run_id)
    stalled = Run.objects.filter(  # a WAITING run waits for a person or a child run
        status__in=states.ACTIVE, published_at__isnull=False,
        last_progress_at__lt=now - timedelta(seconds=settings.CHAINS_STALL_SECONDS),
    )
    for run in list(stalled):
        if not _is_stalled(run, now):
            continue
        if run.resumes >= settings.CHAINS_MAX_RESUMES:
            report["failed"] += _fail_stalled(run, now)
        elif _claim_resume(run):
            report["resumed"] += _reconcile_one(_resume, run=run)
    metrics_reconciled(report)
    return report


def _start_queued() -> int:
    """Queued runs whose slot freed without the end being acted on (the process died between
    a run's end and its receiver): started now."""
    started = 0
    chains = (Run.objects.filter(status=RunStatus.QUEUED, chain__isnull=False)
              .values_list("chain_id", flat=True).distinct())
    for chain_id in list(chains)[:ORPHAN_BATCH]:
        try:
            started += runs_promote(chain_id=chain_id)
        except Exception:  # one chain's trouble does not stop the others
            logger.exception("starting the queued runs of chain %s failed", chain_id)
    return started


def _resume(*, run: Run) -> bool:
    """Keep the stalled attempts, start the unfinished steps afresh (PENDING, new task ids),
    and publish the run again from its last completed stage."""
    with transaction.atomic():
        unfinished = run.step_runs.exclude(status__in=states.DONE)
        attempts_keep(unfinished, ended_by=AttemptEnd.RUN_RESUMED)
        states.move(unfinished.filter(status=RunStatus.RUNNING), RunStatus.PENDING,
                    started_at=None, worker="", worker_pid=None, progress=None,
                    progress_message="", log="")
        _renew_task_ids(run)
    return _publish_again(run_id=run.id, resumed=True)


def _publish_again(*, run_id: uuid.UUID, resumed: bool = False) -> bool:
    """Ready the run again (the reconciler holds no transaction, so it is published at once)
    and say whether it reached the broker, or finished when only its finaliser was lost."""
    before = timezone.now()
    run_ready.send(sender=Run, run_id=run_id, resumed=resumed)
    return Run.objects.filter(id=run_id).filter(
        Q(published_at__gte=before) | Q(status__in=states.FINAL)).exists()


def recover_orphans(*, now: datetime | None = None) -> int:
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
        status__in=states.ACTIVE, published_at__isnull=False, last_progress_at__lt=quiet,
    ).order_by("last_progress_at").values_list("id", flat=True)[:ORPHAN_BATCH])
    if not run_ids:
        return 0
    unfinished = list(StepRun.objects.filter(run_id__in=run_ids).exclude(
        status__in=states.DONE).order_by("run_id", "stage", "index"))
    alive = _live_workers()
    broker = None
    if any(step.status == RunStatus.PENDING or step.map for step in unfinished):
        broker = holdings({step.queue for step in unfinished})
    recovered = 0
    for run_id in set(run_ids) - {step.run_id for step in unfinished}:
        # Every step is done and only the finaliser after a parallel last stage is missing.
        recovered += _reconcile_one(_publish_again, run_id=run_id)
    for run_id, group in groupby(unfinished, key=lambda step: step.run_id):
        steps = list(group)
        current = [step for step in steps if step.stage == steps[0].stage]
        if any(_map_still_held(step, alive, broker) if _is_mapping(step) else
               _still_held(step, alive, broker) for step in current):
            continue
        if _reconcile_one(_republish_orphan, run_id=run_id, steps=steps):
            recovered += 1
    return recovered


def _live_workers() -> dict[tuple[str, int], datetime]:
    """(host name, pid) -> boot time of each worker whose heartbeat is recent by the
    database's clock (the one heartbeats are written with)."""
    recent = Now() - timedelta(seconds=settings.CHAINS_WORKER_DEAD_SECONDS)
    return {(hostname, pid): booted for hostname, pid, booted in WorkerHeartbeat.objects
            .filter(seen_at__gte=recent).values_list("hostname", "pid", "booted_at")}


def _still_held(step: StepRun, alive: dict[tuple[str, int], datetime],
                broker: Holdings | None) -> bool:
    """Whether something still has this step in hand: a live worker running it (the same
    incarnation that started it), or a queue it waits in. Unknown counts as held."""
    if step.status == RunStatus.RUNNING:
        if step.worker_pid is None:  # started before workers said who they are
            return True
        booted = alive.get((step.worker, step.worker_pid))
        return booted is not None and step.started_at is not None and booted <= step.started_at
    if broker is None:
        return True
    # Taken a moment ago: a worker is about to start it (or retries it after a countdown).
    taken_for = broker.taken.get(step.task_id)
    return step.task_id in broker.waiting or (
        taken_for is not None and taken_for < settings.CHAINS_ORPHAN_SECONDS)


def _is_mapping(step: StepRun) -> bool:
    """A map step whose items were published: its items, not the step, are in hand."""
    return step.map and step.status == RunStatus.RUNNING and step.items_total is not None


def _map_still_held(step: StepRun, alive: dict[tuple[str, int], datetime],
                    broker: Holdings | None) -> bool:
    """Whether something still has one of a map step's unfinished items in hand: a live
    worker running it, or a queue it waits in. Unknown counts as held."""
    hosts = {hostname for hostname, _ in alive}
    open_items = MapItem.objects.filter(step_run=step, status__in=states.ACTIVE)
    for status, task_id, worker in open_items.values_list("status", "task_id", "worker"):
        if status == RunStatus.RUNNING and worker in hosts:
            return True
        if status == RunStatus.PENDING and (broker is None or task_id in broker.waiting
                                            or task_id in broker.taken):
            return True
    return False


@transaction.atomic
def _republish_orphan(*, run_id: uuid.UUID, steps: list[StepRun]) -> bool:
    """Fresh task ids (and PENDING) for the run's unfinished steps, each only if it is as it
    was read; then the run is published from its last completed stage once this commits."""
    attempts_keep(StepRun.objects.filter(id__in=[s.id for s in steps],
                                         status=RunStatus.RUNNING),
                  ended_by=AttemptEnd.WORKER_LOST)
    for step in steps:
        as_read = StepRun.objects.filter(id=step.id, task_id=step.task_id, status=step.status,
                                         attempts=step.attempts)
        if step.status == RunStatus.PENDING:
            renewed = as_read.update(task_id=str(uuid.uuid4()))
        else:
            renewed = states.move(as_read, RunStatus.PENDING, task_id=str(uuid.uuid4()),
                                  progress=None, progress_message="", log="")
        if not renewed:  # it moved meanwhile: leave the run alone this time
            transaction.set_rollback(True)
            return False
    logger.warning("run %s lost its worker or its message: published again", run_id)
    run_ready.send(sender=Run, run_id=run_id)
    return True


def _reconcile_one(function: Callable[..., bool], **kwargs: Any) -> bool:
    """One run's trouble does not stop the reconciler from reaching the others."""
    try:
        return bool(function(**kwargs))
    except Exception:
        logger.exception("reconciling %s failed", kwargs)
        return False


def _claim_resume(run: Run) -> bool:
    """Only one reconciler resumes a run for a given stall: the update is the claim."""
    return bool(Run.objects.filter(id=run.id, resumes=run.resumes, status__in=states.ACTIVE)
                .update(resumes=run.resumes + 1, last_progress_at=timezone.now()))


@transaction.atomic
def _fail_stalled(run: Run, now: datetime) -> int:
    seconds = int((now - (run.last_progress_at or now)).total_seconds())
    failed = run_end(
        run.id, RunStatus.FAILED, finished_at=now,
        error=f"no progress for {seconds}s after {run.resumes} resumes "
        "(lost messages, or workers that died or do not consume the step's queue)",
    )
    if failed:
        _cancel_outstanding_steps(run.id)
    return failed
