"""Benchmark 5: reads at 10,000, 100,000 and 1,000,000 runs (10 steps each): p95 and queries
per request of the seed endpoints, the API, the admin's run list, run page and dashboard, and
/metrics; the goal is judged at the largest size, its queries against the smallest's."""
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import child

GOAL_MS = 150.0
GOAL_QUERIES = 5
REQUESTS = 50
WARMUP = 3
AUTH_TABLES = ("django_session", "auth_user", "authtoken_token")
METRICS_TOKEN = "bench-reads-metrics-token"
# Sizes in runs (each with 10 steps): the goal is judged at the last, against the first.
FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)


@dataclass
class Endpoint:
    name: str
    path: str
    users: tuple[str, ...]
    admin: bool = False
    # Pages beyond the seed endpoints and the run list: their goal on queries is the same
    # count at every size, not at most GOAL_QUERIES.
    any_queries: bool = False
    headers: dict = field(default_factory=dict)


@dataclass
class Sizes:
    small: int
    full: int

    @property
    def label(self) -> str:
        return f"{_short(self.full)} runs / {_short(self.full * 10)} steps"


def _short(number: int) -> str:
    return f"{number // 1_000_000}M" if number >= 1_000_000 else f"{number // 1000}k"


def measure(*, quick: bool = False) -> list[dict]:
    """Run the benchmark in a child process (its own database and Django settings)."""
    return child.measure_in_child("bench.reads", quick=quick)


# --- In the worker process ---------------------------------------------------------------------


