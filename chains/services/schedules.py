"""Writes of schedules, their beat entries, and what a firing starts."""
from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Model
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)

from chains import audit, states
from chains.bounds import check_inputs, check_text
from chains.errors import ChainError, LimitReached, NotAllowed
from chains.inputs_schema import inputs_errors
from chains.models import (
    Chain,
    ChainSchedule,
    OverlapPolicy,
    Run,
    RunStatus,
    RunTrigger,
    ScheduleKind,
)
from chains.permissions import can_read_schedule_inputs, can_schedule_chain
from chains.schedules import schedule_errors, slot_for
from chains.services.runs import run_cancel, run_start

if TYPE_CHECKING:
    from django.contrib.auth.models import User

M = TypeVar("M", bound=Model)

logger = logging.getLogger(__name__)


RUN_SCHEDULED_TASK = "chains.run_scheduled"


def schedule_sync(*, schedule: ChainSchedule) -> None:
    """Create or update the django-celery-beat PeriodicTask behind a schedule. Its task is
    always chains.run_scheduled with the schedule's id: users never type a task name."""
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
    # Beat's page names it after the chain and the schedule; the id keeps names unique.
    label = f"{schedule.chain.name[:120]} · {schedule.name[:60] or schedule.describe()[:60]}"
    name = f"{label} (schedule {schedule.id})"
    task = (schedule.periodic_task
            or PeriodicTask.objects.filter(task=RUN_SCHEDULED_TASK,
                                           kwargs=json.dumps({"schedule_id": schedule.id})).first()
            or PeriodicTask())
    task.name = name
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


def _first_or_create(model: type[M], **fields: Any) -> M:
    """Beat's schedule tables have no unique constraint: reuse any equal row."""
    rows = model._default_manager
    return rows.filter(**fields).first() or rows.create(**fields)


def schedule_unsync(*, periodic_task_id: int | None) -> None:

    if periodic_task_id:
        PeriodicTask.objects.filter(id=periodic_task_id).delete()


SCHEDULE_FIELDS = ["name", "kind", "every_seconds", "minute", "hour", "day_of_month",
                   "month_of_year", "day_of_week", "run_at", "timezone", "inputs", "enabled",
                   "overlap"]
SCHEDULE_TEXT_LIMITS = {"name": 100, "minute": 64, "hour": 64, "day_of_month": 64,
                        "month_of_year": 64, "day_of_week": 64, "timezone": 64}


@transaction.atomic
def schedule_save(
    *, schedule: ChainSchedule | None = None, chain: Chain, user: User | None,
    fields: dict[str, Any], past_run_at_allowed: bool = False,
) -> ChainSchedule:
    """Create or change a schedule of `chain` (with its beat entry), all or nothing, once
    `schedule_check` accepts it."""
    before = (ChainSchedule.objects.filter(pk=schedule.pk).values(*SCHEDULE_FIELDS).first()
              if schedule is not None and schedule.pk else None)
    schedule = schedule_check(schedule=schedule, chain=chain, user=user, fields=fields,
                              past_run_at_allowed=past_run_at_allowed)
    if schedule.enabled:
        schedule.disabled_reason = ""
    schedule.save()  # chains.signals keeps its beat entry in step, in this transaction
    if before is None:
        audit.record("schedule created", schedule, user=user)
        return schedule
    changes = {name: [before[name], getattr(schedule, name)] for name in SCHEDULE_FIELDS
               if before[name] != getattr(schedule, name)}
    enabled = changes.pop("enabled", None)
    if changes:
        audit.record("schedule changed", schedule, user=user, changes=_jsonable(changes))
    if enabled:
        audit.record("schedule enabled" if schedule.enabled else "schedule disabled", schedule,
                     user=user, changes={"enabled": enabled})
    return schedule


