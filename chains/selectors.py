"""Every read that admin, API and commands share."""
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from auditlog.models import LogEntry
from django.db.models import (
    Count,
    Exists,
    F,
    FloatField,
    Func,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    Window,
)
from django.db.models.functions import Coalesce, Length, RowNumber
from django.utils import timezone
from django_celery_results.models import TaskResult
from rest_framework.authtoken.models import Token

from chains import audit, states
from chains.comparison import compare_runs
from chains.models import (
    Approval,
    BulkJob,
    Chain,
    ChainSchedule,
    ChainVersion,
    MapItem,
    Run,
    RunStatus,
    StepRun,
)
from chains.notification_models import Delivery, NotificationRule
from chains.presets import PRESETS


def runs_visible_to(user) -> QuerySet[Run]:
    """Staff see every run; everyone else sees their own. `None` (management commands, run
    by whoever operates the machine) sees every run."""
    runs = Run.objects.select_related("chain", "created_by")
    if user is None or user.is_staff:
        return runs
    return runs.filter(created_by=user)


def runs_decidable_by(user) -> QuerySet[Run]:
    """The runs `user` may look up to approve or reject: those they see, and for an approver
    who is not staff (chains.approve_run) also those waiting for their group's decision."""
    runs = runs_visible_to(user)
    if user is None or user.is_staff or not user.has_perm("chains.approve_run"):
        return runs
    groups = list(user.groups.values_list("name", flat=True))
    waiting = Approval.objects.filter(
        step_run__run=OuterRef("pk"), step_run__status=RunStatus.WAITING, decision="",
        approvers_group__in=["", *groups])
    return Run.objects.select_related("chain", "created_by").filter(
        Q(created_by=user) | Exists(waiting))


def run_list(
    *, user, status: str | None = None, chain: int | None = None, trigger: str | None = None,
    task_type: str | None = None, statuses: list[str] | None = None,
) -> QuerySet[Run]:
    runs = runs_visible_to(user)
    if status:
        runs = runs.filter(status=status)
    if statuses:
        runs = runs.filter(status__in=statuses)
    if chain:
        runs = runs.filter(chain_id=chain)
    if trigger:
        runs = runs.filter(trigger=trigger)
    if task_type:
        runs = runs.filter(task_type=task_type)
    return runs.order_by("-created_at")


class _CountAll(Func):
    """COUNT(*) of a query's rows as a plain expression (no GROUP BY added), for a scalar
    subquery: SQLite answers `SELECT COUNT(*) FROM <table>` without a WHERE by counting the
    table's pages, not by reading every row."""

    template = "COUNT(*)"
    output_field = IntegerField()
    contains_aggregate = False


def run_statistics(*, user) -> dict[str, int]:
    """Counts by status, the total and the runs ever retried, in one query (one snapshot):
    a scalar subquery per count. COMPLETED, most runs of a database in use, is the total
    less the other statuses, so no count reads the completed runs: the total is SQLite's
    count of the table (or the owner's index range), each other status a range of the status
    index (run_status_created, run_owner_status_created), the retried the run_retried index.
    A GROUP BY on status read every entry of the status index (40 ms at a million runs)."""
    runs = runs_visible_to(user).order_by()

    def count(of: QuerySet[Run]) -> Coalesce:
        return Coalesce(Subquery(of.values(n=_CountAll())), 0)

    others = [status for status in RunStatus.values if status != RunStatus.COMPLETED]
    counted = {"total": count(runs), "retried": count(runs.filter(retries__gt=0)),
               **{status: count(runs.filter(status=status)) for status in others}}
    # One row of the runs carries the subqueries (none: no runs to count).
    row = next(iter(runs.values(**counted)[:1]), None) or dict.fromkeys(counted, 0)
    by_status = {status: row[status] for status in others}
    by_status[RunStatus.COMPLETED] = row["total"] - sum(by_status.values())
    counts = {status.value.lower(): by_status[status.value] for status in states.RUN_STATUSES}
    return {"total": row["total"], **counts, "retried": row["retried"]}


