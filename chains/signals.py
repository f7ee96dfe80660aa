"""Signal receivers: a new run is published once the transaction that created it commits."""
from functools import partial

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from chains.models import Run


@receiver(post_save, sender=Run, dispatch_uid="chains.publish_new_run")
def publish_new_run(sender, instance: Run, created: bool, raw: bool = False, **kwargs) -> None:
    if created and not raw:
        from chains.services import run_publish

        transaction.on_commit(partial(run_publish, run_id=instance.id))
