"""Writes of the stored Prometheus counters and histograms (chains.metrics): each event adds to
the MetricCount rows it moves in one statement, in the transaction of the event, so a run
that ends is counted exactly when its end commits, whichever process ends it.

    run_create   metrics_run_started: chains_runs_started_total
    run_end      metrics_run_ended: the run's duration (chains_run_duration_seconds, whose
                 counts are chains_runs_finished_total) and its steps' durations
                 (chains_step_duration_seconds), from one query
    run_retry    metrics_run_retried: chains_runs_retried_total
    reconciler   metrics_reconciled: chains_reconciler_actions_total, _passes_total
    deliveries   metrics_delivery_failed: chains_notification_deliveries_failed_total
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.apps import apps as django_apps
from django.db import IntegrityError, connections, router, transaction
from django.db.models import Count, F, Sum

from chains import metrics, states
from chains.metrics import RUN_DURATION, STEP_DURATION, Stored, labels_key, le
from chains.models import MetricCount, Run, RunStatus

if TYPE_CHECKING:
    from django.apps.registry import Apps

# (sample name, labels key) -> what to add
Increments = dict[tuple[str, str], float]

# Rows per INSERT statement (three parameters each: far below SQLite's limit).
UPSERT_ROWS = 500
# The steps whose duration is observed: those that ran to an end of their own.
TIMED_STEPS = frozenset({RunStatus.COMPLETED, RunStatus.FAILED})


def _add(increments: Increments, sample: str, values: Iterable[str], amount: float = 1.0
         ) -> None:
    key = (sample, labels_key(values))
    increments[key] = increments.get(key, 0.0) + amount


def _observe(increments: Increments, metric: Stored, values: tuple[str, ...],
             seconds: float) -> None:
    """One observation of a histogram: its bucket (the first bound it does not exceed; none
    past the last, where only +Inf, the count, holds it), its sum and its count."""
    seconds = max(seconds, 0.0)
    bound = next((b for b in metric.buckets if seconds <= b), None)
    if bound is not None:
        _add(increments, metric.sample("_bucket"), (*values, le(bound)))
    _add(increments, metric.sample("_sum"), values, seconds)
    _add(increments, metric.sample("_count"), values)


def metrics_add(increments: Mapping[tuple[str, str], float]) -> None:
    """Add each amount to its (sample, labels) row, creating missing rows: one
    INSERT ... ON CONFLICT DO UPDATE on SQLite and PostgreSQL (rows in a fixed order, so two
    transactions lock shared rows in the same order), else an UPDATE and an INSERT for the
    rows that were missing (again, should another transaction have just inserted one)."""
    rows = sorted(increments.items())
    if not rows:
        return
    connection = connections[router.db_for_write(MetricCount)]
    if connection.vendor in ("sqlite", "postgresql"):
        _upsert(connection, rows)
    else:
        _update_or_insert(rows)


def _upsert(connection: Any, rows: list[tuple[tuple[str, str], float]]) -> None:
    quote = connection.ops.quote_name
    table = quote(MetricCount._meta.db_table)
    name, labels, value = (quote(column) for column in ("name", "labels", "value"))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), UPSERT_ROWS):
            chunk = rows[start:start + UPSERT_ROWS]
            cursor.execute(
                f"INSERT INTO {table} ({name}, {labels}, {value}) VALUES "
                + ", ".join(["(%s, %s, %s)"] * len(chunk))
                + f" ON CONFLICT ({name}, {labels}) DO UPDATE"
                f" SET {value} = {table}.{value} + excluded.{value}",
                [part for (sample, key), amount in chunk for part in (sample, key, amount)])


def _update_or_insert(rows: list[tuple[tuple[str, str], float]]) -> None:
    with transaction.atomic():
        for (sample, key), amount in rows:
            counted = MetricCount.objects.filter(name=sample, labels=key)
            if counted.update(value=F("value") + amount):
                continue
            try:
                with transaction.atomic():
                    MetricCount.objects.create(name=sample, labels=key, value=amount)
            except IntegrityError:  # inserted meanwhile by another transaction
                counted.update(value=F("value") + amount)


def metrics_count(metric: Stored, values: Iterable[str] = (), amount: float = 1.0) -> None:
    """Add `amount` to a declared counter (chains.metrics.declare) for one label set."""
    increments: Increments = {}
    _add(increments, metric.sample(), values, amount)
    metrics_add(increments)


# --- Runs -----------------------------------------------------------------------------------


def _run_labels(chain_name: str | None, task_type: str) -> tuple[str, str]:
    """A run's chain (empty for a seed task type's run, or once its chain is deleted) and
    seed task type (empty for a chain's run)."""
    return chain_name or "", task_type or ""


def metrics_run_started(run: Run) -> None:
    """Inside run_create's transaction: a run was created."""
    chain = run.chain.name if run.chain is not None else None
    metrics_count(metrics.RUNS_STARTED, (*_run_labels(chain, run.task_type), run.trigger))


def metrics_run_retried(run: Run) -> None:
    """Inside run_retry's transaction: a finished run starts again."""
    chain = run.chain.name if run.chain is not None else None
    metrics_count(metrics.RUNS_RETRIED, _run_labels(chain, run.task_type))


def _run_ended(increments: Increments, *, chain: str | None, task_type: str, status: str,
               created_at: datetime, started_at: datetime | None,
               finished_at: datetime | None, retried_at: datetime | None) -> None:
    """The run's duration: from its start (or, when it ended before any step started, from
    its creation or latest retry) to its end."""
    start = started_at or retried_at or created_at
    seconds = (finished_at - start).total_seconds() if finished_at else 0.0
    _observe(increments, RUN_DURATION, (*_run_labels(chain, task_type), status), seconds)


def _step_ran(increments: Increments, *, step_type: str, status: str | None,
              started_at: datetime | None, finished_at: datetime | None) -> None:
    if status in TIMED_STEPS and started_at is not None and finished_at is not None:
        _observe(increments, STEP_DURATION, (step_type,),
                 (finished_at - started_at).total_seconds())


def metrics_run_ended(run_id: uuid.UUID | str) -> dict[str, Any]:
    """Inside run_end's transaction, once the run ended: its duration and its steps' (one
    query: the run joined to its steps). After a retry, only the steps that finished since
    the retry are observed (the others were at the run's earlier end). Returns the run's
    `chain_id` and `parent_step_id`, read in the same query, for run_end's receivers."""
    rows = list(Run.objects.filter(id=run_id).values_list(
        "chain__name", "task_type", "status", "created_at", "started_at", "finished_at",
        "retried_at", "step_runs__step_type", "step_runs__status", "step_runs__started_at",
        "step_runs__finished_at", "chain_id", "parent_step_id"))
    if not rows:
        return {}
    chain, task_type, status, created_at, started_at, finished_at, retried_at = rows[0][:7]
    increments: Increments = {}
    _run_ended(increments, chain=chain, task_type=task_type, status=status,
               created_at=created_at, started_at=started_at, finished_at=finished_at,
               retried_at=retried_at)
    for *_, step_type, step_status, step_started, step_finished, _, _ in rows:
        if step_type is None or (retried_at is not None and step_finished is not None
                                 and step_finished < retried_at):
            continue
        _step_ran(increments, step_type=step_type, status=step_status,
                  started_at=step_started, finished_at=step_finished)
    metrics_add(increments)
    return {"chain_id": rows[0][-2], "parent_step_id": rows[0][-1]}


def metrics_reconciled(report: Mapping[str, int]) -> None:
    """A pass of the reconciler and what it did (its report), in one statement."""
    increments: Increments = {}
    _add(increments, metrics.RECONCILER_PASSES.sample(), ())
    for action in metrics.REPORT_ACTIONS:
        _add(increments, metrics.RECONCILER_ACTIONS.sample(), (action,), report.get(action, 0))
    metrics_add(increments)


def metrics_delivery_failed(*, channel: str, event: str) -> None:
    """A notification delivery failed for good (services.notifications)."""
    metrics_count(metrics.DELIVERIES_FAILED, (channel, event))


# --- Rebuild ----------------------------------------------------------------------------------

# The samples metrics_rebuild derives from the runs (the reconciler's are kept).
DERIVED = (metrics.RUNS_STARTED, metrics.RUNS_RETRIED, RUN_DURATION, STEP_DURATION)
REBUILD_CHUNK = 5000


def metrics_rebuild(*, apps: Apps | None = None) -> int:
    """Replace the counters and histograms derived from runs by what the runs table says
    now: every run counted once as started, every finished run once as finished (with its
    duration), every step that completed or failed in a finished run once, and each run's
    retries. For an installation that had runs before its metrics (the migration that
    brings them calls it) and for benchmarks; it reads every run and step once, so it is no
    part of a scrape. `apps`: a migration's historical models. Returns the rows written."""
    registry = apps or django_apps
    runs = registry.get_model("chains", "Run").objects.order_by()
    steps = registry.get_model("chains", "StepRun").objects.order_by()
    counts = registry.get_model("chains", "MetricCount").objects
    increments: Increments = {}
    for chain, task_type, trigger, n in (runs.values_list("chain__name", "task_type", "trigger")
                                         .annotate(n=Count("*"))):
        _add(increments, metrics.RUNS_STARTED.sample(),
             (*_run_labels(chain, task_type), trigger), n)
    for chain, task_type, n in (runs.filter(retries__gt=0)
                                .values_list("chain__name", "task_type")
                                .annotate(n=Sum("retries"))):
        _add(increments, metrics.RUNS_RETRIED.sample(), _run_labels(chain, task_type), n)
    finished = runs.filter(status__in=states.FINAL).values_list(
        "chain__name", "task_type", "status", "created_at", "started_at", "finished_at",
        "retried_at")
    for chain, task_type, status, created_at, started_at, finished_at, retried_at in (
            finished.iterator(chunk_size=REBUILD_CHUNK)):
        _run_ended(increments, chain=chain, task_type=task_type, status=status,
                   created_at=created_at, started_at=started_at, finished_at=finished_at,
                   retried_at=retried_at)
    ran = steps.filter(run__status__in=states.FINAL, status__in=TIMED_STEPS,
                       started_at__isnull=False, finished_at__isnull=False)
    for step_type, status, started_at, finished_at in ran.values_list(
            "step_type", "status", "started_at", "finished_at").iterator(
            chunk_size=REBUILD_CHUNK):
        _step_ran(increments, step_type=step_type, status=status, started_at=started_at,
                  finished_at=finished_at)
    derived = [metric.sample(suffix) for metric in DERIVED
               for suffix in (("_bucket", "_sum", "_count") if metric.kind == "histogram"
                              else ("",))]
    with transaction.atomic():
        counts.filter(name__in=derived).delete()
        metrics_add(increments)
    return len(increments)