def step_runs_with_results(run: Run, *, prefetch: list[Prefetch] | None = None
                           ) -> list[StepRun]:
    """The run's steps in order, each annotated with its task's `task_result_id`,
    `task_status` and `task_traceback` from the result backend (None before the task stored a
    result), with their earlier attempts (two queries), and `prefetch` (one query each)."""
    task = TaskResult.objects.filter(task_id=OuterRef("task_id"))
    return list(run.step_runs.defer("log").annotate(
        log_size=Length("log"),
        task_result_id=Subquery(task.values("id")[:1]),
        task_status=Subquery(task.values("status")[:1]),
        task_traceback=Subquery(task.values("traceback")[:1]),
    ).prefetch_related("earlier_attempts", *(prefetch or [])).order_by("index"))


def with_parent_run(runs: QuerySet[Run]) -> QuerySet[Run]:
    """`runs`, each annotated with `parent_run`: the id of the run whose flow.chain step
    started it (None for a top run), read in the same query."""
    return runs.annotate(parent_run=F("parent_step__run_id"))


def parent_run_of(run: Run):
    """The id of the run whose flow.chain step started `run`, or None (the annotation of
    `with_parent_run` when the run was read so)."""
    if hasattr(run, "parent_run"):
        return run.parent_run
    if run.parent_step_id is None:
        return None
    return StepRun.objects.filter(id=run.parent_step_id).values_list("run_id", flat=True).first()


def child_run_ids(run: Run) -> list:
    """The runs that the flow.chain steps of `run` started, oldest first."""
    return list(Run.objects.filter(parent_step__run_id=run.id).order_by("created_at", "id")
                .values_list("id", flat=True))


# A map step's items move as steps do, but are never WAITING or SKIPPED.
MAP_ITEM_STATUSES = [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPLETED,
                     RunStatus.FAILED, RunStatus.CANCELLED]


def map_item_counts(step_run_ids: list[int]) -> dict[int, dict[str, int]]:
    """For each of these map steps, how many of its items are in each status (every status
    of MAP_ITEM_STATUSES, 0 when none), in one query."""
    counts = {pk: dict.fromkeys((s.value for s in MAP_ITEM_STATUSES), 0)
              for pk in step_run_ids}
    if not step_run_ids:
        return counts
    rows = (MapItem.objects.filter(step_run_id__in=step_run_ids).order_by()
            .values_list("step_run_id", "status").annotate(n=Count("id")))
    for step_run_id, status, n in rows:
        counts[step_run_id][status] = n
    return counts


def step_runs_in_detail(run: Run) -> list[StepRun]:
    """`step_runs_with_results`, plus each step's approvals (`approvals`, oldest first, with
    who decided), `queued_at` (step_queued_times) and, on map steps, `item_counts`
    (map_item_counts): at most two more queries, however many steps and items the run has."""
    step_runs = step_runs_with_results(run, prefetch=[Prefetch(
        "approvals", queryset=Approval.objects.select_related("decided_by")
        .defer("input").order_by("created_at", "id"))])
    counts = map_item_counts([sr.id for sr in step_runs if sr.map])
    queued = step_queued_times(run, step_runs)
    for step_run in step_runs:
        step_run.item_counts = counts.get(step_run.id)  # type: ignore[attr-defined]
        step_run.queued_at = queued[step_run.id]  # type: ignore[attr-defined]
    return step_runs


def map_items(step_run: StepRun, *, status: str | None = None) -> QuerySet[MapItem]:
    """A map step's items by index, optionally of one status."""
    items = MapItem.objects.filter(step_run=step_run)
    if status:
        items = items.filter(status=status)
    return items.defer("task_id").order_by("index")


# --- Run comparison ---------------------------------------------------------------------------


