"""The project against raw Celery, measured in the same run: same Redis, same database
(SQLite, django-db result backend), same worker (2 prefork processes).

    python -m bench.run [--repeat 3] [--json bench/results.json]

Prints one table of medians and ratios and writes it as JSON.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUEUES = "celery,math,data,io"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(workdir: Path) -> dict[str, str]:
    port = _free_port()
    env = {
        "TASK_CHAIN_VAR_DIR": str(workdir), "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0", "DJANGO_DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "config.settings", "CHAINS_MAX_STEPS": "2000",
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    return env


class Stack:
    """Redis, a migrated SQLite database and one worker, all children of this process."""

    def __init__(self, workdir: Path) -> None:
        from config.embedded_redis import redis_server_command

        self.env = {**os.environ}
        port = int(self.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        (workdir / "redis").mkdir()
        self.redis = subprocess.Popen(redis_server_command(port, workdir / "redis"),
                                      stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=self.env,
                       check=True)
        self.worker_log = (workdir / "worker.log").open("wb")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "prefork",
             "--concurrency", "2", "--queues", QUEUES, "--include", "bench.raw_tasks",
             "--loglevel", "WARNING", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=self.env, stdout=self.worker_log, stderr=subprocess.STDOUT)

    def wait_ready(self, app) -> None:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("the bench worker did not start")

    def stop(self) -> None:
        for process in (self.worker, self.redis):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.worker_log.close()


def _wait_runs(run_ids, timeout: float = 600) -> None:
    from chains.models import Run

    deadline = time.monotonic() + timeout
    pending = set(run_ids)
    while pending:
        finished = set(Run.objects.filter(id__in=pending, status__in=[
            "COMPLETED", "FAILED", "CANCELLED"]).values_list("id", flat=True))
        bad = Run.objects.filter(id__in=finished).exclude(status="COMPLETED").count()
        if bad:
            raise RuntimeError(f"{bad} bench run(s) did not complete")
        pending -= finished
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} bench runs unfinished")
        time.sleep(0.02)


def project_chains(runs: int, steps: int, *, parallel: int = 0) -> float:
    """Seconds to start and finish `runs` runs of a no-op chain (flow.wait of 0 s)."""
    from chains import services
    from chains.presets import StepSpec

    if parallel:
        specs = [StepSpec("flow.wait", {"seconds": 0}, 0) for _ in range(parallel)]
        specs.append(StepSpec("flow.wait", {"seconds": 0}, 1))
    else:
        specs = [StepSpec("flow.wait", {"seconds": 0}, i) for i in range(steps)]
    name = f"bench-{runs}-{steps}-{parallel}-{time.monotonic_ns()}"
    chain = services.chain_save(name=name, steps=specs)
    started = time.perf_counter()
    ids = [services.run_start(chain=chain, inputs=0).id for _ in range(runs)]
    _wait_runs(ids)
    return time.perf_counter() - started


def raw_chains(runs: int, steps: int, *, parallel: int = 0) -> float:
    """The same work as plain Celery: chains (or a chord) of no-op tasks, django-db results."""
    from celery import chain, chord, group

    from bench.raw_tasks import noop

    started = time.perf_counter()
    if parallel:
        results = [chord(group(noop.s(0) for _ in range(parallel)), noop.s()).apply_async()
                   for _ in range(runs)]
    else:
        results = [chain(noop.si(0), *[noop.s() for _ in range(steps - 1)]).apply_async()
                   for _ in range(runs)]
    for result in results:
        result.get(timeout=600, interval=0.02, propagate=True)
    return time.perf_counter() - started


BENCHMARKS = [
    # name, runs, steps per run, parallel width
    ("chain overhead, 10 steps", 20, 10, 0),
    ("chain overhead, 50 steps", 4, 50, 0),
    ("sequential latency, 100 steps", 1, 100, 0),
    ("fan-out, 1,000 parallel + 1", 1, 1001, 1000),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="taskchain-bench-"))
    _environment(workdir)
    sys.path.insert(0, str(ROOT))
    stack = Stack(workdir)
    try:
        import django

        django.setup()
        from config.celery import app

        stack.wait_ready(app)
        project_chains(1, 2)  # warm both paths up
        raw_chains(1, 2)
        rows = []
        for name, runs, steps, parallel in BENCHMARKS:
            ours = statistics.median(project_chains(runs, steps, parallel=parallel)
                                     for _ in range(args.repeat))
            raw = statistics.median(raw_chains(runs, steps, parallel=parallel)
                                    for _ in range(args.repeat))
            total = runs * steps
            rows.append({
                "benchmark": name, "runs": runs, "steps_per_run": steps,
                "project_seconds": round(ours, 4), "raw_seconds": round(raw, 4),
                "project_steps_per_second": round(total / ours, 1),
                "raw_steps_per_second": round(total / raw, 1),
                "project_ms_per_step": round(1000 * ours / total, 3),
                "raw_ms_per_step": round(1000 * raw / total, 3),
                "throughput_ratio": round(raw / ours, 3),
            })
            print(f"{name}: project {ours:.3f}s raw {raw:.3f}s", file=sys.stderr)
    finally:
        stack.stop()
    _print_table(rows)
    Path(args.json).write_text(json.dumps({"repeat": args.repeat, "results": rows}, indent=2))
    print(f"\nwritten to {args.json}")


def _print_table(rows: list[dict]) -> None:
    header = (f"{'benchmark':<32} {'project s':>10} {'raw s':>9} {'proj ms/step':>13} "
              f"{'raw ms/step':>12} {'ratio (proj/raw throughput)':>28}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['benchmark']:<32} {row['project_seconds']:>10.3f} {row['raw_seconds']:>9.3f} "
              f"{row['project_ms_per_step']:>13.3f} {row['raw_ms_per_step']:>12.3f} "
              f"{row['throughput_ratio']:>28.3f}")


if __name__ == "__main__":
    main()
