"""Old finished runs removed in chunks, with their steps, task results and files."""
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import Exists, Model, OuterRef, Q, Subquery
from django.db.models.signals import post_delete, pre_delete
from django_celery_results.models import TaskResult

from chains import states
from chains.models import ChainVersion, IdempotencyKey, Run, StepRun
from chains.services.runs import _remove_run_files


def runs_purge(*, older_than: datetime, status: str | None = None, chunk: int = 10_000,
               progress: Callable[[int], None] | None = None) -> int:
    """Delete finished runs created before `older_than`, with their steps, TaskResult rows and
    files, `chunk` runs at a time (memory stays flat however many there are)."""
    runs = Run.objects.filter(created_at__lt=older_than, status__in=states.FINAL)
    if status:
        runs = runs.filter(status=status)
    # Once its steps and keys are gone nothing points at a run, so the runs go in one DELETE
    # rather than through the Collector, which loads every run first; unless another
    # relation or a delete signal on Run appears.
    raw = ({rel.related_model for rel in Run._meta.related_objects} <= {StepRun, IdempotencyKey}
           and not pre_delete.has_listeners(Run) and not post_delete.has_listeners(Run))
    runs_dir = Path(settings.CHAINS_DATA_DIR) / "runs"
    deleted = 0
    while True:
        ids = list(runs.order_by("created_at").values_list("id", flat=True)[:chunk])
        if not ids:
            versions_purge(older_than=older_than)
            return deleted
        with transaction.atomic():
            steps = StepRun.objects.filter(run_id__in=ids)
            TaskResult.objects.filter(task_id__in=steps.values("task_id")).delete()
            steps.delete()
            IdempotencyKey.objects.filter(run_id__in=ids).delete()
            if raw:
                _delete_rows(Run, ids)
            else:
                Run.objects.filter(id__in=ids).delete()
        listed = {path.name for path in runs_dir.iterdir()} if runs_dir.is_dir() else set()
        for run_id in ids:
            _remove_run_files(str(run_id), listed)
        deleted += len(ids)
        if progress:
            progress(deleted)


def _delete_rows(model: type[Model], ids: list[Any]) -> None:
    """DELETE ... WHERE pk IN (ids): one statement, no Collector, no row loaded."""
    connection = connections[router.db_for_write(model)]
    pk = model._meta.pk
    values = [pk.get_db_prep_value(value, connection) for value in ids]
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {connection.ops.quote_name(model._meta.db_table)} "
            f"WHERE {connection.ops.quote_name(pk.column)} IN ({', '.join(['%s'] * len(ids))})",
            values)


def versions_purge(*, older_than: datetime) -> int:
    """Chain versions written before `older_than` that no run refers to and that are not their
    chain's current one (a deleted chain has none). Returns how many were deleted."""
    latest = ChainVersion.objects.filter(chain=OuterRef("chain")).order_by("-number")
    stale = (ChainVersion.objects.filter(created_at__lt=older_than)
             .exclude(Exists(Run.objects.filter(version=OuterRef("pk"))))
             # Not `.exclude(pk=latest)`: for a deleted chain's version the subquery is NULL,
             # the comparison unknown, and the row would never be purged.
             .filter(Q(chain__isnull=True) | ~Q(pk=Subquery(latest.values("pk")[:1]))))
    return stale.delete()[0]
