"""The data.analyze step against pandas read_csv().describe(): time and peak memory.

    python -m bench.data_analyze [--quick]

Each side runs in its own fresh subprocess, so its peak RSS is its own. Prints the rows as JSON.
"""
import argparse
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 20240607
ROWS = 1_000_000
SMALL_ROWS = 100_000
QUICK_ROWS = 100_000
QUICK_SMALL_ROWS = 10_000
REPEAT = 3
TIME_GOAL = 1.5
FLAT_TOLERANCE_MB = 5.0
REL_TOL = 1e-9
NUMERIC_COLUMNS = ("id", "price", "quantity", "score")
HEADER = (*NUMERIC_COLUMNS, "label")
LABELS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
STATS = ("count", "mean", "min", "max", "std")
REFERENCE_NAME = "pandas read_csv().describe()"


def generate(path: Path, rows: int, seed: int = SEED) -> None:
    """An int id, a price with cents, a quantity with 1% blanks, a full-precision float, text."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        handle.write(",".join(HEADER) + "\n")
        for start in range(0, rows, 10_000):
            handle.writelines(_line(rng, number) for number in
                              range(start + 1, min(rows, start + 10_000) + 1))


def _line(rng: random.Random, number: int) -> str:
    quantity = "" if rng.random() < 0.01 else str(rng.randint(0, 1000))
    return (f"{number},{rng.uniform(0.5, 500):.2f},{quantity},{rng.gauss(50, 15)!r},"
            f"{rng.choice(LABELS)}\n")


# --- the children ---------------------------------------------------------------------------


def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _current_mb() -> float:
    """Resident set size now (Linux); elsewhere the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return _peak_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _project_runner(filename: str):
    import django

    django.setup()
    from chains.steps import STEP_TYPES
    from chains.steps.context import StepContext

    def run() -> dict:
        analyze = STEP_TYPES["data.analyze"]
        result = analyze.execute({"path": filename}, None, StepContext("bench", 0))
        return {"rows": result["rows"],
                "columns": {name: {key: column[key] for key in STATS}
                            for name, column in result["columns"].items()}}

    return run


def _pandas_runner(path: Path):
    import pandas as pd

    def run() -> dict:
        described = pd.read_csv(path).describe()
        columns = {str(name): {"count": int(described[name]["count"]),
                               **{key: float(described[name][key]) for key in STATS[1:]}}
                   for name in described.columns}
        return {"rows": None, "columns": columns}

    return run


def child(side: str, path: Path) -> dict:
    """Set up one side, then time its work and take its peak RSS."""
    run = _project_runner(path.name) if side == "project" else _pandas_runner(path)
    baseline_mb = _current_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    answer = run()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak_mb = _peak_mb()
    # Counters lag a little: a peak within noise of the baseline reads as slightly below it.
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mb": peak_mb,
            "baseline_mb": baseline_mb, "work_mb": max(0.0, peak_mb - baseline_mb),
            "answer": answer}


# --- the parent -----------------------------------------------------------------------------


