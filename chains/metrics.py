"""Prometheus metrics at /metrics, derived from the database at scrape time, so every web
process on every host reports the same values (no per-process state, no multiprocess
directory). Counters and histograms are kept in the small MetricCount table, added to by the
services in the transaction of the event they count (chains.services.metrics); gauges are
indexed COUNTs of the runs; queue lengths come from the broker, read with a short timeout.

A scrape reads the MetricCount table (a row per label set and bucket, not per run), one
GROUP BY over the open runs through the status index, the live workers' heartbeats, and the
broker: its cost does not grow with the number of runs.

A counter another part of the project keeps (failed notification deliveries, say) is declared
here with `declare` and counted through chains.services.metrics.metrics_count; it is then
listed at /metrics like the others."""
import hmac
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from celery import current_app as app
from django.conf import settings
from django.db.models import Count
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from chains import states
from chains.cluster import _queue_length
from chains.models import MetricCount, Run, WorkerHeartbeat
from chains.queues import allowed_queues

logger = logging.getLogger(__name__)

# Seconds the broker may take to connect and to answer: a broker that is away makes the
# scrape report chains_broker_up 0, not fail or hang.
BROKER_TIMEOUT = 0.5

# Upper bounds of the histograms' buckets (seconds). Stored bucket rows are keyed by these:
# a change of bounds needs chains.services.metrics.metrics_rebuild.
RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 10800,
               43200, 86400)
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
                1800, 3600)


@dataclass(frozen=True)
class Stored:
    """A counter or a histogram kept in MetricCount. `name` is the family's name: a counter's
    samples are `<name>_total`; a histogram's `<name>_bucket` (with `le`), `_sum`, `_count`."""

    name: str
    kind: str  # "counter" or "histogram"
    documentation: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = field(default=())

    def sample(self, suffix: str = "") -> str:
        return f"{self.name}{suffix or ('_total' if self.kind == 'counter' else '')}"


RUNS_STARTED = Stored(
    "chains_runs_started", "counter",
    "Runs started (created), by chain or seed task type and trigger.",
    ("chain", "task_type", "trigger"))
RUNS_RETRIED = Stored(
    "chains_runs_retried", "counter",
    "Runs retried after they failed or were cancelled (each retry ends again).",
    ("chain", "task_type"))
RUN_DURATION = Stored(
    "chains_run_duration_seconds", "histogram",
    "Seconds from a run's start to its end, observed when it ends, by chain or seed task "
    "type and how it ended.", ("chain", "task_type", "status"), RUN_BUCKETS)
STEP_DURATION = Stored(
    "chains_step_duration_seconds", "histogram",
    "Seconds a step ran (its last attempt), for the steps that completed or failed, observed "
    "when its run ends.", ("step_type",), STEP_BUCKETS)
RECONCILER_ACTIONS = Stored(
    "chains_reconciler_actions", "counter",
    "What the reconciler did, by action (runs published, resumed, failed, recovered; "
    "approvals timed out; parents of ended children completed).", ("action",))
RECONCILER_PASSES = Stored(
    "chains_reconciler_passes", "counter", "Passes of the reconciler (beat runs one every "
    "CHAINS_RECONCILE_EVERY seconds).")
# Runs finished are the run duration histogram's counts, shown as a counter of their own.
RUNS_FINISHED = ("chains_runs_finished", "Runs that ended, by chain or seed task type and "
                 "status (COMPLETED, FAILED, CANCELLED); a retried run counts each end.")

STORED: dict[str, Stored] = {}


def declare(metric: Stored) -> Stored:
    """Make a stored counter or histogram known to /metrics."""
    if STORED.setdefault(metric.name, metric) != metric:
        raise ValueError(f"metric {metric.name} is already declared differently")
    return metric


for _metric in (RUNS_STARTED, RUNS_RETRIED, RUN_DURATION, STEP_DURATION, RECONCILER_ACTIONS,
                RECONCILER_PASSES):
    declare(_metric)

# Kept by notifications (chains.services.notifications): deliveries that ended failed.
DELIVERIES_FAILED = declare(Stored(
    "chains_notification_deliveries_failed", "counter",
    "Notification deliveries that failed for good (after their retries), by channel (email, "
    "webhook) and event.", ("channel", "event")))

REPORT_ACTIONS = ("published", "resumed", "failed", "recovered", "approvals_timed_out",
                  "children_ended", "queued_started")


def labels_key(values: Iterable[str]) -> str:
    """How a label set is stored: its values as a compact JSON list."""
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def le(bound: float) -> str:
    """A bucket's upper bound as Prometheus writes it (1.0, 2.5, +Inf)."""
    return floatToGoString(bound)


# --- The scrape ---------------------------------------------------------------------------------


