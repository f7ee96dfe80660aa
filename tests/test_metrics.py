"""/metrics: parsed with the Prometheus text parser and checked against the database after
runs started, finished, failed, cancelled, retried and left waiting through the services (as
the worker drives them); the same counts as `chain_stats`; who may read it; the cost of a
scrape against the number of runs; the stored counters under concurrent writes; the README's
table and the Grafana dashboard against what is exposed."""
import json
import re
import socket
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from chains import metrics, services, states
from chains.models import MetricCount, Run, RunStatus, StepRun
from chains.presets import StepSpec
from chains.services import metrics as metric_services
from chains.services import runs as runs_service
from chains.steps import StepFailed
from config.celery import app as celery_app
from tests.factories import make_chain, make_run, make_user
from tests.services import purge_queues

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-metrics-token-0123456789"
ADD = StepSpec("math.add", {"numbers": [1]}, 0)
DOUBLE = StepSpec("math.multiply", {"numbers": [2]}, 1)
BY_ZERO = StepSpec("math.divide", {"numbers": [0]}, 1)
APPROVAL = StepSpec("flow.approval", {"message": "go on?"}, 1)


@pytest.fixture(autouse=True)
def _token(settings):
    settings.CHAINS_METRICS_TOKEN = TOKEN


def scrape(client, token: str = TOKEN) -> dict[str, dict[tuple, float]]:
    """sample name -> {sorted label pairs: value}, from GET /metrics with the token."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value)
    return samples


def family_names(client) -> dict[str, str]:
    """The metrics exposed, as one queries them (a counter by its _total name), and types."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return {f"{f.name}_total" if f.type == "counter" else f.name: f.type
            for f in text_string_to_metric_families(response.content.decode())}


def drive(run: Run, *, took: float | None = None) -> Run:
    """Run the run's steps in order as a worker would (the last one finishes the run; a step
    that fails fails it). With `took`, the run is made to have started that many seconds
    before its end."""
    steps = list(run.step_runs.order_by("index"))
    previous = run.inputs
    for step in steps:
        try:
            previous = services.step_execute(step_run_id=step.id, previous=previous,
                                             task_id=step.task_id, worker="w1@host",
                                             finish_run=step.index == len(steps) - 1)
        except StepFailed as exc:
            services.step_fail(step_run_id=step.id, error=str(exc), task_id=step.task_id)
            break
        if step.index == 0 and took is not None:
            Run.objects.filter(id=run.id).update(
                started_at=timezone.now() - timedelta(seconds=took))
    return Run.objects.get(id=run.id)


def labels(**pairs: str) -> tuple:
    return tuple(sorted(pairs.items()))


def runs_of(chain) -> dict:
    return {"chain": chain.name if chain else "", "task_type": ""}


@pytest.fixture
def history(user):
    """Runs of two chains and of a seed task type in every state: completed (with known
    durations), failed, cancelled, pending, running and waiting for an approval."""
    alpha = make_chain("alpha", steps=[ADD, DOUBLE])
    beta = make_chain("beta", steps=[ADD, BY_ZERO])
    gated = make_chain("gated", steps=[ADD, APPROVAL])
    for took in (1.5, 4, 20):
        assert drive(services.run_start(chain=alpha, inputs=1, user=user),
                     took=took).status == RunStatus.COMPLETED
    assert drive(services.run_start(chain=beta, inputs=1, user=user),
                 took=7).status == RunStatus.FAILED
    services.run_cancel(run=services.run_start(chain=alpha, inputs=1, user=user))
    services.run_start(chain=alpha, inputs=1, trigger="admin", user=user)  # stays PENDING
    running = services.run_start(chain=beta, inputs=1, user=user)
    services.step_execute(step_run_id=running.step_runs.get(index=0).id, previous=1)
    waiting = drive(services.run_start(chain=gated, inputs=1, user=user))
    assert waiting.status == RunStatus.WAITING
    seed = services.run_submit_task(task_type="math_chain", user=user, config={
        "operation": "add", "numbers": [1, 2], "iterations": 2})
    assert drive(seed, took=0.3).status == RunStatus.COMPLETED
    return {"alpha": alpha, "beta": beta, "gated": gated}