def run_comparison(*, user, a, b) -> dict:
    """Runs `a` and `b` (ids) side by side (chains.comparison.compare_runs), in two queries.
    Run.DoesNotExist names the one `user` may not see (or that does not exist)."""
    runs = {run.pk: run for run in runs_visible_to(user).select_related("version")
            .filter(pk__in=[a, b])}
    for name, pk in (("a", a), ("b", b)):
        if pk not in runs:
            raise Run.DoesNotExist(f"{name}: no run {pk} that you may see")
    steps: dict = {a: [], b: []}
    for step_run in StepRun.objects.filter(run_id__in=[a, b]).defer("log").order_by("index"):
        steps[step_run.run_id].append(step_run)
    return compare_runs(runs[a], steps[a], runs[b], steps[b])


def comparable_runs(run: Run, *, user, limit: int = 20) -> QuerySet[Run]:
    """The runs a run page offers to compare with: the latest others of the same chain (or
    seed task type) that `user` sees, newest first, with their versions."""
    runs = runs_visible_to(user).select_related("version").exclude(pk=run.pk)
    if run.chain_id is not None:
        runs = runs.filter(chain_id=run.chain_id)
    elif run.task_type:
        runs = runs.filter(task_type=run.task_type, chain__isnull=True)
    else:
        return runs.none()
    return runs.order_by("-created_at")[:limit]


# --- Timeline ---------------------------------------------------------------------------------


def step_queued_times(run: Run, step_runs: list[StepRun]) -> dict[int, datetime | None]:
    """When each step's message was published, by step run id: the best stamp the rows keep,
    read from `step_runs` as loaded (with their earlier attempts), no query. The first stage:
    the run's `published_at` (or `created_at`); a later stage: when the stage before it
    finished (its steps' latest `finished_at`); a step tried again: the end of its attempt
    before, or the run's publishing again (a retry, a resume, the stage after a pause), when
    that is later. Never after the step started (or ended); None while the stage before it
    has not finished."""
    ends: dict[int, list[datetime | None]] = {}
    for step_run in step_runs:
        ends.setdefault(step_run.stage, []).append(step_run.finished_at)
    stages = sorted(ends)
    bases: dict[int, datetime | None] = {stages[0]: run.created_at} if stages else {}
    for before, stage in zip(stages, stages[1:], strict=False):
        finished = [end for end in ends[before] if end is not None]
        bases[stage] = max(finished) if len(finished) == len(ends[before]) else None
    return {step_run.id: _queued_at(step_run, bases[step_run.stage], run.published_at)
            for step_run in step_runs}


def _queued_at(step_run: StepRun, base: datetime | None,
               published: datetime | None) -> datetime | None:
    if base is None:
        return None
    stamps = [base]
    attempts = list(step_run.earlier_attempts.all())  # prefetched
    if attempts and attempts[-1].finished_at:
        stamps.append(attempts[-1].finished_at)
    if published:
        stamps.append(published)
    until = step_run.started_at or step_run.finished_at
    if until is not None:
        stamps = [stamp for stamp in stamps if stamp <= until] or [until]
    return max(stamps)


def map_item_spreads(step_run_ids: list[int]) -> dict[int, dict]:
    """For each of these map steps with finished items: `first_start` (the first item's
    start), `last_finish`, `p10` and `p90` (nearest-rank percentiles of the items' finish
    times) and `finished` (how many finished), in one query: the items are ranked by finish
    time per step and only the two ranked at p10 and p90 come back."""
    if not step_run_ids:
        return {}
    per_step = [F("step_run_id")]
    rows = (MapItem.objects.filter(step_run_id__in=step_run_ids).order_by()
            .annotate(rank=Window(RowNumber(), partition_by=per_step,
                                  order_by=F("finished_at").asc(nulls_last=True)),
                      finished=Window(Count("finished_at"), partition_by=per_step),
                      first_start=Window(Min("started_at"), partition_by=per_step),
                      last_finish=Window(Max("finished_at"), partition_by=per_step))
            .annotate(rank10=F("rank") * 10, n1=F("finished"), n9=F("finished") * 9)
            # rank = ceil(n * p / 10) for p = 1 and 9, in integers: n p <= 10 rank < n p + 10.
            .filter(Q(rank10__gte=F("n1"), rank10__lt=F("n1") + 10)
                    | Q(rank10__gte=F("n9"), rank10__lt=F("n9") + 10))
            .values_list("step_run_id", "rank", "finished", "finished_at", "first_start",
                         "last_finish"))
    spreads: dict[int, dict] = {}
    for step_run_id, rank, finished, finished_at, first_start, last_finish in rows:
        spread = spreads.setdefault(step_run_id, {
            "first_start": first_start, "last_finish": last_finish, "finished": finished})
        if rank == max(1, math.ceil(finished * 0.1)):
            spread["p10"] = finished_at
        if rank == max(1, math.ceil(finished * 0.9)):
            spread["p90"] = finished_at
    return spreads


