"""The CSV steps data.analyze, data.clean and data.transform against their pandas
equivalents: time at two sizes (and how it grows from one to the other) and peak memory.

    python -m bench.data_analyze [--quick]

Each sample runs in its own fresh subprocess, so its peak RSS is its own; the project and pandas
samples alternate. Prints the rows as JSON.
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
TIME_GOAL = 1.0
FLAT_TOLERANCE_MB = 5.0
REL_TOL = 1e-12
# How many output rows of clean and transform are read back and compared with pandas' output.
COMPARED_ROWS = 2_000
NUMERIC_COLUMNS = ("id", "price", "quantity", "score")
HEADER = (*NUMERIC_COLUMNS, "label")
LABELS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
STATS = ("count", "mean", "min", "max", "std")
STEPS = ("analyze", "clean", "transform")
REFERENCE_NAMES = {
    "analyze": "pandas read_csv().describe()",
    # clean also strips cells and escapes formulas, which pandas does not do; the generated
    # cells have no surrounding blanks and no formulas, so the outputs match.
    "clean": "pandas read_csv().dropna(how='all').drop_duplicates().to_csv()",
    "transform": "pandas read_csv(), (x - min) / (max - min) on the numeric columns, to_csv()",
}


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


def _project_runner(step: str, filename: str):
    import django

    django.setup()
    # pyarrow imports pandas, when it is installed, the first time it converts Python objects:
    # imported here, before timing, as on the pandas side (a worker has no pandas: it is in the
    # bench extra only).
    import pandas  # noqa: F401

    from chains.steps import STEP_TYPES, arrow_csv  # noqa: F401 (imported before timing)
    from chains.steps.context import StepContext

    def run() -> dict:
        context = StepContext(f"bench-{os.getpid()}", 0)
        result = STEP_TYPES[f"data.{step}"].execute({"path": filename}, None, context)
        if step == "analyze":
            return {"rows": result["rows"],
                    "columns": {name: {key: column[key] for key in STATS}
                                for name, column in result["columns"].items()}}
        out = context.data_dir / result["file"]
        return {"rows": result["rows"], "out": str(out)}

    return run


def _pandas_runner(step: str, path: Path):
    import pandas as pd

    def analyze() -> dict:
        described = pd.read_csv(path).describe()
        columns = {str(name): {"count": int(described[name]["count"]),
                               **{key: float(described[name][key]) for key in STATS[1:]}}
                   for name in described.columns}
        return {"rows": None, "columns": columns}

    def clean() -> dict:
        frame = pd.read_csv(path).dropna(how="all").drop_duplicates()
        out = path.parent / f"pandas-clean-{os.getpid()}.csv"
        frame.to_csv(out, index=False)
        return {"rows": len(frame), "out": str(out)}

    def transform() -> dict:
        frame = pd.read_csv(path)
        numeric = frame.select_dtypes("number")
        low, high = numeric.min(), numeric.max()
        # A constant column becomes 0, as in data.transform.
        frame[numeric.columns] = (numeric - low) / (high - low).where(high > low, 1.0)
        out = path.parent / f"pandas-transform-{os.getpid()}.csv"
        frame.to_csv(out, index=False)
        return {"rows": len(frame), "out": str(out)}

    return {"analyze": analyze, "clean": clean, "transform": transform}[step]


def _head(out: str) -> list[list[str]]:
    """The first COMPARED_ROWS rows of an output file (the file is removed)."""
    import csv
    from itertools import islice

    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(islice(csv.reader(handle), COMPARED_ROWS + 1))
    os.unlink(out)
    return rows


def child(side: str, step: str, path: Path) -> dict:
    """Set up one side, then time its work and take its peak RSS."""
    run = _project_runner(step, path.name) if side == "project" else _pandas_runner(step, path)
    baseline_mb = _current_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    answer = run()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak_mb = _peak_mb()
    if "out" in answer:
        answer["head"] = _head(answer.pop("out"))
    # Counters lag a little: a peak within noise of the baseline reads as slightly below it.
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mb": peak_mb,
            "baseline_mb": baseline_mb, "work_mb": max(0.0, peak_mb - baseline_mb),
            "answer": answer}


# --- the parent -----------------------------------------------------------------------------


def _spawn(side: str, step: str, path: Path) -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings",
           "TASK_CHAIN_VAR_DIR": str(path.parent / "var"), "CHAINS_DATA_DIR": str(path.parent),
           "CHAINS_MAX_FILE_BYTES": str(max(path.stat().st_size, 100 * 2**20)),
           "DJANGO_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-m", "bench.data_analyze", "--child", side,
                           "--step", step, "--path", str(path)], cwd=ROOT, env=env,
                          capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the {side} child failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def _max_relative_difference(project: dict, reference: dict) -> float:
    """analyze: the largest relative difference over every statistic of every numeric column;
    infinite when the columns differ or a statistic is missing."""
    if set(project["columns"]) != set(reference["columns"]):
        return math.inf
    worst = 0.0
    for name, ours in project["columns"].items():
        for key in STATS:
            a, b = ours[key], reference["columns"][name][key]
            if a is None or b is None:
                return math.inf
            worst = max(worst, _relative(a, b))
    return worst


def _max_cell_difference(project: dict, reference: dict) -> float:
    """clean and transform: the largest relative difference between the numbers of the first
    rows of both outputs; infinite when a text cell, a blank or the shape differs."""
    if len(project["head"]) != len(reference["head"]):
        return math.inf
    worst = 0.0
    for ours, theirs in zip(project["head"], reference["head"], strict=True):
        if len(ours) != len(theirs):
            return math.inf
        for a, b in zip(ours, theirs, strict=True):
            try:
                worst = max(worst, _relative(float(a), float(b)))
            except ValueError:  # text, or a blank on either side
                if a != b:
                    return math.inf
    return worst


def _summary(samples: list[dict]) -> dict:
    return {key: round(statistics.median(sample[key] for sample in samples), 4)
            for key in ("seconds", "cpu_seconds", "work_mb", "peak_mb", "baseline_mb")}


def _measure(step: str, path: Path, rows: int, repeat: int) -> dict:
    samples: dict[str, list[dict]] = {"project": [], "pandas": []}
    for attempt in range(repeat):
        # Alternate which side runs first, so neither always follows the other.
        for side in ("project", "pandas") if attempt % 2 == 0 else ("pandas", "project"):
            samples[side].append(_spawn(side, step, path))
            print(f"{step} {rows} rows, {side}: {samples[side][-1]['seconds']:.3f}s "
                  f"{samples[side][-1]['work_mb']:.1f} MB over baseline", file=sys.stderr)
    project, pandas = samples["project"][0]["answer"], samples["pandas"][0]["answer"]
    if step == "analyze":
        difference = _max_relative_difference(project, pandas)
        rows_agree = project["rows"] == rows
    else:
        difference = _max_cell_difference(project, pandas)
        rows_agree = project["rows"] == pandas["rows"] == rows
    return {
        "rows": rows, "file_bytes": path.stat().st_size,
        "project": _summary(samples["project"]), "pandas": _summary(samples["pandas"]),
        "project_seconds_all": [round(s["seconds"], 4) for s in samples["project"]],
        "pandas_seconds_all": [round(s["seconds"], 4) for s in samples["pandas"]],
        "project_work_mb_all": [round(s["work_mb"], 2) for s in samples["project"]],
        "pandas_work_mb_all": [round(s["work_mb"], 2) for s in samples["pandas"]],
        # Process CPU time, less disturbed than wall time by other work on the machine.
        "cpu_ratio": round(statistics.median(s["cpu_seconds"] for s in samples["project"])
                           / statistics.median(s["cpu_seconds"] for s in samples["pandas"]), 3),
        "rows_counted": project["rows"],
        "max_relative_difference": difference,
        "agree": difference <= REL_TOL and rows_agree,
    }


def _rows_for(step: str, small: dict, large: dict, repeat: int) -> list[dict]:
    """A time row at the larger size (with the growth from the smaller one) and a memory row."""
    agree = small["agree"] and large["agree"]
    seconds, reference = large["project"]["seconds"], large["pandas"]["seconds"]
    growth = {side: round(large[side]["seconds"] / small[side]["seconds"], 2)
              for side in ("project", "pandas")}
    details = {"repeat": repeat, "agree_with_pandas": agree, "rel_tol": REL_TOL,
               # Time at the larger size over time at the smaller (10x the rows): linear is 10.
               "growth_ratio": growth, "sizes": [small, large]}
    memory_growth = large["project"]["work_mb"] - small["project"]["work_mb"]
    name = REFERENCE_NAMES[step]
    return [
        {"benchmark": f"data.{step} on {large['rows']:,}-row CSV vs pandas",
         "metric": "seconds", "project": seconds,
         "reference": reference, "reference_name": name,
         "ratio": round(seconds / reference, 3), "goal": f"<= {TIME_GOAL}x",
         "met": agree and seconds / reference <= TIME_GOAL, "details": details},
        {"benchmark": f"data.{step} memory vs file size, and vs pandas",
         "metric": "peak MB over baseline", "project": large["project"]["work_mb"],
         "reference": large["pandas"]["work_mb"], "reference_name": name,
         "ratio": round(large["project"]["work_mb"] / max(large["pandas"]["work_mb"], 0.01), 3),
         "goal": "flat in file size", "met": agree and memory_growth <= FLAT_TOLERANCE_MB,
         "details": {"project_growth_mb": round(memory_growth, 2),
                     "tolerance_mb": FLAT_TOLERANCE_MB,
                     **{f"{side}_{key}_mb": {size["rows"]: size[side][f"{key}_mb"]
                                            for size in (small, large)}
                        for side in ("project", "pandas") for key in ("work", "peak")}}},
    ]


def measure(*, quick: bool = False, steps: tuple[str, ...] = STEPS) -> list[dict]:
    """Two rows per step: time at 1,000,000 rows (with the growth from 100,000), and working
    memory at both sizes. Quick: a smoke run with one repeat at a tenth of the sizes."""
    repeat = 1 if quick else REPEAT
    sizes = (QUICK_SMALL_ROWS, QUICK_ROWS) if quick else (SMALL_ROWS, ROWS)
    directory = Path(tempfile.mkdtemp(prefix="taskchain-bench-data-"))
    results: dict[str, list[dict]] = {step: [] for step in steps}
    try:
        for rows in sizes:
            path = directory / f"bench-{rows}.csv"
            generate(path, rows)
            for step in steps:
                results[step].append(_measure(step, path, rows, repeat))
            path.unlink()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return [row for step in steps for row in _rows_for(step, *results[step], repeat)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per side and size")
    parser.add_argument("--child", choices=("project", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", default=",".join(STEPS),
                        help="which steps to measure (default: all)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.step, args.path)))
        return
    steps = tuple(step for step in args.steps.split(",") if step)
    print(json.dumps(measure(quick=args.quick, steps=steps), indent=2))


if __name__ == "__main__":
    main()