def test_metrics_match_the_runs_in_the_database(client, history):
    samples = scrape(client)
    finished = samples["chains_runs_finished_total"]
    expected = Counter()
    for chain, task_type, status in Run.objects.filter(status__in=states.FINAL).values_list(
            "chain__name", "task_type", "status"):
        expected[labels(chain=chain or "", task_type=task_type, status=status)] += 1
    assert finished == {key: float(n) for key, n in expected.items()}
    assert finished[labels(chain="alpha", task_type="", status="COMPLETED")] == 3
    assert finished[labels(chain="", task_type="math_chain", status="COMPLETED")] == 1

    started = Counter()
    for chain, task_type, trigger in Run.objects.values_list("chain__name", "task_type",
                                                             "trigger"):
        started[labels(chain=chain or "", task_type=task_type, trigger=trigger)] += 1
    assert samples["chains_runs_started_total"] == {k: float(n) for k, n in started.items()}

    # The histogram's count is the number of finished runs; buckets are cumulative.
    counts = samples["chains_run_duration_seconds_count"]
    assert counts == finished
    buckets = samples["chains_run_duration_seconds_bucket"]
    alpha_done = labels(chain="alpha", task_type="", status="COMPLETED")
    cumulative = [(float(dict(key)["le"]), value) for key, value in buckets.items()
                  if tuple(p for p in key if p[0] != "le") == alpha_done]
    cumulative.sort()
    assert [value for _, value in cumulative] == sorted(value for _, value in cumulative)
    assert cumulative[-1] == (float("inf"), 3)
    at = dict(cumulative)
    assert (at[1.0], at[2.5], at[5.0], at[10.0], at[30.0]) == (0, 1, 2, 2, 3)  # 1.5, 4, 20 s
    assert 25.5 <= samples["chains_run_duration_seconds_sum"][alpha_done] < 27

    # Steps: one observation per step that completed or failed in a finished run.
    ran = Counter(StepRun.objects.filter(
        run__status__in=states.FINAL, status__in=[RunStatus.COMPLETED, RunStatus.FAILED],
        started_at__isnull=False).values_list("step_type", flat=True))
    assert samples["chains_step_duration_seconds_count"] == {
        labels(step_type=step_type): float(n) for step_type, n in ran.items()}
    assert ran["math.divide"] == 1  # the failed step of beta

    # Gauges: the open runs as they are now.
    open_runs = dict(Run.objects.filter(status__in=states.OPEN).values_list("status")
                     .annotate(n=Count("*")))
    assert samples["chains_runs_open"] == {
        labels(status=s): float(open_runs.get(s, 0))
        for s in ("QUEUED", "PENDING", "RUNNING", "WAITING")}
    assert open_runs == {"PENDING": 1, "RUNNING": 1, "WAITING": 1}


def test_metrics_agree_with_chain_stats(client, history, capsys):
    samples = scrape(client)
    call_command("chain_stats", "--json")
    stats = json.loads(capsys.readouterr().out)
    for status in ("queued", "pending", "running", "waiting"):
        assert samples["chains_runs_open"][labels(status=status.upper())] == \
            stats["runs"][status]
    finished = samples["chains_runs_finished_total"]
    total = {status: sum(v for k, v in finished.items() if dict(k)["status"] == status)
             for status in ("COMPLETED", "FAILED", "CANCELLED")}
    assert total == {status: stats["runs"][status.lower()] for status in total}
    buckets = samples["chains_run_duration_seconds_bucket"]
    for row in stats["chains"]:
        who = {"chain": row["chain"] or "", "task_type": row["task_type"]}
        completed = finished.get(labels(**who, status="COMPLETED"), 0)
        failed = finished.get(labels(**who, status="FAILED"), 0)
        assert completed + failed == row["finished_runs"]
        assert round(completed / (completed + failed), 4) == row["success_rate"]
        # chain_stats' p50 lies in the bucket where the histogram's cumulative count of
        # completed and failed runs first reaches half of them.
        cumulative = Counter()
        for key, value in buckets.items():
            pairs = dict(key)
            if ({"chain": pairs["chain"], "task_type": pairs["task_type"]} == who
                    and pairs["status"] in ("COMPLETED", "FAILED")):
                cumulative[float(pairs["le"])] += value
        bounds = sorted(cumulative)
        upper = next(b for b in bounds if cumulative[b] >= row["finished_runs"] / 2)
        lower = max([b for b in bounds if b < upper], default=0.0)
        assert lower < row["p50_seconds"] <= upper, (row, lower, upper)


def test_a_retried_run_counts_each_end_and_its_steps_once(client, user):
    beta = make_chain("beta", steps=[ADD, BY_ZERO])
    run = drive(services.run_start(chain=beta, inputs=1, user=user))
    assert run.status == RunStatus.FAILED
    services.chain_save(chain=beta, name="beta",  # the fix: the retry takes it
                        steps=[ADD, StepSpec("math.divide", {"numbers": [2]}, 1)])
    run = services.run_retry(run=run)
    assert drive(run).status == RunStatus.COMPLETED  # step 1 was kept, step 2 ran again
    samples = scrape(client)
    who = {"chain": "beta", "task_type": ""}
    assert samples["chains_runs_started_total"] == {labels(**who, trigger="api"): 1}
    assert samples["chains_runs_retried_total"] == {labels(**who): 1}
    assert samples["chains_runs_finished_total"] == {labels(**who, status="FAILED"): 1,
                                                     labels(**who, status="COMPLETED"): 1}
    # math.add ran once (kept by the retry); math.divide failed, then completed.
    assert samples["chains_step_duration_seconds_count"] == {
        labels(step_type="math.add"): 1, labels(step_type="math.divide"): 2}