def schedules_visible_to(user) -> QuerySet[ChainSchedule]:
    """Staff see every schedule; everyone else theirs and those of their chains (a schedule's
    inputs may hold what only its owner should read)."""
    schedules = ChainSchedule.objects.select_related("chain", "periodic_task", "created_by")
    if user.is_staff:
        return schedules
    return schedules.filter(Q(created_by=user) | Q(chain__created_by=user))


def token_of(user) -> Token | None:
    return Token.objects.filter(user=user).first()


def chains_visible_to(user) -> QuerySet[Chain]:
    return Chain.objects.select_related("created_by").prefetch_related("steps")


# --- Run page ---------------------------------------------------------------------------------


def run_stages(step_runs: list[StepRun]) -> list[dict]:
    """Steps grouped by stage, in order, with how many of each stage are done. A stage's
    `number` is its stored value (stages count from 0, as the form and the API write them)."""
    stages: dict[int, list[StepRun]] = {}
    for step_run in sorted(step_runs, key=lambda sr: (sr.stage, sr.index)):
        stages.setdefault(step_run.stage, []).append(step_run)
    return [
        {"number": n, "steps": steps, "total": len(steps),
         "done": sum(sr.status in states.DONE for sr in steps)}
        for n, steps in stages.items()
    ]


def run_approvals(run: Run) -> dict[int, list[Approval]]:
    """The approvals asked by the run's steps, by step run id, newest first (a retried run
    asks again; earlier decisions stay)."""
    approvals: dict[int, list[Approval]] = {}
    for approval in (Approval.objects.filter(step_run__run=run).select_related("decided_by")
                     .order_by("-created_at")):
        approvals.setdefault(approval.step_run_id, []).append(approval)
    return approvals


def run_children(run: Run) -> dict[int, list[Run]]:
    """The child runs started by the run's flow.chain steps, by step run id, newest first."""
    children: dict[int, list[Run]] = {}
    for child in (Run.objects.filter(parent_step__run=run).select_related("chain")
                  .only("id", "status", "chain__name", "parent_step_id", "created_at")
                  .order_by("-created_at")):
        children.setdefault(child.parent_step_id or 0, []).append(child)
    return children


def map_failed_items(step_run: StepRun, *, limit: int = 20) -> list[MapItem]:
    """The first `limit` failed items of a map step, by index (their count is map_counts')."""
    return list(step_run.items.filter(status=RunStatus.FAILED).order_by("index")
                .only("index", "error", "step_run_id")[:limit])


def approvals_waiting(*, user, limit: int = 10) -> QuerySet[Approval]:
    """Approvals no one has decided yet on the runs the user sees, soonest due first."""
    approvals = Approval.objects.filter(decision="", step_run__status=RunStatus.WAITING)
    # runs_visible_to's rule as a join, not `run IN (every visible run)`: SQLite read every
    # run and its steps for it (14 s at a million runs), where the approvals are few.
    if user is not None and not user.is_staff:
        approvals = approvals.filter(step_run__run__created_by=user)
    return approvals.select_related("step_run__run__chain").order_by("due_at")[:limit]


