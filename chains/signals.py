"""Signal receivers: a run that services made ready is published once their transaction
commits; a run that ended lets its parent go on; a schedule's beat entry follows the
schedule."""
from functools import partial

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from chains.events import run_ended, run_ready, run_waiting
from chains.models import ChainSchedule, Run
from chains.services import (
    child_run_ended,
    notify_run_ended,
    notify_run_waiting,
    run_publish,
    runs_promote_after,
    schedule_sync,
    schedule_unsync,
)


@receiver(run_ready, dispatch_uid="chains.publish_ready_run")
def publish_ready_run(sender, run_id, run: Run | None = None, step_runs=None,
                      resumed: bool = False, **kwargs) -> None:
    """The one place runs are published from: once the transaction that readied it commits
    (at once when none is open)."""
    transaction.on_commit(partial(run_publish, run_id=run_id, run=run, step_runs=step_runs,
                                  resumed=resumed))


# Each receiver of run_ended skips what cannot apply when run_end said so: a run no step
# started (parent_step_id None), or that belongs to no chain (chain_id None).
_UNKNOWN = object()


@receiver(run_ended, dispatch_uid="chains.continue_parent_run")
def continue_parent_run(sender, run_id, parent_step_id=_UNKNOWN, **kwargs) -> None:
    """A flow.chain step waiting for this run goes on once its end commits (the reconciler
    catches an end this misses)."""
    if parent_step_id is not None:
        transaction.on_commit(partial(child_run_ended, run_id=run_id))


@receiver(run_ended, dispatch_uid="chains.start_queued_runs")
def start_queued_runs(sender, run_id, chain_id=_UNKNOWN, **kwargs) -> None:
    """A run's slot is free once its end commits: queued runs of its chain may start."""
    if chain_id is not None:
        transaction.on_commit(partial(runs_promote_after, run_id=run_id))


@receiver(run_ended, dispatch_uid="chains.notify_run_ended")
def notify_ended(sender, run_id, chain_id=_UNKNOWN, **kwargs) -> None:
    """The chain's notification rules hear of the end once it commits (never within it)."""
    if chain_id is not None:
        transaction.on_commit(partial(notify_run_ended, run_id=run_id,
                                      chain_id=None if chain_id is _UNKNOWN else chain_id))


@receiver(run_waiting, dispatch_uid="chains.notify_run_waiting")
def notify_waiting(sender, run_id, step_run_id: int | None = None, **kwargs) -> None:
    """A run waiting for an approval: the rules hear of it once that commits."""
    transaction.on_commit(partial(notify_run_waiting, run_id=run_id, step_run_id=step_run_id))


@receiver(post_save, sender=ChainSchedule, dispatch_uid="chains.sync_schedule")
def sync_schedule(sender, instance: ChainSchedule, raw: bool = False, **kwargs) -> None:
    if not raw:
        schedule_sync(schedule=instance)


@receiver(post_delete, sender=ChainSchedule, dispatch_uid="chains.unsync_schedule")
def unsync_schedule(sender, instance: ChainSchedule, **kwargs) -> None:
    schedule_unsync(periodic_task_id=instance.periodic_task_id)
