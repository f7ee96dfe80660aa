"""Benchmark 5: reads at 100,000 runs / 1,000,000 steps, p95 and queries per request."""
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import child

GOAL_MS = 150.0
GOAL_QUERIES = 5
REQUESTS = 50
WARMUP = 3
AUTH_TABLES = ("django_session", "auth_user", "authtoken_token")


@dataclass
class Endpoint:
    name: str
    path: str
    users: tuple[str, ...]
    admin: bool = False


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
    with a session for the admin."""

    def __init__(self) -> None:
        from django.contrib.auth import get_user_model
        from django.test import Client
        from rest_framework.test import APIClient

        self.users = {u.username: u for u in get_user_model().objects.all()}
        self.api, self.admin = {}, {}
        for name, user in self.users.items():
            self.api[name] = APIClient()
            self.api[name].force_authenticate(user)
            if user.is_staff:
                self.admin[name] = Client()
                self.admin[name].force_login(user)

    def get(self, endpoint: Endpoint, user: str):
        client = (self.admin if endpoint.admin else self.api)[user]
        response = client.get(endpoint.path)
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


def _rows(at_small: dict, at_full: dict, sizes: Sizes) -> list[dict]:
    wide = at_full.pop("run detail, 100 steps")["bench-admin"]
    at_small.pop("run detail, 100 steps")
    rows = []
    for name, per_user in at_full.items():
        worst = max(per_user.values(), key=lambda o: o["p95_ms"])
        queries = max(o["queries"] for o in per_user.values())
        small_queries = max(o["queries"] for o in at_small[name].values())
        unbounded = [sql for o in per_user.values() for sql in o["unbounded_counts"]]
        if name == "GET /tasks/statistics":
            unbounded = []  # an aggregate over every visible run by definition
        details = {
            "p50_ms": worst["p50_ms"], "cpu_p95_ms": worst["cpu_p95_ms"],
            "queries_per_request": queries,
            "auth_queries_per_request": worst["auth_queries"],
            f"queries_at_{sizes.small // 1000}k_runs": small_queries,
            f"p95_ms_at_{sizes.small // 1000}k_runs": max(
                o["p95_ms"] for o in at_small[name].values()),
            "by_user": {u: {k: o[k] for k in ("p50_ms", "p95_ms", "cpu_p95_ms", "queries")}
                        for u, o in per_user.items()},
            "unbounded_counts": len(unbounded), "requests": REQUESTS,
            "sql": per_user[next(iter(per_user))]["sql"],
        }
        if name.startswith("run detail"):
            details["queries_at_100_steps"] = wide["queries"]
            details["p95_ms_at_100_steps"] = wide["p95_ms"]
        met = (worst["p95_ms"] <= GOAL_MS and queries <= GOAL_QUERIES
               and queries == small_queries and not unbounded
               and details.get("queries_at_100_steps", queries) == queries)
        rows.append({
            "benchmark": f"reads at {sizes.label}: {name}", "metric": "p95 ms",
            "project": worst["p95_ms"], "reference": None, "reference_name": "", "ratio": None,
            "goal": f"<= {GOAL_MS:.0f} ms, <= {GOAL_QUERIES} queries", "met": met,
            "details": details,
        })
    return rows


def worker(*, quick: bool) -> list[dict]:
    from bench import dataset

    sizes = Sizes(small=1_000, full=10_000) if quick else Sizes(small=10_000, full=100_000)
    workdir = Path(tempfile.mkdtemp(prefix="taskchain-reads-"))
    try:
        dataset.setup_django(workdir)
        dataset.fill(runs=sizes.small, seed=1)
        dataset.fill(runs=1, steps=100, status="COMPLETED", seed=2, rebuild_indexes=False)
        clients = Clients()
        endpoints = _endpoints(*_sample_runs())
        at_small = {e.name: _observe(clients, e, REQUESTS // 5) for e in endpoints}
        dataset.fill(runs=sizes.full - sizes.small, seed=3)
        at_full = {e.name: _observe(clients, e, REQUESTS) for e in endpoints}
        return _rows(at_small, at_full, sizes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    child.main(__doc__, measure=measure, worker=worker)