def run_duration_estimate(run: Run, *, sample: int = 20) -> float | None:
    """Median duration in seconds of the chain's last completed runs, if it has any."""
    if run.chain_id is None:
        return None
    durations = _durations(Run.objects.filter(chain_id=run.chain_id,
                                              status=RunStatus.COMPLETED)
                           .order_by("-created_at")[:sample])
    return percentile(durations, 50)


def run_duration_p95(run: Run, *, sample: int = 50, minimum: int = 5) -> float | None:
    """p95 duration in seconds of the chain's last `sample` completed runs other than this
    one; None with fewer than `minimum` of them (notifications' run_slow)."""
    if run.chain_id is None:
        return None
    durations = _durations(Run.objects.filter(chain_id=run.chain_id, status=RunStatus.COMPLETED)
                           .exclude(pk=run.pk).order_by("-created_at")[:sample])
    return percentile(durations, 95) if len(durations) >= minimum else None


def notification_rules_editable_by(user) -> QuerySet[NotificationRule]:
    """The rules of the chains the user may edit (chains.permissions.can_edit_chain)."""
    rules = NotificationRule.objects.select_related("chain").order_by("chain__name", "id")
    if user.is_staff:
        return rules if user.has_perm("chains.change_chain") else rules.none()
    return rules.filter(chain__created_by=user) if user.is_authenticated else rules.none()


def deliveries_visible_to(user) -> QuerySet[Delivery]:
    """The deliveries of the rules the user may edit, newest first."""
    return (Delivery.objects.filter(rule__in=notification_rules_editable_by(user))
            .select_related("rule__chain").order_by("-created_at", "-id"))


def _durations(runs) -> list[float]:
    return sorted(
        (finished - started).total_seconds()
        for started, finished in runs.values_list("started_at", "finished_at")
        if started and finished
    )


def percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# --- Dashboard --------------------------------------------------------------------------------


# The chains (and task types) whose runs chain_performance reads in one query.
CHAINS_PER_QUERY = 200


class _Seconds(Func):
    """Seconds from the second datetime expression to the first (None if either is), in
    SQL: exact to the microsecond, as Django's own difference of datetimes, which SQLite
    computes by calling Python for each row."""

    output_field = FloatField()

    def as_sql(self, compiler, connection, function=None, template=None,
               arg_joiner=None, **extra_context):
        (end, end_params), (start, start_params) = (
            compiler.compile(expression) for expression in self.source_expressions)
        params = [*end_params, *start_params] * 2
        if connection.vendor == "sqlite":
            # Django stores 'YYYY-MM-DD HH:MM:SS[.ffffff]': whole seconds and the fraction.
            # (strftime rounds a fraction of a second: it gets the whole seconds alone.)
            return (f"((CAST(strftime('%%s', substr({end}, 1, 19)) AS INTEGER) - "
                    f"CAST(strftime('%%s', substr({start}, 1, 19)) AS INTEGER)) + "
                    f"(CAST(substr({end}, 20) AS REAL) - CAST(substr({start}, 20) AS REAL)))",
                    params)
        return (f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS double precision)",
                [*end_params, *start_params])


class _HoursSince(Func):
    """Whole hours from `start` to a datetime expression, in the database's own arithmetic:
    Django's TruncHour is a Python function SQLite calls for each row (most of the chart's
    time at a million runs)."""

    output_field = IntegerField()

    def __init__(self, expression, start: datetime) -> None:
        super().__init__(expression)
        self.start = int(start.timestamp())

    def as_sql(self, compiler, connection, function=None, template=None,
               arg_joiner=None, **extra_context):
        sql, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "sqlite":
            # Whole seconds of 'YYYY-MM-DD HH:MM:SS[.ffffff]' (strftime rounds a fraction).
            seconds = f"CAST(strftime('%%s', substr({sql}, 1, 19)) AS INTEGER)"
        else:
            seconds = f"CAST(floor(extract(epoch FROM {sql})) AS bigint)"
        return f"(({seconds} - %s) / 3600)", [*params, self.start]