def _percentile(ordered: list[float], pct: float) -> float:
    index = max(1, -(-len(ordered) * pct // 100)) - 1
    return ordered[int(index)]


class Clients:
    """One signed-in test client per user name: DRF's APIClient for the API, Django's Client
    with a session for the admin; a client with no session for /metrics (its bearer token)."""

    def __init__(self) -> None:
        from django.contrib.auth import get_user_model
        from django.test import Client
        from rest_framework.test import APIClient

        self.users = {u.username: u for u in get_user_model().objects.all()}
        self.api, self.admin = {}, {"anonymous": Client()}
        for name, user in self.users.items():
            self.api[name] = APIClient()
            self.api[name].force_authenticate(user)
            if user.is_staff:
                self.admin[name] = Client()
                self.admin[name].force_login(user)

    def get(self, endpoint: Endpoint, user: str):
        client = (self.admin if endpoint.admin else self.api)[user]
        response = client.get(endpoint.path, headers=endpoint.headers)
        if response.status_code != 200:
            raise RuntimeError(f"{endpoint.path} as {user}: {response.status_code}")
        return response


def _timings(clients: Clients, endpoint: Endpoint, user: str,
             requests: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each request, ascending. The CPU time of this
    process (Django and SQLite both run in it) is what other load on the machine hides."""
    for _ in range(WARMUP):
        clients.get(endpoint, user)
    wall, cpu = [], []
    for _ in range(requests):
        started, started_cpu = time.perf_counter(), time.process_time()
        clients.get(endpoint, user)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return sorted(wall), sorted(cpu)


def _queries(clients: Clients, endpoint: Endpoint, user: str) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        clients.get(endpoint, user)
    return [q["sql"] for q in captured.captured_queries]


def _unbounded_counts(sqls: list[str]) -> list[str]:
    """COUNTs with no LIMIT under them: they read every matching row."""
    return [sql for sql in sqls if "COUNT(" in sql.upper() and " LIMIT " not in sql.upper()]


def _is_auth(sql: str) -> bool:
    """A session, token or user lookup of authentication, not a join of the endpoint."""
    table = re.match(r'SELECT .*? FROM "(\w+)"', sql)
    return bool(table) and table.group(1) in AUTH_TABLES


def _observe(clients: Clients, endpoint: Endpoint, requests: int) -> dict:
    """Timings and queries of one endpoint for each of its users."""
    per_user = {}
    for user in endpoint.users:
        timings, cpu = _timings(clients, endpoint, user, requests)
        sqls = _queries(clients, endpoint, user)
        per_user[user] = {
            "p50_ms": round(_percentile(timings, 50), 2),
            "p95_ms": round(_percentile(timings, 95), 2),
            "cpu_p95_ms": round(_percentile(cpu, 95), 2),
            "queries": len(sqls), "auth_queries": sum(map(_is_auth, sqls)),
            "unbounded_counts": _unbounded_counts(sqls), "sql": sqls,
        }
    return per_user


def _endpoints(detail_id: str, owner_detail_id: str, wide_id: str) -> list[Endpoint]:
    return [
        Endpoint("GET /tasks/statistics", "/tasks/statistics", ("bench-admin", "alice")),
        Endpoint("GET /tasks?status=FAILED&limit=50", "/tasks?status=FAILED&limit=50",
                 ("bench-admin", "alice")),
        Endpoint("run detail GET /api/runs/{id}/", f"/api/runs/{detail_id}/",
                 ("bench-admin",)),
        Endpoint("run detail GET /api/runs/{id}/ (owner)", f"/api/runs/{owner_detail_id}/",
                 ("alice",)),
        Endpoint("run detail, 100 steps", f"/api/runs/{wide_id}/", ("bench-admin",)),
        Endpoint("GET /tasks/{id}/status", f"/tasks/{owner_detail_id}/status",
                 ("bench-admin", "alice")),
        Endpoint("admin run list /admin/chains/run/", "/admin/chains/run/", ("bench-admin",),
                 admin=True),
        Endpoint("GET /api/runs/?status=FAILED", "/api/runs/?status=FAILED",
                 ("bench-admin", "alice")),
        Endpoint("admin run page /admin/chains/run/{id}/change/",
                 f"/admin/chains/run/{detail_id}/change/", ("bench-admin",), admin=True,
                 any_queries=True),
        Endpoint("admin dashboard /admin/chains/run/dashboard/",
                 "/admin/chains/run/dashboard/", ("bench-admin",), admin=True, any_queries=True),
        Endpoint("GET /metrics (bearer token)", "/metrics", ("anonymous",), admin=True,
                 any_queries=True, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}),
    ]


def _sample_runs() -> tuple[str, str, str]:
    """A completed 10-step run owned by the staff user, one owned by alice, and the 100-step
    run."""
    from chains.models import Run

    completed = Run.objects.filter(status="COMPLETED", steps_total=10).order_by()
    staff = completed.filter(created_by__username="bench-admin").values_list("id", flat=True)[0]
    owned = completed.filter(created_by__username="alice").values_list("id", flat=True)[0]
    wide = Run.objects.filter(steps_total=100).values_list("id", flat=True)[0]
    return str(staff), str(owned), str(wide)


def _size_key(runs: int) -> str:
    return f"{runs // 1_000_000}m" if runs >= 1_000_000 else f"{runs // 1000}k"


def _rows(observed: dict[int, dict], builds: dict[int, dict],
          endpoints: list[Endpoint]) -> list[dict]:
    """A row per endpoint: p95 at the largest size; its queries the same as at the smallest
    (and at most GOAL_QUERIES for the seed endpoints, the API and the run list)."""
    sizes = Sizes(small=min(observed), full=max(observed))
    kinds = {e.name: e for e in endpoints}
    at_small, at_full = observed[sizes.small], observed[sizes.full]
    wide = at_full["run detail, 100 steps"]["bench-admin"]
    build = {_size_key(runs): b for runs, b in builds.items()}
    rows = []
    for name, per_user in at_full.items():
        if name == "run detail, 100 steps":
            continue
        worst = max(per_user.values(), key=lambda o: o["p95_ms"])
        queries = max(o["queries"] for o in per_user.values())
        small_queries = max(o["queries"] for o in at_small[name].values())
        unbounded = [sql for o in per_user.values() for sql in o["unbounded_counts"]]
        if name in ("GET /tasks/statistics", "admin dashboard /admin/chains/run/dashboard/"):
            unbounded = []  # counts by status of every visible run, by definition
        if name == "GET /metrics (bearer token)":
            unbounded = []  # the open runs by status and the live workers: gauges, by design
        p95_by_size = {_size_key(runs): max(o["p95_ms"] for o in at[name].values())
                       for runs, at in observed.items()}
        details = {
            "p50_ms": worst["p50_ms"], "cpu_p95_ms": worst["cpu_p95_ms"],
            "queries_per_request": queries,
            "auth_queries_per_request": worst["auth_queries"],
            "p95_ms_by_runs": p95_by_size,
            "queries_by_runs": {_size_key(runs): max(o["queries"] for o in at[name].values())
                                for runs, at in observed.items()},
            "p95_growth": {f"{_size_key(b)}/{_size_key(a)}": round(
                p95_by_size[_size_key(b)] / p95_by_size[_size_key(a)], 2)
                for a, b in zip(sorted(observed), sorted(observed)[1:], strict=False)},
            "by_user": {u: {k: o[k] for k in ("p50_ms", "p95_ms", "cpu_p95_ms", "queries")}
                        for u, o in per_user.items()},
            "unbounded_counts": len(unbounded), "requests": REQUESTS,
            "dataset_build_seconds": build,
            "sql": per_user[next(iter(per_user))]["sql"],
        }
        if name.startswith("run detail"):
            details["queries_at_100_steps"] = wide["queries"]
            details["p95_ms_at_100_steps"] = wide["p95_ms"]
        any_queries = kinds[name].any_queries
        met = (worst["p95_ms"] <= GOAL_MS and (any_queries or queries <= GOAL_QUERIES)
               and queries == small_queries and not unbounded
               and details.get("queries_at_100_steps", queries) == queries)
        queries_goal = (f"queries as at {_short(sizes.small)} runs" if any_queries
                        else f"<= {GOAL_QUERIES} queries")
        rows.append({
            "benchmark": f"reads at {sizes.label}: {name}", "metric": "p95 ms",
            "project": worst["p95_ms"], "reference": None, "reference_name": "", "ratio": None,
            "goal": f"<= {GOAL_MS:.0f} ms, {queries_goal}", "met": met,
            "details": details,
        })
    return rows


def _start_redis(workdir: Path) -> subprocess.Popen:
    """A Redis of this benchmark's own for /metrics' queue lengths."""
    from bench.stack import start_redis

    return start_redis(workdir, CHAINS_METRICS_TOKEN=METRICS_TOKEN)[0]


def worker(*, quick: bool) -> list[dict]:
    from bench import dataset

    sizes = QUICK_SIZES if quick else FULL_SIZES
    workdir = Path(tempfile.mkdtemp(prefix="taskchain-reads-"))
    server = _start_redis(workdir)
    try:
        dataset.setup_django(workdir)
        from chains.services.metrics import metrics_rebuild

        builds: dict[int, dict] = {}
        observed: dict[int, dict] = {}
        clients = endpoints = None
        filled = 0
        for number, runs in enumerate(sizes):
            # Seeds ascend with each fill (dataset.fill_fast); 2 is the 100-step run's.
            builds[runs] = dataset.fill_fast(runs=runs - filled, seed=1 if not number
                                             else number + 2)
            filled = runs
            if clients is None:
                dataset.fill_fast(runs=1, steps=100, status="COMPLETED", seed=2,
                                  rebuild_indexes=False)
                # The stored counters /metrics reads: a row per label set and bucket, as
                # many at every size, so they are made once.
                metrics_rebuild()
                clients = Clients()
                endpoints = _endpoints(*_sample_runs())
            requests = REQUESTS if runs == sizes[-1] else REQUESTS // 5
            observed[runs] = {e.name: _observe(clients, e, requests) for e in endpoints}
        return _rows(observed, builds, endpoints)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    child.main(__doc__, measure=measure, worker=worker)
