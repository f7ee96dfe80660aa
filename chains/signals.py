"""Signal receivers: a new run is published once the transaction that created it commits; a
schedule's beat entry follows the schedule."""
from functools import partial

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from chains.models import ChainSchedule, Run
from chains.services import run_publish, schedule_sync, schedule_unsync


@receiver(post_save, sender=Run, dispatch_uid="chains.publish_new_run")
def publish_new_run(sender, instance: Run, created: bool, raw: bool = False, **kwargs) -> None:
    if created and not raw:

        transaction.on_commit(partial(run_publish, run_id=instance.id, created=instance))


@receiver(post_save, sender=ChainSchedule, dispatch_uid="chains.sync_schedule")
def sync_schedule(sender, instance: ChainSchedule, raw: bool = False, **kwargs) -> None:
    if not raw:

        schedule_sync(schedule=instance)


@receiver(post_delete, sender=ChainSchedule, dispatch_uid="chains.unsync_schedule")
def unsync_schedule(sender, instance: ChainSchedule, **kwargs) -> None:

    schedule_unsync(periodic_task_id=instance.periodic_task_id)