def runs_per_hour(*, user, hours: int = 24, now=None) -> list[tuple[datetime, dict[str, int]]]:
    """Runs created in each of the last `hours` hours, by status (oldest hour first). One
    GROUP BY over the runs since the first hour; `status IN (every status)` lets it read the
    status index alone (its rows are (status, created_at))."""
    now = now or timezone.now()
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    rows = (runs_visible_to(user).filter(status__in=RunStatus.values, created_at__gte=start)
            .annotate(hour=_HoursSince("created_at", start)).values("hour", "status")
            .annotate(n=Count("*")).order_by())
    buckets: dict[datetime, dict[str, int]] = {start + timedelta(hours=i): {}
                                               for i in range(hours)}
    for row in rows:
        hour = start + timedelta(hours=row["hour"])
        buckets.setdefault(hour, {})[row["status"]] = row["n"]
    return sorted(buckets.items())


def chain_performance(*, user, recent: int = 200) -> list[dict]:
    """Per chain, and per seed task type (math_chain, ...), over its last `recent` finished
    runs: count, success rate (a run that completed only after a retry is not a success: it
    is counted as retried), p50 and p95. `chain` is None for a task type. Two queries, each
    reading about `recent` runs per chain or task type through the (chain, created_at)
    index, where a window function over every finished run sorted them all (seconds at a
    million runs): the chains, each with the created_at of its `recent`-th newest finished
    run; then the runs of each chain from that moment on, and of each task type from its own
    (a subquery). Past CHAINS_PER_QUERY chains, a query more per so many."""
    finished = runs_visible_to(user).order_by().filter(
        status__in=[RunStatus.COMPLETED, RunStatus.FAILED])

    def since(runs: QuerySet[Run]) -> Coalesce:
        """The created_at of the `recent`-th newest of `runs`, or the beginning of time."""
        return Coalesce(Subquery(runs.order_by("-created_at").values("created_at")
                                 [recent - 1:recent]), Value(datetime(1, 1, 1, tzinfo=UTC)))

    chains = list(Chain.objects.order_by("id").annotate(
        since=since(finished.filter(chain_id=OuterRef("pk")))).values_list("id", "name", "since"))
    names = {pk: name for pk, name, _ in chains}
    # Each term of the OR holds every condition of its runs (status, owner: runs_visible_to's
    # rule) and is a range of the chain index, so the database reads each range alone (SQLite's
    # OR optimisation), not every finished run by the status index. The terms are chunked so
    # that no query nests more of them than SQLite's expression depth allows.
    visible = Q(status__in=[RunStatus.COMPLETED, RunStatus.FAILED])
    if user is not None and not user.is_staff:
        visible &= Q(created_by=user)
    terms = [visible & Q(chain_id=pk, created_at__gte=moment) for pk, _, moment in chains]
    for task_type in PRESETS:
        of_type = Q(chain__isnull=True, task_type=task_type)
        terms.append(visible & of_type & Q(created_at__gte=since(finished.filter(of_type))))
    rows: list[Any] = []
    for first in range(0, len(terms), CHAINS_PER_QUERY):
        ranges = Q()
        for term in terms[first:first + CHAINS_PER_QUERY]:
            ranges |= term
        # Newest first (a sort of the few rows read), the duration in SQL: no datetime is
        # converted in Python.
        rows.extend(Run.objects.filter(ranges).order_by("-created_at").values_list(
            "chain_id", "task_type", "status",
            _Seconds(F("finished_at"), F("started_at")), "retries"))
    by_chain: dict[tuple[int | None, str], list[tuple]] = {}
    for chain_id, task_type, *run in rows:
        key = (chain_id, names[chain_id]) if chain_id else (None, task_type)
        by_chain.setdefault(key, []).append(run)
    out = []
    for (pk, name), rows in sorted(by_chain.items(),
                                   key=lambda item: (item[0][0] is None, item[0][1])):
        # Runs created at the same moment as the `recent`-th may come along: the first
        # `recent` (newest first).
        runs = rows[:recent]
        durations = sorted(seconds for _, seconds, _ in runs if seconds is not None)
        first_time = sum(status == RunStatus.COMPLETED and not retries
                         for status, _, retries in runs)
        out.append({
            "chain": SimpleNamespace(pk=pk, name=name) if pk else None,
            "task_type": "" if pk else name, "runs": len(runs),
            "success_rate": first_time / len(runs),
            "retried": sum(bool(retries) for *_, retries in runs),
            "p50": percentile(durations, 50), "p95": percentile(durations, 95),
        })
    return out


