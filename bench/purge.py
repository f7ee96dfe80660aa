"""Benchmark 6: `manage.py purge_runs` over 100,000 runs, wall time and peak memory, on SQLite
or (with BENCH_DATABASE_URL) PostgreSQL."""
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import child
from bench.database import engine
from bench.dataset import bench_environment, migrate

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = {"sqlite": 10.0, "postgresql": 5.0}
# Flat memory: the peak at the full size within this much of the peak at a tenth of it.
FLAT_TOLERANCE = 0.15
RUN_FILES = 100
TABLES = ("chains_run", "chains_steprun", "django_celery_results_taskresult", "chains_mapitem",
          "chains_approval", "chains_stepattempt", "chains_delivery", "chains_idempotencykey")


def measure(*, quick: bool = False) -> list[dict]:
    """Run the benchmark in a child process (it builds its own databases)."""
    return child.measure_in_child("bench.purge", quick=quick)


# --- In the worker process ---------------------------------------------------------------------


def _filled(workdir: Path, runs: int) -> dict[str, str]:
    """A migrated database under `workdir` with `runs` finished runs, 10 steps each, and the
    rows that hang off runs and steps (see `add_related`)."""
    env = bench_environment(workdir)
    migrate(env)
    subprocess.run([sys.executable, "-m", "bench.dataset", "--var-dir", str(workdir),
                    "--runs", str(runs), "--finished-only", "--run-files", str(RUN_FILES),
                    "--quiet"], cwd=ROOT, env=env, check=True)
    subprocess.run([sys.executable, "-c", "from bench.purge import add_related; add_related()"],
                   cwd=ROOT, env=env, check=True)
    return env


def _row_counts(workdir: Path, env: dict[str, str]) -> dict[str, int]:
    url = env.get("DATABASE_URL")
    if url:
        import psycopg

        with psycopg.connect(url) as db:
            return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    with sqlite3.connect(workdir / "db.sqlite3") as db:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


def _run_command(args: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Seconds, peak RSS in MB and CPU seconds (this child's own, from wait4), and stdout of a
    manage.py command."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} exited {process.returncode}")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, output.strip()


def _purge(runs: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="taskchain-purge-"))
    try:
        env = _filled(workdir, runs)
        before = _row_counts(workdir, env)
        # Start-up of the command alone: a cutoff before every run deletes nothing.
        startup, _, _, _ = _run_command(["purge_runs", "--older-than", "100000"], env)
        seconds, peak_mb, cpu, output = _run_command(["purge_runs", "--older-than", "0"], env)
        after = _row_counts(workdir, env)
        files_left = len(list((workdir / "data" / "runs").glob("*")))
        if any(after.values()) or files_left or output != f"deleted {runs} run(s)":
            raise RuntimeError(f"purge left {after}, {files_left} folders: {output!r}")
        return {"seconds": seconds, "peak_rss_mb": peak_mb, "cpu_s": cpu, "startup_s": startup,
                "rows_before": before}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def worker(*, quick: bool) -> list[dict]:
    full, small = (10_000, 1_000) if quick else (100_000, 10_000)
    database = engine()
    goal = GOAL_SECONDS[database]
    at_small = _purge(small)
    at_full = _purge(full)
    flat = at_full["peak_rss_mb"] <= at_small["peak_rss_mb"] * (1 + FLAT_TOLERANCE)
    label = f"{small // 1000}k"
    return [{
        "benchmark": f"purge_runs over {full:,} runs ({database})", "metric": "seconds",
        "project": round(at_full["seconds"], 2), "reference": None, "reference_name": "",
        "ratio": None, "goal": f"<= {goal:.0f} s, flat memory",
        "met": at_full["seconds"] <= goal and flat,
        "details": {
            "database": database,
            "peak_rss_mb": round(at_full["peak_rss_mb"], 1),
            f"peak_rss_mb_at_{label}": round(at_small["peak_rss_mb"], 1),
            "peak_rss_growth": round(at_full["peak_rss_mb"] / at_small["peak_rss_mb"], 3),
            f"seconds_at_{label}": round(at_small["seconds"], 2),
            "seconds_growth": round(at_full["seconds"] / at_small["seconds"], 2),
            "cpu_seconds": round(at_full["cpu_s"], 2),
            "command_startup_s": round(at_full["startup_s"], 2),
            "runs_per_second": round(full / at_full["seconds"]),
            "rows_deleted": at_full["rows_before"], "run_folders_removed": RUN_FILES,
            "flat_memory": flat,
        },
    }]


# --- Rows hanging off runs and steps (a separate process, with Django) ------------------------


