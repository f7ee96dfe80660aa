"""Benchmarks 1-3: chains through the project versus the same Celery canvas of plain no-op
tasks with the stock django-celery-results backend ("django-db"), once on a Celery app at
Celery's defaults and once with the project's Celery settings, on the same Redis and
database, each side on its own worker of 2 prefork processes; the 1,000-wide fan-out against
a raw chord on the Redis result backend. Project and raw runs take turns, so both see
the same machine.

    python -m bench.chain_overhead [--repeat 3]    # prints the rows as JSON
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

from bench.stack import ROOT, Stack

QUEUES = "celery,math,data,io"
DEFAULTS_NAME = "raw Celery at its defaults (django-db results)"
SAME_SETTINGS_NAME = "raw Celery with the project's settings (django-db results)"
FAN_OUT = 1000


def _wait_runs(run_ids, timeout: float = 600) -> None:
    from chains.models import Run

    deadline = time.monotonic() + timeout
    pending = set(run_ids)
    while pending:
        rows = dict(Run.objects.filter(id__in=pending, status__in=[
            "COMPLETED", "FAILED", "CANCELLED"]).values_list("id", "status"))
        failed = [status for status in rows.values() if status != "COMPLETED"]
        if failed:
            raise RuntimeError(f"{len(failed)} bench run(s) did not complete: {failed}")
        pending -= set(rows)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} bench runs unfinished after {timeout}s")
        time.sleep(0.02)


def project_chains(runs: int, steps: int, *, parallel: int = 0) -> float:
    """Seconds to start and finish `runs` runs of a no-op chain (flow.wait of 0 s), or of
    one run with a `parallel`-wide stage followed by one step."""
    from chains import services
    from chains.presets import StepSpec

    if parallel:
        specs = [StepSpec("flow.wait", {"seconds": 0}, 0) for _ in range(parallel)]
        specs.append(StepSpec("flow.wait", {"seconds": 0}, 1))
    else:
        specs = [StepSpec("flow.wait", {"seconds": 0}, i) for i in range(steps)]
    chain = services.chain_save(name=f"bench-{steps}-{parallel}-{time.monotonic_ns()}",
                                steps=specs)
    started = time.perf_counter()
    ids = [services.run_start(chain=chain, inputs=0).id for _ in range(runs)]
    _wait_runs(ids)
    return time.perf_counter() - started


def raw_chains(runs: int, steps: int, *, parallel: int = 0, noop=None) -> float:
    """The same canvas in plain Celery: chains (or a chord) of no-op tasks."""
    from celery import chain, chord, group

    if noop is None:
        from bench.raw_db import noop
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


def raw_defaults_chains(runs: int, steps: int) -> float:
    """The same chains on a plain Celery app at Celery's defaults (bench.raw_defaults)."""
    from bench.raw_defaults import noop

    return raw_chains(runs, steps, noop=noop)


def raw_redis_chord(runs: int, steps: int, *, parallel: int) -> float:
    from bench.raw_redis import noop

    return raw_chains(runs, steps, parallel=parallel, noop=noop)