def recent_failures(*, user, limit: int = 10) -> list[Run]:
    """Runs that failed, newest failure first, each with `failed_at` and `failure`: a run that
    was retried since keeps its place (what it failed with is kept on it), marked by
    `retries`. Three queries, each on an index, merged here, instead of an ORDER BY over a
    CASE that sorted every failed run: the FAILED runs that finished, newest first
    (run_failed_finished, read in its order on SQLite and PostgreSQL alike: no NULLS LAST to
    sort for); the runs retried after a failure that are not FAILED now (run_retried: few);
    and the FAILED runs with no finish time (listed last; none, as a rule)."""
    runs = runs_visible_to(user).select_related("chain")
    failed = runs.filter(status=RunStatus.FAILED).annotate(failure=F("error"))
    finished = list(failed.filter(finished_at__isnull=False)
                    .annotate(failed_at=F("finished_at")).order_by("-finished_at")[:limit])
    retried = list(runs.filter(retries__gt=0, retried_status=RunStatus.FAILED)
                   .exclude(status=RunStatus.FAILED)
                   .annotate(failed_at=F("retried_at"), failure=F("retried_error"))
                   .order_by(F("retried_at").desc(nulls_last=True))[:limit])
    unfinished = list(failed.filter(finished_at__isnull=True)
                      .annotate(failed_at=F("finished_at")).order_by()[:limit])
    newest_first = sorted(finished + retried + unfinished, reverse=True, key=lambda run: (
        run.failed_at is not None, run.failed_at or datetime.min))
    return cast(list[Run], newest_first[:limit])


# --- Export -----------------------------------------------------------------------------------

SCHEDULE_EXPORT_FIELDS = ["name", "kind", "every_seconds", "minute", "hour", "day_of_month",
                          "month_of_year", "day_of_week", "timezone", "inputs", "enabled",
                          "overlap"]
STEP_EXPORT_FIELDS = ["stage", "name", "step_type", "params", "max_retries", "time_limit",
                      "queue", "map", "when", "retry_backoff", "retry_backoff_max"]


def chains_export(names: list[str] | None = None) -> dict:
    """Chains with their steps and schedules as plain JSON data (import_chains reads it)."""
    chains = (Chain.objects.prefetch_related("steps", "schedules")
              .annotate(version=Max("versions__number")).order_by("name"))
    if names:
        chains = chains.filter(name__in=names)
    return {"version": 1, "chains": [
        {
            "name": chain.name, "version": chain.version,
            "description": chain.description, "enabled": chain.enabled,
            "default_inputs": chain.default_inputs, "inputs_schema": chain.inputs_schema,
            "max_active_runs": chain.max_active_runs,
            "steps": [{f: getattr(step, f) for f in STEP_EXPORT_FIELDS}
                      for step in sorted(chain.steps.all(), key=lambda s: s.position)],
            "schedules": [
                {**{f: getattr(s, f) for f in SCHEDULE_EXPORT_FIELDS},
                 "run_at": s.run_at.isoformat() if s.run_at else None}
                for s in sorted(chain.schedules.all(), key=lambda s: s.id)
            ],
        }
        for chain in chains
    ]}


# --- Versions and the audit trail -------------------------------------------------------------


def chain_versions(chain: Chain) -> QuerySet[ChainVersion]:
    """The chain's versions, newest first, with their authors."""
    return chain.versions.select_related("author").order_by("-number")


