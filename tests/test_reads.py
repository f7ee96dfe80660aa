"""The dashboard's and /tasks/statistics' reads (chains.selectors) give what the plain queries
they replaced gave: counts by status, the runs per hour, each chain's last finished runs, the
recent failures and the approvals waiting; and they keep to their indexes."""
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Case, Count, F, Q, When

from chains import selectors
from chains.models import Approval, Chain, Run, RunStatus, StepRun

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)


def _run(user, *, status=RunStatus.COMPLETED, chain=None, task_type="", minutes_ago=0.0,
         seconds=1.0, retries=0, retried_status="", retried_at=None) -> Run:
    created = NOW - timedelta(minutes=minutes_ago)
    run = Run.objects.create(chain=chain, task_type=task_type, status=status, trigger="api",
                             created_by=user, retries=retries, retried_status=retried_status,
                             retried_at=retried_at, error=f"{status} error",
                             retried_error="retried error" if retries else "")
    finished = created + timedelta(seconds=seconds) if status in (
        RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED) else None
    Run.objects.filter(pk=run.pk).update(created_at=created, started_at=created,
                                         finished_at=finished)
    return Run.objects.get(pk=run.pk)


@pytest.fixture
def mixed(user, other_user):
    """Runs of two owners in every status, a few retried."""
    chain = Chain.objects.create(name="mixed")
    statuses = [RunStatus.COMPLETED] * 5 + [RunStatus.FAILED] * 3 + [
        RunStatus.PENDING, RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.WAITING,
        RunStatus.CANCELLED]
    for n, status in enumerate(statuses):
        for owner in (user, other_user):
            _run(owner, status=status, chain=chain if n % 2 else None,
                 task_type="" if n % 2 else "math_chain", minutes_ago=n * 50,
                 retries=1 if n in (0, 5) else 0,
                 retried_status=RunStatus.FAILED if n in (0, 5) else "",
                 retried_at=NOW - timedelta(minutes=n) if n in (0, 5) else None)
    return chain


def _plain_statistics(runs) -> dict:
    by_status = dict(runs.order_by().values_list("status").annotate(n=Count("*")))
    return {"total": runs.count(), "retried": runs.filter(retries__gt=0).count(),
            **{s.lower(): by_status.get(s, 0) for s in RunStatus.values if s != "SKIPPED"}}


def test_statistics_are_the_counts_by_status(mixed, user, admin_user):
    assert selectors.run_statistics(user=admin_user) == _plain_statistics(Run.objects.all())
    assert selectors.run_statistics(user=user) == _plain_statistics(
        Run.objects.filter(created_by=user))


def test_statistics_of_no_runs_are_zeros(user):
    counts = selectors.run_statistics(user=user)
    assert counts["total"] == counts["completed"] == counts["retried"] == 0


def test_runs_per_hour_buckets_each_run_by_its_hour(mixed, user, admin_user):
    last = _run(user)  # the last moment of an hour stays in it
    Run.objects.filter(pk=last.pk).update(
        created_at=NOW.replace(minute=0) - timedelta(microseconds=1))
    hours = selectors.runs_per_hour(user=admin_user, now=NOW)
    assert len(hours) == 24 and hours[-1][0] == NOW.replace(minute=0)
    start = hours[0][0]
    expected: dict = {}
    for created, status in Run.objects.filter(created_at__gte=start).values_list(
            "created_at", "status"):
        hour = created.replace(minute=0, second=0, microsecond=0)
        expected.setdefault(hour, {}).setdefault(status, 0)
        expected[hour][status] += 1
    assert {hour: counts for hour, counts in hours if counts} == expected