def _jsonable(changes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {name: [value.isoformat() if hasattr(value, "isoformat") else value
                   for value in pair] for name, pair in changes.items()}


def schedule_check(
    *, schedule: ChainSchedule | None = None, chain: Chain, user: User | None,
    fields: dict[str, Any], past_run_at_allowed: bool = False,
) -> ChainSchedule:
    """`schedule` (or a new one) with `fields`, unsaved, or ChainError saying why not. Its
    runs are started as its owner, so `user` must be allowed to edit the chain and start runs;
    users who are not staff keep to CHAINS_MIN_INTERVAL_SECONDS and
    CHAINS_MAX_SCHEDULES_PER_USER. `user` None is an operator (imports). A one-off time that
    is set must lie ahead, unless `past_run_at_allowed` (an import of a schedule that has
    fired)."""

    if user is not None and not can_schedule_chain(user, chain):
        raise NotAllowed("not allowed", errors={
            "chain": ["you may not schedule this chain: scheduling needs the right to edit "
                      "it and to start runs"]})
    unknown = set(fields) - set(SCHEDULE_FIELDS)
    if unknown:
        raise ChainError("unknown fields", errors={key: ["unknown field"] for key in unknown})
    if (schedule is not None and schedule.pk and user is not None and "inputs" not in fields
            and schedule.inputs is not None and not can_read_schedule_inputs(user, schedule)):
        # Saving makes it theirs: it may not keep inputs they may not read.
        raise NotAllowed("not allowed", errors={"inputs": [
            f"this schedule's inputs are {schedule.created_by}'s: give inputs of your own to "
            "change it"]})
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
    else:  # the inputs its runs will start with must fit the chain's inputs schema
        given = chain.default_inputs if schedule.inputs is None else schedule.inputs
        errors.update(inputs_errors(chain.inputs_schema, given, field="inputs"))
    if errors:
        raise ChainError("invalid schedule", errors=errors)
    return schedule


@transaction.atomic
def schedule_delete(*, schedule: ChainSchedule) -> None:
    """The schedule and its beat entry (chains.signals removes it)."""
    audit.record("schedule deleted", schedule)
    schedule.delete()


def _check_schedule_limits(schedule: ChainSchedule, user: User | None,
                           errors: dict[str, list[str]]) -> None:
    minimum = settings.CHAINS_MIN_INTERVAL_SECONDS
    if (schedule.kind == ScheduleKind.INTERVAL and "every_seconds" not in errors
            and (schedule.every_seconds or 0) < minimum):
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


def run_start_scheduled(*, schedule_id: int, now: datetime | None = None) -> Run | None:
    """A firing of a schedule: at most one run per schedule and time slot (the database's
    unique constraint decides between two beats or a message delivered twice), started as the
    schedule's owner. An owner who lost the right to start runs stops the schedule, with the
    reason recorded on it."""

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
            if Run.objects.filter(schedule=schedule, scheduled_for=slot).exists():
                raise IntegrityError("the slot has its run")  # a firing delivered again
            after_active = _apply_overlap_policy(schedule)
            if after_active is None:
                return None
            return run_start(chain=schedule.chain, inputs=schedule.inputs,
                             trigger=RunTrigger.SCHEDULE, schedule=schedule,
                             scheduled_for=slot, user=schedule.created_by,
                             after_active=after_active)
    except IntegrityError:
        logger.info("schedule %s slot %s already has its run", schedule_id, slot)
        return None
    except ChainError as exc:
        logger.error("schedule %s could not start a run: %s", schedule_id, exc.errors)
        return None


def _apply_overlap_policy(schedule: ChainSchedule) -> bool | None:
    """What a firing does while the schedule's previous run is still active (its overlap
    policy): None to skip it (recorded on the schedule), True to start the run QUEUED behind
    the active one (buffer_one), False to start it now (allow; cancel_other once the active
    runs are cancelled)."""
    active = Run.objects.filter(schedule=schedule, status__in=states.HOLDS_SLOT)
    policy = schedule.overlap
    if policy == OverlapPolicy.ALLOW or not active.exists():
        if policy == OverlapPolicy.BUFFER_ONE and Run.objects.filter(
                schedule=schedule, status=RunStatus.QUEUED).exists():
            _skip_firing(schedule, "a run of this schedule already waits")
            return None
        return False
    if policy == OverlapPolicy.SKIP:
        _skip_firing(schedule, "its previous run is still active")
        return None
    if policy == OverlapPolicy.BUFFER_ONE:
        if Run.objects.filter(schedule=schedule, status=RunStatus.QUEUED).exists():
            _skip_firing(schedule, "a run of this schedule already waits")
            return None
        return True
    for run in active:  # cancel_other
        try:
            run_cancel(run=run, reason=f"cancelled: schedule {schedule} fired again "
                                       "(overlap policy cancel_other)")
        except ChainError:
            pass  # it ended meanwhile
    return False


def _skip_firing(schedule: ChainSchedule, why: str) -> None:
    logger.info("schedule %s skipped a firing: %s", schedule.id, why)
    ChainSchedule.objects.filter(id=schedule.id).update(
        skipped_firings=F("skipped_firings") + 1, last_skipped_at=timezone.now())


@transaction.atomic
def schedule_disable(*, schedule: ChainSchedule, reason: str) -> None:
    logger.warning("schedule %s %s", schedule.id, reason)
    schedule.enabled, schedule.disabled_reason = False, reason[:255]
    schedule.save(update_fields=["enabled", "disabled_reason"])  # the signal syncs beat
    audit.record("schedule disabled", schedule, changes={"enabled": [True, False]},
                 reason=reason)
