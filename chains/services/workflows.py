"""The steps that shape a run rather than compute: conditions (`when`), map steps, approvals
and sub-chains. A map step, an approval or a sub-chain ends its run's canvas (chains.canvas):
the worker starts it and returns; when its items are done, a person decides or its child run
ends, `step_continue` completes it and the run is published again from the next stage
through `run_ready`, the path a retry takes. Nothing waits on a worker meanwhile."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import current_app as app
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from chains import audit, states
from chains.canvas import pauses
from chains.conditions import holds
from chains.errors import ChainError, Conflict
from chains.events import run_ready, run_waiting
from chains.models import (
    Approval,
    Chain,
    Decision,
    MapItem,
    Run,
    RunStatus,
    RunTrigger,
    StepRun,
)
from chains.services.runs import (
    _cancel_outstanding_steps,
    _is_current_child,
    _run_complete,
    run_end,
    run_start,
    step_fail,
)
from chains.steps import STEP_TYPES, StepFailed
from chains.steps.flow import APPROVAL, ApprovalParams, SubchainParams
from chains.time_limits import hard_time_limit

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# A map's items stamp their run's progress at most this often (seconds): enough for the
# reconciler to see the run is alive, without 10,000 writes to one row.
MAP_PROGRESS_EVERY = 2


class StepSkipped(Exception):
    """The step's run was cancelled, failed or deleted, or the step moved meanwhile: do not
    run it."""


# --- Going on after a step that paused the run ---------------------------------------------


def step_continue(step_run: StepRun, *, result: Any, now: datetime,
                  to: str = RunStatus.COMPLETED, any_delivery: bool = False) -> bool:
    """Inside a transaction: the step (RUNNING or WAITING) is done with `result`; the run
    completes when it was the last stage, or goes on with the next stage. Returns whether
    this call was the one that completed the step. `any_delivery`: whatever its task id is
    now (a map's last item, whose step may have been published again meanwhile)."""
    rows = StepRun.objects.filter(id=step_run.id)
    if not any_delivery:
        rows = rows.filter(task_id=step_run.task_id)
    done = states.move(rows, to,
                       result=result, error="", finished_at=now, progress=None,
                       progress_message="")
    if not done:
        return False
    run = Run.objects.only("id", "result_mode").get(id=step_run.run_id)
    if not StepRun.objects.filter(run_id=run.id, stage__gt=step_run.stage).exists():
        _run_complete(run, result=result, now=now, steps_done=F("steps_done") + 1)
        return True
    Run.objects.filter(id=run.id).update(steps_done=F("steps_done") + 1, last_progress_at=now)
    states.move(Run.objects.filter(id=run.id, status=RunStatus.WAITING), RunStatus.RUNNING)
    run_ready.send(sender=Run, run_id=run.id)
    return True


def _wait(step_run: StepRun) -> None:
    """The step and its run wait (an approval, a child run). A step that moved meanwhile (the
    reconciler published it again under a new task id) raises StepSkipped: the caller's
    transaction rolls back, and the newer delivery does the work."""
    if not states.move(StepRun.objects.filter(id=step_run.id, task_id=step_run.task_id),
                       RunStatus.WAITING, progress=None, progress_message=""):
        raise StepSkipped(f"step run {step_run.id} moved before it could wait")
    states.move(Run.objects.filter(id=step_run.run_id), RunStatus.WAITING)


# --- Conditions -----------------------------------------------------------------------------


def step_skip_if(step_run: StepRun, previous: Any, *, finish_run: bool = False
                 ) -> tuple[bool, Any]:
    """A step whose condition does not hold is SKIPPED: alone in its stage it passes its input
    on, in a parallel stage it gives null; `finish_run`: it was the run's last step, and the
    run completes. Returns (skipped, what it hands on)."""
    if step_run.when is None or holds(step_run.when, previous):
        return False, None
    alone = StepRun.objects.filter(run_id=step_run.run_id, stage=step_run.stage).count() == 1
    result = previous if alone else None
    now = timezone.now()
    with transaction.atomic():
        states.move(Run.objects.filter(id=step_run.run_id, status=RunStatus.PENDING),
                    RunStatus.RUNNING, started_at=now)
        if pauses(step_run):  # its canvas ended here: go on from the next stage
            step_continue(step_run, result=result, now=now, to=RunStatus.SKIPPED)
        else:
            skipped = states.move(
                StepRun.objects.filter(id=step_run.id, task_id=step_run.task_id),
                RunStatus.SKIPPED, result=result, finished_at=now)
            if skipped and finish_run:
                run = Run.objects.only("id", "result_mode").get(id=step_run.run_id)
                _run_complete(run, result=result, now=now, steps_done=F("steps_done") + 1)
            elif skipped:
                Run.objects.filter(id=step_run.run_id).update(
                    steps_done=F("steps_done") + 1, last_progress_at=now)
    return True, result


# --- Map ------------------------------------------------------------------------------------


def map_start(step_run: StepRun, previous: Any, *, time_limit_default: int) -> None:
    """Publish one task per item of `previous` (the step is RUNNING). Started again (a
    redelivery, a resume, a retry of the run), it keeps the items already done and publishes
    the others under fresh task ids, so a late delivery of an old message does nothing."""
    if not isinstance(previous, list):
        raise StepFailed(f"map: its input is not a list but {_a(previous)}")
    limit = settings.CHAINS_MAX_MAP_ITEMS
    if len(previous) > limit:
        raise StepFailed(f"map: {len(previous)} items is over the limit of {limit} "
                         "(CHAINS_MAX_MAP_ITEMS)")
    now = timezone.now()
    if not previous:
        with transaction.atomic():
            step_continue(step_run, result=[], now=now)
        return
    with transaction.atomic():
        items = MapItem.objects.filter(step_run=step_run)
        if items.count() != len(previous):
            items.delete()
            MapItem.objects.bulk_create(
                MapItem(step_run=step_run, index=index, task_id=str(uuid.uuid4()))
                for index in range(len(previous)))
        else:  # started before: the items not done start afresh
            again = list(items.exclude(status=RunStatus.COMPLETED).only("id"))
            for item in again:
                item.task_id, item.status, item.error = str(uuid.uuid4()), RunStatus.PENDING, ""
                item.attempts, item.started_at, item.finished_at = 0, None, None
            MapItem.objects.bulk_update(again, ["task_id", "status", "error", "attempts",
                                                "started_at", "finished_at"], batch_size=1000)
        done = items.filter(status=RunStatus.COMPLETED).count()
        StepRun.objects.filter(id=step_run.id).update(
            items_total=len(previous), items_done=done, progress=done / len(previous),
            progress_message="")  # items_done of items_total says it
        todo = list(items.exclude(status=RunStatus.COMPLETED).values_list("index", "task_id"))
        if not todo:  # every item was done before (a retry after the step itself failed)
            results = list(items.order_by("index").values_list("result", flat=True))
            step_continue(step_run, result=results, now=now)
            return
        transaction.on_commit(lambda: _publish_items(step_run, previous, todo,
                                                     time_limit_default=time_limit_default))


def _publish_items(step_run: StepRun, values: list[Any], todo: list[tuple[int, str]], *,
                   time_limit_default: int) -> None:
    """One message per item, over one broker connection. Items store no task result (their
    rows are the record), so 10,000 items write no 10,000 result rows."""
    soft = step_run.time_limit or time_limit_default
    name = STEP_TYPES[step_run.step_type].task_name
    with app.producer_or_acquire() as producer:
        for index, task_id in todo:
            app.signature(
                name, args=(values[index],),
                kwargs={"step_run_id": step_run.id, "item": index, "run_id": str(step_run.run_id)},
                task_id=task_id, queue=step_run.queue, soft_time_limit=soft,
                time_limit=hard_time_limit(soft), ignore_result=True,
            ).apply_async(producer=producer)


def map_item_fail(*, step_run_id: int, index: int, error: str,
                  task_id: str | None = None) -> None:
    """An item failed for good: the item, its step and the run fail naming the item."""
    items = MapItem.objects.filter(step_run_id=step_run_id, index=index)
    if task_id is not None:
        items = items.filter(task_id=task_id)
    with transaction.atomic():
        if states.move(items, RunStatus.FAILED, error=error, finished_at=timezone.now()):
            step_fail(step_run_id=step_run_id, error=f"item {index}: {error}")


def map_item_fail_by_task_id(*, task_id: str, error: str) -> bool:
    """The worker recorded a failure of an item (a hard time limit) that the item could not
    report itself. Returns whether `task_id` was an item's."""
    item = MapItem.objects.filter(task_id=task_id).values_list("step_run_id", "index").first()
    if item is None:
        return False
    map_item_fail(step_run_id=item[0], index=item[1], error=error, task_id=task_id)
    return True


def map_counts(step_run: StepRun) -> dict[str, int]:
    """How many of a map step's items are in each status."""
    counts = dict.fromkeys((s.value for s in (RunStatus.PENDING, RunStatus.RUNNING,
                                              RunStatus.COMPLETED, RunStatus.FAILED,
                                              RunStatus.CANCELLED)), 0)
    for status, n in (step_run.items.values_list("status").annotate(n=Count("id"))
                      .order_by()):
        counts[status] = n
    return counts


def _a(value: Any) -> str:
    return {dict: "an object", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# --- Approvals ------------------------------------------------------------------------------


def approval_wait(step_run: StepRun, previous: Any) -> None:
    """Ask for a decision: the step and its run wait, holding nothing."""
    params = ApprovalParams.model_validate(step_run.params)
    now = timezone.now()
    with transaction.atomic():
        Approval.objects.get_or_create(step_run=step_run, task_id=step_run.task_id, defaults={
            "message": params.message, "approvers_group": params.approvers_group,
            "input": previous, "due_at": now + timedelta(seconds=params.timeout_seconds)})
        _wait(step_run)
        run_waiting.send(sender=Run, run_id=step_run.run_id, step_run_id=step_run.id)


def may_decide(user: User, approval: Approval) -> bool:
    """chains.approve_run, and membership of the approval's group when it names one."""
    if not user.is_active or not user.has_perm("chains.approve_run"):
        return False
    return (not approval.approvers_group or user.is_superuser
            or user.groups.filter(name=approval.approvers_group).exists())


def pending_approval(run: Run) -> Approval | None:
    """The decision the run waits for, if it waits for one."""
    return (Approval.objects.select_related("step_run")
            .filter(step_run__run=run, step_run__status=RunStatus.WAITING, decision="",
                    task_id=F("step_run__task_id"))
            .order_by("-created_at").first())


@transaction.atomic
def run_decide(*, run: Run, user: User, approve: bool, comment: str = "") -> Run:
    """Approve (the run goes on with the approval's input) or reject (the run fails with
    "rejected by <user>: <comment>"). A second decision is a Conflict naming the first."""
    if len(comment) > 2000:
        raise ChainError("comment", errors={"comment": ["must be at most 2000 characters"]})
    if not user.is_active or not user.has_perm("chains.approve_run"):
        raise PermissionDenied("deciding needs the chains.approve_run permission")
    approval = (Approval.objects.select_related("step_run", "decided_by")
                .filter(step_run__run=run, step_run__step_type=APPROVAL)
                .order_by("-created_at", "-id").first())
    if approval is None:
        raise Conflict("not waiting", errors={"status": [
            f"run is {run.status} and has no approval to decide"]})
    if not may_decide(user, approval):
        raise PermissionDenied("deciding needs the chains.approve_run permission in group "
                               f"{approval.approvers_group!r}")
    step_run = approval.step_run
    if approval.decision:
        by = f" by {approval.decided_by}" if approval.decided_by else ""
        raise Conflict("decided", errors={"status": [
            f"already decided: {approval.get_decision_display().lower()}{by}"]})
    now = timezone.now()
    decision = Decision.APPROVED if approve else Decision.REJECTED
    # The update is the check: of two decisions at once, one wins; the step must still wait.
    decided = Approval.objects.filter(
        id=approval.id, decision="", step_run__status=RunStatus.WAITING,
    ).update(decision=decision, decided_by=user, decided_at=now, comment=comment)
    if not decided:
        approval.refresh_from_db()
        step_run.refresh_from_db()
        by = f" by {approval.decided_by}" if approval.decided_by else ""
        raise Conflict("decided", errors={"status": [
            f"already decided: {approval.get_decision_display().lower()}{by}"
            if approval.decision else f"the approval step is {step_run.status}"]})
    audit.record("run approved" if approve else "run rejected", run, user=user,
                 comment=comment, step=step_run.index + 1)
    if approve:
        step_continue(step_run, result=approval.input, now=now)
    else:
        error = f"rejected by {user.get_username()}" + (f": {comment}" if comment else "")
        _fail_waiting(step_run, error=error, run_error=error, now=now)
    run.refresh_from_db()
    return run


def _fail_waiting(step_run: StepRun, *, error: str, run_error: str, now: datetime) -> None:
    states.move(StepRun.objects.filter(id=step_run.id), RunStatus.FAILED, error=error,
                finished_at=now)
    if run_end(step_run.run_id, RunStatus.FAILED, error=run_error, finished_at=now):
        _cancel_outstanding_steps(step_run.run_id)


def approvals_time_out(*, now: datetime) -> int:
    """Approvals past their timeout with no decision: their runs fail with "approval timed
    out". Returns how many."""
    due = list(Approval.objects.select_related("step_run").filter(  # the step's current ask
        decision="", due_at__lt=now, step_run__status=RunStatus.WAITING,
        task_id=F("step_run__task_id")))
    timed_out = 0
    for approval in due:
        try:
            with transaction.atomic():
                if Approval.objects.filter(id=approval.id, decision="").update(
                        decision=Decision.TIMED_OUT, decided_at=now):
                    _fail_waiting(approval.step_run, error="approval timed out",
                                  run_error="approval timed out", now=now)
                    timed_out += 1
        except Exception:  # one run's trouble does not stop the others
            logger.exception("timing out approval %s failed", approval.id)
    return timed_out


# --- Sub-chains -----------------------------------------------------------------------------


def subchain_start(step_run: StepRun, run: Run, previous: Any) -> None:
    """Start the step's chain as a child run (once, however often the step is delivered);
    the step and its run wait for it."""
    params = SubchainParams.model_validate(step_run.params)
    depth = run.depth + 1
    if depth > settings.CHAINS_MAX_DEPTH:
        raise StepFailed(f"sub-chains nest deeper than {settings.CHAINS_MAX_DEPTH} "
                         "(CHAINS_MAX_DEPTH)")
    chain = Chain.objects.filter(name=params.chain).first()
    if chain is None:
        raise StepFailed(f"no chain named {params.chain!r}")
    inputs = previous if params.inputs is None else params.inputs
    # The child and the wait commit together: a delivery of the step again finds it WAITING
    # and is skipped, so one step starts one child.
    with transaction.atomic():
        try:
            run_start(chain=chain, inputs=inputs, trigger=RunTrigger.PARENT,
                      user=run.created_by, parent_step=step_run)
        except ChainError as exc:
            reasons = "; ".join(f"{field}: {', '.join(why)}" for field, why in exc.errors.items())
            raise StepFailed(f"could not start chain {chain.name!r}: {reasons}") from exc
        _wait(step_run)


def child_run_ended(*, run_id: uuid.UUID | str) -> None:
    """A run ended: if a flow.chain step waits for it, that step completes with its result
    (or fails with its error) and its run goes on."""
    child = (Run.objects.select_related("parent_step")
             .filter(id=run_id, parent_step__isnull=False).first())
    if child is None or child.status not in states.FINAL:
        return
    step_run = child.parent_step
    assert step_run is not None
    if step_run.status != RunStatus.WAITING or not _is_current_child(child, step_run):
        return
    now = timezone.now()
    with transaction.atomic():
        if child.status == RunStatus.COMPLETED:
            step_continue(step_run, result=child.result, now=now)
            return
        step_fail(step_run_id=step_run.id,
                  error=f"child run {child.id} {child.status.lower()}: {child.error}")


def waiting_children_ended(*, limit: int = 1000) -> int:
    """Reconciler: flow.chain steps still WAITING for a child that has ended (its end was
    not acted on: the process died between the child's end and the parent's update)."""
    ended = list(Run.objects.filter(
        parent_step__status=RunStatus.WAITING, status__in=states.FINAL,
        created_at__gte=F("parent_step__started_at"),
    ).values_list("id", flat=True)[:limit])
    done = 0
    for run_id in ended:
        try:
            child_run_ended(run_id=run_id)
            done += 1
        except Exception:  # one run's trouble does not stop the others
            logger.exception("completing the parent of run %s failed", run_id)
    return done
