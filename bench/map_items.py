"""Map: one run of two stages, a pass-through (flow.wait of 0 s) given a list of N integers,
then math.multiply by 2 with `"map": true` (one task per item, in parallel, the results in
input order), at a tenth of N and at N, against a raw Celery chord of N trivial tasks on the
Redis result backend whose body receives the list. Same Redis, each side on its own 2-process
prefork worker, taking turns; wall time, items/s, and the workers' memory at both widths.

    python -m bench.map_items [--repeat 3] [--items 10000]    # prints the rows as JSON
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.stack import ROOT, Stack

QUEUES = "celery,math,data,io"
ITEMS = 10_000
REPEAT = 2  # at 10,000 items a sample is most of a minute
TIMEOUT = 1800
# The shipped bound on a run's inputs (64 KiB) takes a list of 10,000 integers; a larger N
# gets a bound that fits its list, so the benchmark measures the map rather than the bound.
SHIPPED_MAX_INPUT_BYTES = 64 * 1024


def _inputs(items: int) -> list[int]:
    return list(range(items))


def _expected(items: int) -> list[int]:
    return [2 * item for item in range(items)]


def map_chain(items: int):
    """A chain of the two stages; saved outside the timing, as the chain benchmarks do."""
    from chains import services
    from chains.presets import StepSpec

    specs = [StepSpec("flow.wait", {"seconds": 0}, 0),
             StepSpec("math.multiply", {"numbers": [2]}, 1, map=True)]
    return services.chain_save(name=f"bench-map-{items}-{time.monotonic_ns()}", steps=specs)


def project_map(items: int) -> float:
    """Seconds from starting one run of the map chain on `items` integers until it is
    COMPLETED; its result must be each item doubled, in order."""
    from bench.chain_overhead import _wait_runs
    from chains import services
    from chains.models import Run

    chain = map_chain(items)
    inputs = _inputs(items)
    started = time.perf_counter()
    run = services.run_start(chain=chain, inputs=inputs)
    _wait_runs([run.id], timeout=TIMEOUT)
    seconds = time.perf_counter() - started
    result = Run.objects.values_list("result", flat=True).get(id=run.id)
    if result != _expected(items):
        shown = result if not isinstance(result, list) else f"a list of {len(result)}"
        raise RuntimeError("the map run's result is not the items doubled in order: "
                           f"{shown!r:.200}")
    return seconds


def raw_chord(items: int) -> float:
    """The same fan-out in plain Celery: a chord of `items` tasks, one per integer, each
    doubling it, whose body receives the list; Redis results."""
    from celery import chord, group

    from bench.raw_redis import app, double, noop

    started = time.perf_counter()
    result = chord(group(double.s(item) for item in _inputs(items)), noop.s()).apply_async()
    # Waits on the body alone (a header task's failure fails the body too): the chord's own
    # result checks every header result for an error at each message it takes from Redis,
    # N times N checks, minutes of the client's CPU at 10,000 rather than the chord's work.
    value = app.AsyncResult(result.id).get(timeout=TIMEOUT, interval=0.02, propagate=True)
    seconds = time.perf_counter() - started
    if value != _expected(items):
        raise RuntimeError("the raw chord's result is not the items doubled in order")
    return seconds


def _alternate(repeat: int, sides: dict[str, Callable[[], float]]) -> dict:
    """Median seconds of each side, the sides taking turns; every sample under `samples`."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, measure_once in sides.items():
            times[name].append(measure_once())
    medians: dict = {name: statistics.median(values) for name, values in times.items()}
    medians["samples"] = {name: [round(v, 3) for v in values] for name, values in times.items()}
    return medians


def _proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children


def worker_peak_rss_mb(pid: int) -> dict | None:
    """The peak RSS (VmHWM) of a worker's main process and of each of its pool processes,
    in MB, and their sum; None where /proc does not tell (not Linux)."""
    try:
        pids = [pid, *_children(pid)]
        peaks = {str(p): round(_proc_kb(p, "VmHWM") / 1024, 1) for p in pids}
    except OSError:
        return None
    return {"total_mb": round(sum(peaks.values()), 1), "processes": len(pids),
            "per_process_mb": peaks}


def worker_rss_mb(pid: int) -> float | None:
    """The resident memory (VmRSS) of a worker's main process and its pool processes now."""
    try:
        return round(sum(_proc_kb(p, "VmRSS") for p in [pid, *_children(pid)]) / 1024, 1)
    except OSError:
        return None