def current_version_number(chain_id) -> "Subquery":
    """The number of the newest version of the chain `chain_id` names (an OuterRef or an
    expression): one lookup on the (chain, number) index."""
    return Subquery(ChainVersion.objects.filter(chain=chain_id).order_by("-number")
                    .values("number")[:1])


def with_version_numbers(runs: QuerySet[Run], *, current: bool = True) -> QuerySet[Run]:
    """`runs`, each annotated with `version_number` (the version it ran, None for a run of no
    chain version) and, with `current`, `current_version_number` (its chain's newest), in the
    same query. Both are subqueries, not joins: a count of `runs` (a page's) leaves them out."""
    runs = runs.annotate(version_number=Subquery(
        ChainVersion.objects.filter(pk=OuterRef("version_id")).values("number")[:1]))
    if current:
        runs = runs.annotate(current_version_number=current_version_number(OuterRef("chain_id")))
    return runs


def latest_version_number(chain_id: int | None) -> int | None:
    """The number of the chain's current version (its newest); None without one."""
    if chain_id is None:
        return None
    return (ChainVersion.objects.filter(chain_id=chain_id).order_by("-number")
            .values_list("number", flat=True).first())


def run_version_numbers(run: Run) -> tuple[int, int | None, int | None] | None:
    """(the number of the version `run` ran, its chain's id, that chain's current version
    number) in one query; None for a run without a version. The chain is None once deleted."""
    if run.version_id is None:
        return None
    return (ChainVersion.objects.filter(pk=run.version_id)
            .values_list("number", "chain_id", current_version_number(OuterRef("chain_id")))
            .first())


def audit_entries(*, user=None, event: str | None = None, object_type: str | None = None,
                  object_id: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> QuerySet[LogEntry]:
    """The audit trail, newest first, optionally by one user (an id or a user name), of one
    event, on one type of object (a key of audit.OBJECT_TYPES) or one object, and within
    [since, until)."""
    entries = LogEntry.objects.select_related("actor", "content_type")
    if user is not None:
        entries = entries.filter(actor_id=user) if isinstance(user, int) else entries.filter(
            actor__username=user)
    if event:
        entries = entries.filter(additional_data__event=event)
    if object_type:
        entries = entries.filter(content_type__in=audit.content_types(object_type))
    if object_id:
        entries = entries.filter(object_pk=object_id)
    if since:
        entries = entries.filter(timestamp__gte=since)
    if until:
        entries = entries.filter(timestamp__lt=until)
    return entries.order_by("-timestamp", "-id")


def run_id_chunks(runs: QuerySet[Run], size: int) -> Iterator[list]:
    """The ids of `runs`, `size` at a time, oldest first (created_at, then id): each chunk is
    one query that starts after the last row of the one before (keyset pagination), so no
    chunk reads the rows before it and the rows are never all in memory. Runs that stop
    matching meanwhile (a retried FAILED run) are simply not met again."""
    runs = runs.order_by("created_at", "id")
    last = None
    while True:
        page = runs
        if last is not None:
            page = runs.filter(Q(created_at__gt=last[0]) | Q(created_at=last[0], id__gt=last[1]))
        rows = list(page.values_list("created_at", "id")[:size])
        if not rows:
            return
        yield [run_id for _, run_id in rows]
        if len(rows) < size:
            return
        last = rows[-1]


def run_status_counts(runs: QuerySet[Run]) -> dict[str, int]:
    """How many of `runs` are in each status (one GROUP BY), in the statuses' order."""
    by_status = dict(runs.order_by().values_list("status").annotate(n=Count("*")))
    return {status.value: by_status[status.value] for status in states.RUN_STATUSES
            if by_status.get(status.value)}


def bulk_jobs_visible_to(user) -> QuerySet[BulkJob]:
    """A user's own bulk jobs; staff see everybody's."""
    jobs = BulkJob.objects.select_related("user")
    return jobs if user.is_staff else jobs.filter(user=user)
