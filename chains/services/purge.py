"""Old finished runs removed in chunks with everything that hangs off them: their steps, the
steps' map items, approvals and earlier attempts, the task results of all of those (by task
id), the runs' notification deliveries and idempotency keys, and their files. The audit trail
and the stored metrics are left alone: an entry outlives what it is about, and a counter
never goes down.

Each chunk is a handful of set-based statements, one per table, keyed by the chunk's run ids
in a temporary table: no row is loaded into Python (Django's Collector loaded every step and
deleted it by primary key, and its cascades could not be told which task results go)."""
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import Exists, Model, OuterRef, Q, Subquery
from django.db.models.signals import post_delete, pre_delete
from django_celery_results.models import TaskResult

from chains import states
from chains.models import (
    TASK_ID_MODELS,
    Approval,
    ChainVersion,
    Delivery,
    IdempotencyKey,
    MapItem,
    Run,
    StepAttempt,
    StepRun,
)
from chains.services.runs import _remove_run_files

# Every relation to a row the purge deletes, as (model, field): the SQL below handles exactly
# these. Another one (a new model pointing at a run or a step), or a delete signal on one of
# these models, sends the purge through Django's Collector instead: slower, never wrong.
HANDLED_RELATIONS = frozenset({
    (StepRun, "run"), (Delivery, "run"), (IdempotencyKey, "run"),
    (MapItem, "step_run"), (Approval, "step_run"), (StepAttempt, "step_run"),
    (Run, "parent_step"), (Delivery, "resend_of"),
})
DELETED_MODELS = (Run, StepRun, MapItem, Approval, StepAttempt, Delivery, IdempotencyKey)
# The temporary tables of a chunk's run ids and step ids.
CHUNK_RUNS = "chains_purge_runs"
CHUNK_STEPS = "chains_purge_steps"


def runs_purge(*, older_than: datetime, status: str | None = None, chunk: int = 10_000,
               progress: Callable[[int], None] | None = None) -> int:
    """Delete finished runs created before `older_than` (of `status` if given), with their
    steps, everything that hangs off both, their TaskResult rows and files, the oldest
    `chunk` runs at a time, each chunk in a transaction of its own (memory stays flat however
    many there are); then the chain versions no run needs any more. Returns the runs
    deleted."""
    runs = Run.objects.filter(created_at__lt=older_than, status__in=states.FINAL)
    if status:
        runs = runs.filter(status=status)
    runs = runs.order_by("created_at")
    using = router.db_for_write(Run)
    delete_chunk = _delete_by_sql if _sql_is_complete() else _delete_by_collector
    runs_dir = Path(settings.CHAINS_DATA_DIR) / "runs"
    deleted = 0
    since = None
    with _chunk_tables(connections[using]):
        while True:
            # Runs created before `since` are gone (the chunks are the oldest first; one that
            # finishes meanwhile waits for the next purge): the next chunk starts there rather
            # than at the oldest run. On PostgreSQL that skips the index entries of the rows
            # deleted so far, which stay until a vacuum.
            ahead = runs.filter(created_at__gte=since) if since else runs
            with transaction.atomic(using=using):
                rows = list(ahead.values_list("pk", "created_at")[:chunk])
                if not rows:
                    break
                ids = [pk for pk, _ in rows]
                delete_chunk(connections[using], ids)
            since = rows[-1][1]
            listed = {path.name for path in runs_dir.iterdir()} if runs_dir.is_dir() else set()
            for run_id in ids:
                _remove_run_files(str(run_id), listed)
            deleted += len(ids)
            if progress:
                progress(deleted)
    versions_purge(older_than=older_than)
    return deleted


def _sql_is_complete() -> bool:
    """Whether the SQL of `_delete_by_sql` knows every relation to what it deletes and nothing
    listens for those deletes."""
    relations = {(rel.related_model, rel.field.name)
                 for model in DELETED_MODELS for rel in model._meta.related_objects}
    listened = any(signal.has_listeners(model) for model in DELETED_MODELS
                   for signal in (pre_delete, post_delete))
    return relations <= HANDLED_RELATIONS and not listened


@contextmanager
def _chunk_tables(connection: Any) -> Iterator[None]:
    """The temporary tables of a chunk's run ids (`id`) and step ids (`id`, `task_id`), this
    connection's own, dropped at the end."""
    run_id = cast(Any, Run._meta.pk).rel_db_type(connection)
    step_id = cast(Any, StepRun._meta.pk).rel_db_type(connection)
    task_id = StepRun._meta.get_field("task_id").db_type(connection)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {CHUNK_RUNS} "
                       f"(id {run_id} PRIMARY KEY)")
        cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {CHUNK_STEPS} "
                       f"(id {step_id} PRIMARY KEY, task_id {task_id})")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {CHUNK_RUNS}")
            cursor.execute(f"DROP TABLE IF EXISTS {CHUNK_STEPS}")