GOAL_RATIO = 1.5
# A width 10x larger may add this much to the workers' resident memory (MB) and be "flat".
FLAT_MB = 50


def run_all(repeat: int, items: int) -> list[dict]:
    """The map at a tenth of `items` and at `items`, each side taking turns at each size."""
    sizes = sorted({max(20, items // 10), items})
    size = len(json.dumps(_inputs(items)))
    stack = Stack(prefix="taskchain-bench-map-")
    if size > SHIPPED_MAX_INPUT_BYTES:
        stack.env["CHAINS_MAX_INPUT_BYTES"] = str(size)
    measured: dict[int, dict] = {}
    try:
        stack.activate()
        from bench import raw_redis
        from config.celery import app

        stack.start_worker("config", QUEUES)
        project_worker = stack.processes[-1]
        stack.start_worker("bench.raw_redis", raw_redis.QUEUE)
        raw_worker = stack.processes[-1]
        stack.wait_ready(app, workers=2)
        project_map(20)  # warm every path up
        raw_chord(20)
        for width in sizes:
            t = _alternate(repeat, {"project": partial(project_map, width),
                                    "raw": partial(raw_chord, width)})
            t["rss"] = {"project": worker_rss_mb(project_worker.pid),
                        "raw": worker_rss_mb(raw_worker.pid)}
            measured[width] = t
        peaks = {"project": worker_peak_rss_mb(project_worker.pid),
                 "raw": worker_peak_rss_mb(raw_worker.pid)}
    finally:
        stack.stop()
    reference_name = "raw Celery chord of one task per item, Redis results"
    rows = []
    for width, t in measured.items():
        ratio = t["project"] / t["raw"]
        judged = width == items
        rows.append({
            "benchmark": f"map, {width:,} items (pass-through, then x2 per item)",
            "metric": "seconds", "project": round(t["project"], 3),
            "reference": round(t["raw"], 3), "reference_name": reference_name,
            "ratio": round(ratio, 3), "goal": f"<= {GOAL_RATIO}x" if judged else "-",
            "met": ratio <= GOAL_RATIO if judged else None,
            "details": {"items": width, "repeat": repeat,
                        "project_items_per_s": round(width / t["project"], 1),
                        "raw_items_per_s": round(width / t["raw"], 1),
                        "workers_rss_mb_after": t["rss"], "samples_seconds": t["samples"]}})
    if len(sizes) == 2:
        small, large = (measured[width] for width in sizes)
        growth = {side: (large[side] / large_w) / (small[side] / small_w)
                  for side, small_w, large_w in (("project", *sizes), ("raw", *sizes))}
        rows.append({
            "benchmark": f"map: s/item at {sizes[1]:,} vs at {sizes[0]:,} (growth)",
            "metric": "ratio", "project": round(growth["project"], 3),
            "reference": round(growth["raw"], 3), "reference_name": reference_name,
            "ratio": None, "goal": "-", "met": None, "details": {}})
        rss = {side: (small["rss"][side], large["rss"][side]) for side in ("project", "raw")}
        if None not in rss["project"] and None not in rss["raw"]:
            added = {side: round(after - before, 1) for side, (before, after) in rss.items()}
            rows.append({
                "benchmark": f"map: workers' memory after {sizes[1]:,} items vs after "
                             f"{sizes[0]:,} (main + pool processes, RSS)",
                "metric": "MB added", "project": added["project"],
                "reference": added["raw"], "reference_name": reference_name, "ratio": None,
                "goal": f"flat (<= {FLAT_MB} MB)", "met": added["project"] <= FLAT_MB,
                "details": {"rss_mb": rss, "peak": peaks}})
    return rows


def measure(*, repeat: int = REPEAT, items: int = ITEMS) -> list[dict]:
    """Runs the benchmark in a fresh process (Django is set up once per process)."""
    output = subprocess.run([sys.executable, "-m", "bench.map_items", "--repeat", str(repeat),
                             "--items", str(items)], cwd=ROOT, check=True,
                            stdout=subprocess.PIPE, text=True)  # its stderr: the console's
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=REPEAT)
    parser.add_argument("--items", type=int, default=ITEMS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    print(json.dumps(run_all(args.repeat, args.items)))


if __name__ == "__main__":
    main()