def test_reconciler_passes_and_actions(client):
    report = services.reconcile_runs()
    assert set(report) == set(metrics.REPORT_ACTIONS)  # every action the report names
    metric_services.metrics_reconciled({"published": 2, "recovered": 1})
    samples = scrape(client)
    assert samples["chains_reconciler_passes_total"] == {(): 2}
    actions = {dict(k)["action"]: v for k, v in samples["chains_reconciler_actions_total"]
               .items()}
    assert actions == {"published": 2 + report["published"], "recovered": 1 + report[
        "recovered"], "resumed": 0, "failed": 0, "approvals_timed_out": 0,
        "children_ended": 0, "queued_started": 0}


def test_a_broker_that_is_down_or_silent_does_not_fail_the_scrape(client, user, monkeypatch):
    drive(make_run(ADD, user=user))
    with socket.socket() as closed:  # a port nothing listens on: connections are refused
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    monkeypatch.setattr(celery_app.conf, "broker_url", f"redis://127.0.0.1:{refused}/0")
    samples = scrape(client)
    assert samples["chains_broker_up"] == {(): 0.0}
    assert "chains_queue_messages" not in samples
    assert samples["chains_runs_finished_total"]  # the rest is there
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setattr(celery_app.conf, "broker_url",
                            f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        samples = scrape(client)
        took = time.monotonic() - started
    assert samples["chains_broker_up"] == {(): 0.0}
    assert took < 3 * metrics.BROKER_TIMEOUT + 1


@pytest.mark.broker
def test_queue_lengths_come_from_the_broker(client, broker):
    purge_queues(celery_app)
    try:
        for _ in range(3):
            celery_app.send_task("chains.step.math.add", queue="math")
        samples = scrape(client)
        assert samples["chains_broker_up"] == {(): 1.0}
        queues = {dict(k)["queue"]: v for k, v in samples["chains_queue_messages"].items()}
        assert queues["math"] == 3 and queues["data"] == 0
    finally:
        purge_queues(celery_app)


# --- Who may read it --------------------------------------------------------------------------


def test_a_right_token_reads_and_a_wrong_or_missing_one_learns_nothing(client):
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    refused = [client.get("/metrics", **headers) for headers in (
        {}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}x"},
        {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"}, {"HTTP_AUTHORIZATION": "Bearer "})]
    assert {r.status_code for r in refused} == {401}
    assert {r.content for r in refused} == {b"authentication required\n"}
    assert all(r["WWW-Authenticate"] == 'Bearer realm="metrics"' for r in refused)
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_tokens_are_compared_in_constant_time(client, monkeypatch):
    compared = []
    real = metrics.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(metrics.hmac, "compare_digest", spy)
    client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess")
    assert compared == [(b"guess", TOKEN.encode())]


@pytest.mark.parametrize("token", [TOKEN, ""])
def test_staff_sessions_read_and_other_sessions_do_not(client, settings, token):
    settings.CHAINS_METRICS_TOKEN = token
    client.force_login(make_user("dana"))
    response = client.get("/metrics")
    assert (response.status_code, response.content) == (403, b"forbidden\n")
    client.force_login(make_user("sam", staff=True))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"chains_runs_open" in response.content


def test_without_a_token_configured_no_bearer_token_is_accepted(client, settings):
    settings.CHAINS_METRICS_TOKEN = ""
    for header in ("Bearer ", "Bearer  ", "Bearer x"):
        assert client.get("/metrics", HTTP_AUTHORIZATION=header).status_code == 401


# --- Cost ---------------------------------------------------------------------------------


def test_a_scrape_costs_the_same_queries_at_10_and_200_runs(client):
    chain = make_chain("alpha", steps=[ADD, DOUBLE])
    ops = make_user("ops", staff=True)  # no limit on open runs

    def add_runs(n: int) -> None:
        for i in range(n):
            run = services.run_start(chain=chain, inputs=1, user=ops)
            if i % 3:
                drive(run)

    def queries() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            scrape(client)
        return [q["sql"] for q in captured.captured_queries]

    add_runs(10)
    at_10 = queries()
    add_runs(190)
    at_200 = queries()
    assert Run.objects.count() == 200
    assert len(at_10) == len(at_200) == 3  # stored samples, open runs, live workers
    on_runs = [sql for sql in at_200 if '"chains_run"' in sql]
    assert len(on_runs) == 1 and '"status" IN' in on_runs[0]
    if connection.vendor == "sqlite":  # read through the status index, not the table
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + on_runs[0])  # the SQL as executed
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
        assert "USING COVERING INDEX run_status_created" in plan, plan


def run_facts(run_id) -> dict:
    """What run_end's receivers are told, read alone: the part of metrics_run_ended's query
    that is not about metrics."""
    return Run.objects.filter(id=run_id).values("chain_id", "parent_step_id").get()


def test_a_run_adds_one_statement_when_it_starts_and_one_when_it_ends(user, monkeypatch):
    # At the end: the run read with its steps (which also tells run_end's receivers what they
    # need, a read they would make anyway) and the counters written.
    def statements(counted: bool) -> tuple[int, int]:
        """Statements of a run's start and of its last step (which ends it)."""
        with monkeypatch.context() as patch:
            if not counted:
                patch.setattr(runs_service, "metrics_run_started", lambda run: None)
                patch.setattr(runs_service, "metrics_run_ended", run_facts)
            with CaptureQueriesContext(connection) as started:
                run = make_run(ADD, DOUBLE, user=user)
            services.step_execute(step_run_id=run.step_runs.get(index=0).id, previous=1)
            last = run.step_runs.get(index=1)
            with CaptureQueriesContext(connection) as ended:
                services.step_execute(step_run_id=last.id, previous=2, finish_run=True)
            assert Run.objects.get(id=run.id).status == RunStatus.COMPLETED
        return len(started), len(ended)

    statements(True)  # caches warmed (the audit trail's content types)
    without, counted = statements(False), statements(True)
    assert (counted[0] - without[0], counted[1] - without[1]) == (1, 1)


# --- The stored counters ----------------------------------------------------------------------


def _stored() -> dict[tuple[str, str], float]:
    return {(n, k): v for n, k, v in MetricCount.objects.values_list("name", "labels", "value")}


@pytest.mark.parametrize("upsert", [True, False], ids=["on-conflict", "update-then-insert"])
def test_increments_add_up_with_either_way_of_writing(upsert, monkeypatch):
    if not upsert:
        monkeypatch.setattr(metric_services, "_upsert",
                            lambda connection, rows: metric_services._update_or_insert(rows))
    for _ in range(3):
        metric_services.metrics_add({("x_total", '["a"]'): 1, ("x_total", '["b"]'): 2.5})
    assert _stored() == {("x_total", '["a"]'): 3, ("x_total", '["b"]'): 7.5}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("upsert", [True, False], ids=["on-conflict", "update-then-insert"])
def test_concurrent_increments_are_not_lost(upsert, monkeypatch):
    if not upsert:
        monkeypatch.setattr(metric_services, "_upsert",
                            lambda connection, rows: metric_services._update_or_insert(rows))
    errors = []

    def writer() -> None:
        try:
            for _ in range(25):
                metric_services.metrics_add({("x_total", '["hot"]'): 1,
                                             ("x_total", '["cold"]'): 0.5})
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert _stored() == {("x_total", '["hot"]'): 150, ("x_total", '["cold"]'): 75}


def test_rebuild_from_the_runs_gives_what_the_services_counted(history):
    MetricCount.objects.filter(name__startswith="chains_reconciler").delete()
    counted = _stored()
    MetricCount.objects.all().delete()
    assert metric_services.metrics_rebuild() == len(counted)
    rebuilt = _stored()
    assert rebuilt.keys() == counted.keys()
    for key, value in counted.items():
        assert rebuilt[key] == pytest.approx(value, abs=0.01), key


# --- Documentation and dashboard ------------------------------------------------------------


def _readme_metrics() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    return {name: kind for name, kind in re.findall(r"^\| `(chains_\w+)` \| (\w+) \|",
                                                    section, re.M)}


def test_the_readme_documents_every_metric_exposed(client):
    assert _readme_metrics() == family_names(client)


def test_the_grafana_dashboard_imports_and_graphs_exposed_metrics(client):
    dashboard = json.loads((ROOT / "chains" / "grafana" / "task-chain.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    families = family_names(client)
    exposed = set(families) | {f"{name}{suffix}" for name, kind in families.items()
                               if kind == "histogram" for suffix in ("_bucket", "_count")}
    used = set()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            expr = target["expr"]
            assert all(expr.count(a) == expr.count(b) for a, b in ("()", "{}", "[]")), expr
            used |= set(re.findall(r"\bchains_\w+", expr))
    assert used <= exposed, used - exposed
    for name in families:  # every metric has a panel
        assert any(used_name == name or used_name.startswith(f"{name}_")
                   for used_name in used), name