def test_chain_performance_reads_each_chains_last_finished_runs(user, other_user, admin_user):
    chain = Chain.objects.create(name="busy")
    for n in range(12):  # newest first: every third failed, durations 1 s .. 12 s
        _run(user if n % 2 else other_user, chain=chain, minutes_ago=n, seconds=n + 1,
             status=RunStatus.FAILED if n % 3 == 0 else RunStatus.COMPLETED)
    _run(user, chain=chain, status=RunStatus.RUNNING, minutes_ago=0.5)
    for n in range(4):
        _run(user, task_type="io_chain", minutes_ago=n, seconds=10)

    rows = selectors.chain_performance(user=admin_user, recent=5)
    assert [(r["chain"].name if r["chain"] else r["task_type"], r["runs"]) for r in rows] == [
        ("busy", 5), ("io_chain", 4)]
    busy = rows[0]  # the five newest finished: 1, 2, 3, 4, 5 s; 1 s and 4 s failed
    assert (busy["success_rate"], busy["p50"], busy["p95"]) == (0.6, 3.0, 5.0)
    # Alice's own: the odd ones (2, 4, 6, 8, 10 s), none failed but 4 s and 10 s.
    (own, _) = selectors.chain_performance(user=user, recent=5)
    assert (own["runs"], own["success_rate"], own["p95"]) == (5, 0.6, 10.0)
    # Durations to the microsecond, across a whole second.
    odd = _run(user, chain=chain, minutes_ago=-1, seconds=0)
    Run.objects.filter(pk=odd.pk).update(
        started_at=odd.created_at + timedelta(microseconds=999_999),
        finished_at=odd.created_at + timedelta(seconds=2, microseconds=1))
    (own, _) = selectors.chain_performance(user=user, recent=1)
    assert own["p50"] == pytest.approx(1.000002, abs=1e-9)


def test_recent_failures_are_those_of_the_order_by_they_replaced(mixed, user, admin_user):
    never_finished = _run(user, status=RunStatus.FAILED)
    Run.objects.filter(pk=never_finished.pk).update(finished_at=None)
    failures = selectors.recent_failures(user=admin_user, limit=50)
    expected = list(Run.objects.filter(
        Q(status=RunStatus.FAILED) | Q(retries__gt=0, retried_status=RunStatus.FAILED))
        .annotate(failed_at=Case(When(status=RunStatus.FAILED, then=F("finished_at")),
                                 default=F("retried_at")))
        .order_by(F("failed_at").desc(nulls_last=True)).values_list("failed_at", "pk"))
    assert [run.failed_at for run in failures] == [moment for moment, _ in expected]
    assert {run.pk for run in failures} == {pk for _, pk in expected}
    assert failures[-1].pk == never_finished.pk
    assert len(selectors.recent_failures(user=admin_user, limit=3)) == 3


def test_approvals_waiting_are_the_owners_own(user, other_user, admin_user):
    for owner in (user, other_user):
        run = _run(owner, status=RunStatus.WAITING)
        step = StepRun.objects.create(run=run, index=0, stage=0, step_type="flow.approval",
                                      queue="flow", task_id=f"task-{owner.pk}",
                                      status=RunStatus.WAITING)
        Approval.objects.create(step_run=step, task_id=step.task_id, due_at=NOW)
    assert len(selectors.approvals_waiting(user=admin_user)) == 2
    (own,) = selectors.approvals_waiting(user=user)
    assert own.step_run.run.created_by == user


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query plans")
def test_the_dashboard_reads_keep_to_their_indexes(mixed, admin_user):
    """No read of the dashboard sorts or scans the runs table (the retried runs, few, read
    through their own index, and each chain's last runs, read as ranges of the chain index,
    are sorted)."""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        selectors.run_statistics(user=admin_user)
        selectors.runs_per_hour(user=admin_user, now=NOW)
        selectors.chain_performance(user=admin_user)
        selectors.recent_failures(user=admin_user)
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
            plan = [str(row[-1]) for row in cursor.fetchall()]
            few = any("run_retried" in line or "MULTI-INDEX OR" in line for line in plan)
            assert not [line for line in plan if line == "SCAN chains_run"
                        or ("TEMP B-TREE FOR ORDER BY" in line and not few)], (
                query["sql"], plan)