def _delete_by_sql(connection: Any, ids: list[Any]) -> None:
    """Delete the runs `ids` with all they hold, in the open transaction."""
    q = connection.ops.quote_name

    def table(model: type[Model]) -> str:
        return str(q(model._meta.db_table))

    def column(model: type[Model], name: str) -> str:
        return str(q(cast(Any, model._meta.get_field(name)).column))

    chunk_runs = f"SELECT id FROM {CHUNK_RUNS}"
    chunk_steps = f"SELECT id FROM {CHUNK_STEPS}"
    run_pk = Run._meta.pk
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {CHUNK_RUNS}")
        cursor.execute(f"DELETE FROM {CHUNK_STEPS}")
        values = [run_pk.get_db_prep_value(pk, connection) for pk in ids]
        if postgres:
            # One statement, and the planner told what the temporary tables hold (nothing
            # analyses them by itself); the semi-join of the task ids hashed in memory.
            cursor.execute(f"INSERT INTO {CHUNK_RUNS} (id) SELECT * FROM unnest(%s)", [values])
            cursor.execute(f"ANALYZE {CHUNK_RUNS}")
            cursor.execute("SET LOCAL work_mem = '64MB'")
        else:
            cursor.executemany(f"INSERT INTO {CHUNK_RUNS} (id) VALUES (%s)",
                               [(value,) for value in values])
        cursor.execute(f"INSERT INTO {CHUNK_STEPS} (id, task_id) "
                       f"SELECT {column(StepRun, 'id')}, {column(StepRun, 'task_id')} "
                       f"FROM {table(StepRun)} WHERE {column(StepRun, 'run')} IN ({chunk_runs})")
        if postgres:
            cursor.execute(f"ANALYZE {CHUNK_STEPS}")
        # The task results of the steps, of their earlier attempts, map items and approvals.
        task_ids = " UNION ALL ".join(
            [f"SELECT task_id FROM {CHUNK_STEPS}"]
            + [f"SELECT {column(model, 'task_id')} FROM {table(model)} "
               f"WHERE {column(model, 'step_run')} IN ({chunk_steps})"
               for model in TASK_ID_MODELS if model is not StepRun])
        cursor.execute(f"DELETE FROM {table(TaskResult)} "
                       f"WHERE {column(TaskResult, 'task_id')} IN ({task_ids})")
        for model in (MapItem, Approval, StepAttempt):
            cursor.execute(f"DELETE FROM {table(model)} "
                           f"WHERE {column(model, 'step_run')} IN ({chunk_steps})")
        # A run started by a step of the chunk (a sub-chain's) loses its link, as SET_NULL
        # does, unless it goes too; so does a resend of a delivery that goes.
        cursor.execute(f"UPDATE {table(Run)} SET {column(Run, 'parent_step')} = NULL "
                       f"WHERE {column(Run, 'parent_step')} IN ({chunk_steps}) "
                       f"AND {column(Run, 'id')} NOT IN ({chunk_runs})")
        deliveries = (f"SELECT {column(Delivery, 'id')} FROM {table(Delivery)} "
                      f"WHERE {column(Delivery, 'run')} IN ({chunk_runs})")
        cursor.execute(f"UPDATE {table(Delivery)} SET {column(Delivery, 'resend_of')} = NULL "
                       f"WHERE {column(Delivery, 'resend_of')} IN ({deliveries}) "
                       f"AND {column(Delivery, 'run')} NOT IN ({chunk_runs})")
        for held in (Delivery, IdempotencyKey):
            cursor.execute(f"DELETE FROM {table(held)} "
                           f"WHERE {column(held, 'run')} IN ({chunk_runs})")
        cursor.execute(f"DELETE FROM {table(StepRun)} "
                       f"WHERE {column(StepRun, 'id')} IN ({chunk_steps})")
        cursor.execute(f"DELETE FROM {table(Run)} WHERE {column(Run, 'id')} IN ({chunk_runs})")


def _delete_by_collector(connection: Any, ids: list[Any]) -> None:
    """As `_delete_by_sql`, through Django's Collector, which knows every relation and sends
    the delete signals: the TaskResult rows first (nothing points at them), then the runs."""
    steps = StepRun.objects.filter(run_id__in=ids)
    for model in TASK_ID_MODELS:
        owned = steps if model is StepRun else cast(Any, model).objects.filter(
            step_run__in=steps)
        TaskResult.objects.filter(task_id__in=owned.values("task_id")).delete()
    Run.objects.filter(id__in=ids).delete()


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