def _alternate(repeat: int, sides: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Median seconds of each side, the sides taking turns; every sample is kept under
    `samples` (the spread tells how quiet the machine was)."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, measure_once in sides.items():
            times[name].append(measure_once())
    medians = {name: statistics.median(values) for name, values in times.items()}
    medians["samples"] = {name: [round(v, 3) for v in values] for name, values in times.items()}
    return medians


def _row(benchmark: str, metric: str, project: float, reference: float, reference_name: str,
         goal: str, met: bool, **details) -> dict:
    return {"benchmark": benchmark, "metric": metric, "project": round(project, 3),
            "reference": round(reference, 3), "reference_name": reference_name,
            "ratio": round(project / reference, 3), "goal": goal, "met": met,
            "details": details}


def run_all(repeat: int) -> list[dict]:
    stack = Stack()
    try:
        stack.activate()
        from bench import raw_db, raw_defaults, raw_redis
        from config.celery import app

        stack.start_worker("config", QUEUES)
        stack.start_worker("bench.raw_db", raw_db.QUEUE)
        stack.start_worker("bench.raw_redis", raw_redis.QUEUE)
        stack.start_worker("bench.raw_defaults", raw_defaults.QUEUE)
        stack.wait_ready(app, workers=4)
        project_chains(2, 3)  # warm every path up
        raw_chains(2, 3)
        raw_defaults_chains(2, 3)
        raw_redis_chord(1, 3, parallel=2)
        rows = []
        per_step = {}
        for label, runs, steps in (("10 steps x 50 runs", 50, 10), ("50 steps x 10 runs", 10, 50)):
            t = _alternate(repeat, {"project": partial(project_chains, runs, steps),
                                    "defaults": partial(raw_defaults_chains, runs, steps),
                                    "raw": partial(raw_chains, runs, steps)})
            total = runs * steps
            per_step[steps] = {side: 1000 * t[side] / total
                               for side in ("project", "defaults", "raw")}
            details = {"project_seconds": round(t["project"], 3),
                       "raw_defaults_seconds": round(t["defaults"], 3),
                       "raw_same_settings_seconds": round(t["raw"], 3),
                       "samples_seconds": t["samples"]}
            for side, name, short in (("defaults", DEFAULTS_NAME, "Celery's defaults"),
                                      ("raw", SAME_SETTINGS_NAME, "the project's settings")):
                ratio = t[side] / t["project"]  # project steps/s over the reference's
                rows.append(_row(f"chain throughput, {label}, vs {short}", "steps/s",
                                 total / t["project"], total / t[side], name, ">= 1.0x",
                                 ratio >= 1.0, **details))
                rows[-1]["ratio"] = round(ratio, 3)
        growth = {side: per_step[50][side] / per_step[10][side] for side in per_step[10]}
        rows.append(_row("chain throughput, ms/step at 50 vs at 10 (growth)", "ratio",
                         growth["project"], growth["defaults"], DEFAULTS_NAME + ", same ratio",
                         "<= 1.15", growth["project"] <= 1.15,
                         ms_per_step={steps: {side: round(v, 3) for side, v in sides.items()}
                                      for steps, sides in per_step.items()}))
        rows[-1]["ratio"] = None  # the figures are ratios already
        t = _alternate(repeat, {"project": partial(project_chains, 1, 100),
                                "defaults": partial(raw_defaults_chains, 1, 100),
                                "raw": partial(raw_chains, 1, 100)})
        rows.append(_row("sequential latency, 100-step chain", "ms/step", 10 * t["project"],
                         10 * t["defaults"], DEFAULTS_NAME, "<= 1.0x",
                         t["project"] / t["defaults"] <= 1.0,
                         raw_same_settings_ms_per_step=round(10 * t["raw"], 3),
                         samples_seconds=t["samples"]))
        t = _alternate(repeat, {
            "project": partial(project_chains, 1, FAN_OUT + 1, parallel=FAN_OUT),
            "raw_redis": partial(raw_redis_chord, 1, FAN_OUT + 1, parallel=FAN_OUT),
            "raw_db": partial(raw_chains, 1, FAN_OUT + 1, parallel=FAN_OUT)})
        rows.append(_row(f"fan-out, {FAN_OUT:,} parallel + 1", "seconds", t["project"],
                         t["raw_redis"], "raw Celery chord, Redis results", "<= 1.0x",
                         t["project"] / t["raw_redis"] <= 1.0,
                         raw_django_db_chord_seconds=round(t["raw_db"], 3),
                         samples_seconds=t["samples"]))
        return rows
    finally:
        stack.stop()


def measure(*, repeat: int = 3) -> list[dict]:
    """Runs the benchmarks in a fresh process (Django is set up once per process)."""
    output = subprocess.run([sys.executable, "-m", "bench.chain_overhead", "--repeat",
                             str(repeat)], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(output.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    print(json.dumps(run_all(args.repeat)))


if __name__ == "__main__":
    main()
