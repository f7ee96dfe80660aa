"""Benchmark: GET /metrics (bearer token) at 100,000 runs / 1,000,000 steps, with the stored
counters rebuilt from those runs and a live Redis holding messages: p95, queries per scrape
(the same at a tenth of the runs), and no query that scans the runs table."""
import shutil
import tempfile
import time
from pathlib import Path

from bench import child
from bench.reads import Sizes, _percentile

GOAL_MS = 100.0
REQUESTS = 50
WARMUP = 3
TOKEN = "bench-metrics-token"
QUEUED = {"math": 200, "data": 50}  # messages left waiting in the broker


def measure(*, quick: bool = False) -> list[dict]:
    """Run the benchmark in a child process (its own database, Redis and settings)."""
    return child.measure_in_child("bench.metrics_scrape", quick=quick)


# --- In the worker process ---------------------------------------------------------------------


def _scrape(client) -> bytes:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    if response.status_code != 200:
        raise RuntimeError(f"/metrics: {response.status_code}")
    return response.content


def _observe(client, requests: int) -> dict:
    """Wall and CPU milliseconds of scrapes, the SQL of one, and the plans of its queries
    on the runs table."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(WARMUP):
        _scrape(client)
    wall, cpu = [], []
    for _ in range(requests):
        started, started_cpu = time.perf_counter(), time.process_time()
        _scrape(client)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    wall.sort()
    cpu.sort()
    with CaptureQueriesContext(connection) as captured:
        body = _scrape(client)
    sqls = [q["sql"] for q in captured.captured_queries]
    plans = {}
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        for sql in sqls:
            if '"chains_run"' in sql or '"chains_steprun"' in sql:
                cursor.execute(("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + sql)
                plans[sql] = [str(row[-1]) for row in cursor.fetchall()]
    whole_table = (("Seq Scan on chains_run ", "Seq Scan on chains_steprun ") if postgres else
                   ("SCAN chains_run", "SCAN chains_steprun"))
    scans = [line for lines in plans.values() for line in lines
             if line.strip().removeprefix("->").strip().startswith(whole_table)]
    return {"p50_ms": round(_percentile(wall, 50), 2), "p95_ms": round(_percentile(wall, 95), 2),
            "cpu_p95_ms": round(_percentile(cpu, 95), 2), "queries": len(sqls), "sql": sqls,
            "plans": plans, "table_scans": scans, "bytes": len(body),
            "broker_up": b"chains_broker_up 1.0" in body}


def _rebuild() -> tuple[float, int]:
    from chains.services.metrics import metrics_rebuild

    started = time.perf_counter()
    rows = metrics_rebuild()
    return round(time.perf_counter() - started, 2), rows


def worker(*, quick: bool) -> list[dict]:
    import redis

    from bench import dataset
    from bench.stack import start_redis

    sizes = Sizes(small=1_000, full=10_000) if quick else Sizes(small=10_000, full=100_000)
    workdir = Path(tempfile.mkdtemp(prefix="taskchain-metrics-"))
    server, port = start_redis(workdir, CHAINS_METRICS_TOKEN=TOKEN)
    try:
        broker = redis.Redis(port=port)
        for queue, count in QUEUED.items():
            broker.rpush(queue, *["{}"] * count)
        dataset.setup_django(workdir)
        from django.test import Client

        client = Client()
        dataset.fill(runs=sizes.small, seed=1)
        small_rebuild = _rebuild()
        at_small = _observe(client, REQUESTS // 5)
        dataset.fill(runs=sizes.full - sizes.small, seed=3)
        rebuild_seconds, stored_rows = _rebuild()
        at_full = _observe(client, REQUESTS)
        server.terminate()
        server.wait(10)
        broker_down = _observe(client, REQUESTS // 5)
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    met = (at_full["p95_ms"] <= GOAL_MS and at_full["queries"] == at_small["queries"]
           and not at_full["table_scans"] and at_full["broker_up"])
    return [{
        "benchmark": f"metrics scrape at {sizes.label}", "metric": "p95 ms",
        "project": at_full["p95_ms"], "reference": None, "reference_name": "", "ratio": None,
        "goal": f"<= {GOAL_MS:.0f} ms, no runs table scan", "met": met,
        "details": {
            "p50_ms": at_full["p50_ms"], "cpu_p95_ms": at_full["cpu_p95_ms"],
            "queries_per_scrape": at_full["queries"],
            f"queries_at_{sizes.small // 1000}k_runs": at_small["queries"],
            f"p95_ms_at_{sizes.small // 1000}k_runs": at_small["p95_ms"],
            "p95_ms_broker_down": broker_down["p95_ms"],
            "broker_down_reported": not broker_down["broker_up"],
            "table_scans": at_full["table_scans"], "plans": at_full["plans"],
            "sql": at_full["sql"], "response_bytes": at_full["bytes"],
            "stored_rows": stored_rows, "rebuild_seconds": rebuild_seconds,
            f"rebuild_seconds_at_{sizes.small // 1000}k_runs": small_rebuild[0],
            "requests": REQUESTS,
        },
    }]


if __name__ == "__main__":
    child.main(__doc__, measure=measure, worker=worker)