class StoredMetrics:
    """A prometheus_client collector over the database; one per scrape."""

    def collect(self) -> Iterator[Metric]:
        samples: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
        for name, labels, value in MetricCount.objects.values_list("name", "labels", "value"):
            samples[name][tuple(json.loads(labels))] = value
        for metric in STORED.values():
            if metric.kind == "histogram":
                yield _histogram(metric, samples)
            else:
                family = CounterMetricFamily(metric.name, metric.documentation,
                                             labels=metric.labels)
                for values, value in sorted(samples[metric.sample()].items()):
                    family.add_metric(values, value)
                yield family
        finished = CounterMetricFamily(*RUNS_FINISHED, labels=RUN_DURATION.labels)
        for values, value in sorted(samples[RUN_DURATION.sample("_count")].items()):
            finished.add_metric(values, value)
        yield finished
        yield from _gauges()
        yield from _broker()


def _histogram(metric: Stored, samples: dict[str, dict[tuple[str, ...], float]]
               ) -> HistogramMetricFamily:
    """Cumulative buckets from the stored per-bucket counts; +Inf is the count."""
    family = HistogramMetricFamily(metric.name, metric.documentation, labels=metric.labels)
    buckets, sums = samples[metric.sample("_bucket")], samples[metric.sample("_sum")]
    for values, count in sorted(samples[metric.sample("_count")].items()):
        cumulative, rows = 0.0, []
        for bound in metric.buckets:
            cumulative += buckets.get((*values, le(bound)), 0.0)
            rows.append((le(bound), cumulative))
        rows.append(("+Inf", count))
        family.add_metric(list(values), rows, sums.get(values, 0.0))
    return family


def _gauges() -> Iterator[Metric]:
    open_runs = GaugeMetricFamily(
        "chains_runs_open", "Runs now QUEUED (for a concurrency slot), PENDING, RUNNING or "
        "WAITING (for an approval or a child run).", labels=["status"])
    counts = dict(Run.objects.filter(status__in=states.OPEN).order_by()
                  .values_list("status").annotate(n=Count("*")))
    for status in (states.S.QUEUED, states.S.PENDING, states.S.RUNNING, states.S.WAITING):
        open_runs.add_metric([status.value], counts.get(status.value, 0))
    yield open_runs
    recent = Now() - timedelta(seconds=settings.CHAINS_WORKER_DEAD_SECONDS)
    yield GaugeMetricFamily(
        "chains_workers_alive", "Celery workers whose heartbeat is recent (one per worker, "
        "whatever its concurrency).",
        value=WorkerHeartbeat.objects.filter(seen_at__gte=recent).count())


def queue_lengths(queues: Iterable[str], *, timeout: float = BROKER_TIMEOUT
                  ) -> dict[str, int | None] | None:
    """Messages waiting in each queue (None for a queue the broker does not know), or None
    when the broker cannot be reached within `timeout` seconds (no retries)."""
    options = {**(app.conf.broker_transport_options or {}), "max_retries": 0,
               "socket_timeout": timeout, "socket_connect_timeout": timeout}
    try:
        with app.connection_for_read(connect_timeout=timeout,
                                     transport_options=options) as connection:
            channel = connection.default_channel
            return {queue: _queue_length(channel, queue) for queue in queues}
    except Exception as exc:
        logger.warning("metrics: the broker could not be read: %s", exc)
        return None


def _broker() -> Iterator[Metric]:
    lengths = queue_lengths(allowed_queues())
    yield GaugeMetricFamily("chains_broker_up", "1 if the broker answered this scrape, else 0.",
                            value=0 if lengths is None else 1)
    family = GaugeMetricFamily("chains_queue_messages", "Messages waiting in each queue.",
                               labels=["queue"])
    for queue, length in sorted((lengths or {}).items()):
        if length is not None:
            family.add_metric([queue], length)
    yield family


def exposition(accept: str = "") -> tuple[bytes, str]:
    """The metrics in the format `accept` asks for (Prometheus text, or OpenMetrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoredMetrics())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


# --- The view -------------------------------------------------------------------------------


def _refused(status: int) -> HttpResponse:
    """The same few words whatever was wrong: nothing about the token or its setting."""
    response = HttpResponse("authentication required\n" if status == 401 else "forbidden\n",
                            status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def _bearer_ok(header: str) -> bool:
    token = settings.CHAINS_METRICS_TOKEN or ""
    scheme, _, given = header.partition(" ")
    # Compared in constant time, and compared even when no token is set (an empty one).
    matches = hmac.compare_digest(given.strip().encode(), token.encode())
    return scheme.lower() == "bearer" and bool(token) and matches


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: `Authorization: Bearer <CHAINS_METRICS_TOKEN>`, or a signed-in staff
    user's session. A wrong token is 401, a session of a user who is not staff 403."""
    header = request.headers.get("Authorization", "")
    if header:
        if not _bearer_ok(header):
            return _refused(401)
    elif not request.user.is_authenticated:
        return _refused(401)
    elif not (request.user.is_staff and request.user.is_active):
        return _refused(403)
    body, content_type = exposition(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