def add_related() -> None:
    """On the database of DATABASE_URL / TASK_CHAIN_VAR_DIR, already filled by bench.dataset:
    an earlier attempt (and its task result) of every failed step, ten items of a map on one
    step in 200 (the first item's failure stored as a task result), an approval on one step in
    100, a webhook rule per chain with a delivery of each failed run of a chain (and a resend
    of one in ten), and an idempotency key of each run started through the API. One
    INSERT ... SELECT each, portable between SQLite and PostgreSQL; then, on PostgreSQL, the
    tables the purge reads vacuumed and analysed."""
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.db import connection, transaction
    from django_celery_results.models import TaskResult

    from chains.models import (
        Approval,
        Chain,
        Delivery,
        IdempotencyKey,
        MapItem,
        NotificationRule,
        StepAttempt,
    )

    done = "s.status IN ('COMPLETED', 'FAILED')"
    items = " UNION ALL ".join(f"SELECT {n} AS n" for n in range(10))
    with transaction.atomic():
        NotificationRule.objects.bulk_create(
            NotificationRule(chain=chain, events=["run_failed"], channel="webhook",
                             url="https://hooks.example.com/chains", secret="bench")
            for chain in Chain.objects.all())
        _insert_select(StepAttempt, {
            "step_run_id": "s.id", "number": "1", "task_id": "s.task_id || '-1'",
            "status": "'FAILED'", "error": "'division by zero'", "worker": "s.worker",
            "started_at": "s.started_at", "finished_at": "s.finished_at",
            "ended_by": "'step_retried'",
        }, "FROM chains_steprun s WHERE s.status = 'FAILED'")
        _insert_select(MapItem, {
            "step_run_id": "s.id", "index": "i.n",
            "task_id": "s.task_id || '-item-' || CAST(i.n AS VARCHAR(8))",
            "status": "CASE WHEN i.n = 0 THEN 'FAILED' ELSE 'COMPLETED' END",
            "attempts": "1", "started_at": "s.started_at", "finished_at": "s.finished_at",
        }, f"FROM chains_steprun s CROSS JOIN ({items}) i WHERE s.id %% 200 = 0 AND {done}")
        _insert_select(Approval, {
            "step_run_id": "s.id", "task_id": "s.task_id", "message": "'go on?'",
            "due_at": "s.started_at", "decision": "'approved'", "decided_at": "s.finished_at",
            "created_at": "s.started_at",
        }, f"FROM chains_steprun s WHERE s.id %% 100 = 1 AND {done}")
        failure = {"status": "'FAILURE'", "task_name": "'chains.step.math.divide'",
                   "date_created": "s.started_at", "date_done": "s.finished_at",
                   "traceback": "'Traceback (most recent call last):'"}
        _insert_select(TaskResult, {**failure, "task_id": "a.task_id"},
                       "FROM chains_stepattempt a JOIN chains_steprun s ON s.id = a.step_run_id")
        _insert_select(TaskResult, {**failure, "task_id": "m.task_id"},
                       "FROM chains_mapitem m JOIN chains_steprun s ON s.id = m.step_run_id "
                       "WHERE m.\"index\" = 0")
        delivery = {"rule_id": "n.id", "run_id": "r.id", "event": "'run_failed'",
                    "status": "'sent'", "attempts": "1", "status_code": "200",
                    "created_at": "r.finished_at", "sent_at": "r.finished_at"}
        _insert_select(Delivery, delivery, "FROM chains_run r JOIN chains_notificationrule n "
                       "ON n.chain_id = r.chain_id WHERE r.status = 'FAILED'")
        _insert_select(Delivery, {**delivery, "resend_of_id": "d.id"},
                       "FROM chains_delivery d JOIN chains_run r ON r.id = d.run_id "
                       "JOIN chains_notificationrule n ON n.id = d.rule_id WHERE d.id %% 10 = 0")
        _insert_select(IdempotencyKey, {
            "user_id": "r.created_by_id", "key": "CAST(r.id AS VARCHAR(64))",
            "fingerprint": "'bench'", "run_id": "r.id", "created_at": "r.created_at",
        }, "FROM chains_run r WHERE r.\"trigger\" = 'api' AND r.created_by_id IS NOT NULL")
    if connection.vendor == "postgresql":
        # Runs weeks old have long been vacuumed and analysed by autovacuum: without it the
        # purge would be the first to read the rows just written (setting their hint bits)
        # and be planned without statistics.
        with connection.cursor() as cursor:
            for table in TABLES:
                cursor.execute(f"VACUUM ANALYZE {table}")


def _insert_select(model, given: dict[str, str], source: str) -> None:
    """INSERT INTO model's table SELECT the `given` SQL expressions (by column) `source` (a
    literal % written %%), with the model's defaults for the other columns."""
    from django.db import connection

    from bench.dataset import Columns

    columns = Columns(model, set(given))
    quote = connection.ops.quote_name
    values = [given.get(name, "%s") for name in columns.names]
    constants = [columns.constants[name] for name in columns.names if name not in given]
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote(columns.table)} "
                       f"({', '.join(map(quote, columns.names))}) "
                       f"SELECT {', '.join(values)} {source}", constants)


if __name__ == "__main__":
    child.main(__doc__, measure=measure, worker=worker)