def _spawn(side: str, path: Path) -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings",
           "TASK_CHAIN_VAR_DIR": str(path.parent / "var"), "CHAINS_DATA_DIR": str(path.parent),
           "CHAINS_MAX_FILE_BYTES": str(max(path.stat().st_size, 100 * 2**20)),
           "DJANGO_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-m", "bench.data_analyze", "--child", side,
                           "--path", str(path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the {side} child failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def _max_relative_difference(project: dict, reference: dict) -> float:
    """The largest relative difference over every statistic of every numeric column;
    infinite when the columns differ or a statistic is missing."""
    if set(project["columns"]) != set(reference["columns"]):
        return math.inf
    worst = 0.0
    for name, ours in project["columns"].items():
        for key in STATS:
            a, b = ours[key], reference["columns"][name][key]
            if a is None or b is None:
                return math.inf
            worst = max(worst, abs(a - b) / max(abs(a), abs(b), 1e-300))
    return worst


def _summary(samples: list[dict]) -> dict:
    return {key: round(statistics.median(sample[key] for sample in samples), 4)
            for key in ("seconds", "cpu_seconds", "work_mb", "peak_mb", "baseline_mb")}


def _measure_size(directory: Path, rows: int, repeat: int) -> dict:
    path = directory / f"bench-{rows}.csv"
    generate(path, rows)
    samples: dict[str, list[dict]] = {"project": [], "pandas": []}
    for attempt in range(repeat):
        # Alternate which side runs first, so neither always follows the other.
        for side in ("project", "pandas") if attempt % 2 == 0 else ("pandas", "project"):
            samples[side].append(_spawn(side, path))
            print(f"{rows} rows, {side}: {samples[side][-1]['seconds']:.3f}s "
                  f"{samples[side][-1]['work_mb']:.1f} MB over baseline", file=sys.stderr)
    project, pandas = samples["project"][0]["answer"], samples["pandas"][0]["answer"]
    difference = _max_relative_difference(project, pandas)
    return {
        "rows": rows, "file_bytes": path.stat().st_size,
        "project": _summary(samples["project"]), "pandas": _summary(samples["pandas"]),
        "project_seconds_all": [round(s["seconds"], 4) for s in samples["project"]],
        "pandas_seconds_all": [round(s["seconds"], 4) for s in samples["pandas"]],
        # Process CPU time, less disturbed than wall time by other work on the machine.
        "cpu_ratio": round(statistics.median(s["cpu_seconds"] for s in samples["project"])
                           / statistics.median(s["cpu_seconds"] for s in samples["pandas"]), 3),
        "rows_counted": project["rows"],
        "max_relative_difference": difference,
        "agree": difference <= REL_TOL and project["rows"] == rows,
    }


def measure(*, quick: bool = False) -> list[dict]:
    """Two rows: time at 1,000,000 rows, and working memory at both sizes. Quick: a smoke
    run with one repeat at a tenth of the sizes."""
    repeat = 1 if quick else REPEAT
    sizes = (QUICK_SMALL_ROWS, QUICK_ROWS) if quick else (SMALL_ROWS, ROWS)
    directory = Path(tempfile.mkdtemp(prefix="taskchain-bench-analyze-"))
    try:
        small, large = (_measure_size(directory, rows, repeat) for rows in sizes)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    agree = small["agree"] and large["agree"]
    seconds, reference = large["project"]["seconds"], large["pandas"]["seconds"]
    details = {"repeat": repeat, "agree_with_pandas": agree, "sizes": [small, large]}
    growth = large["project"]["work_mb"] - small["project"]["work_mb"]
    return [
        {"benchmark": f"data.analyze on {sizes[1]:,}-row CSV vs pandas describe()",
         "metric": "seconds", "project": seconds,
         "reference": reference, "reference_name": REFERENCE_NAME,
         "ratio": round(seconds / reference, 3), "goal": f"<= {TIME_GOAL}x",
         "met": agree and seconds / reference <= TIME_GOAL, "details": details},
        {"benchmark": "data.analyze memory vs file size, and vs pandas describe()",
         "metric": "peak MB over baseline", "project": large["project"]["work_mb"],
         "reference": large["pandas"]["work_mb"], "reference_name": REFERENCE_NAME,
         "ratio": round(large["project"]["work_mb"] / max(large["pandas"]["work_mb"], 0.01), 3),
         "goal": "flat in file size", "met": agree and growth <= FLAT_TOLERANCE_MB,
         "details": {"project_growth_mb": round(growth, 2),
                     "tolerance_mb": FLAT_TOLERANCE_MB,
                     **{f"{side}_{key}_mb": {size["rows"]: size[side][f"{key}_mb"]
                                            for size in (small, large)}
                        for side in ("project", "pandas") for key in ("work", "peak")}}},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per side and size")
    parser.add_argument("--child", choices=("project", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.path)))
        return
    print(json.dumps(measure(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
