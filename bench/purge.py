"""Benchmark 6: `manage.py purge_runs` over 100,000 runs, wall time and peak memory."""
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import child
from bench.dataset import bench_environment, migrate

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 10.0
# Flat memory: the peak at the full size within this much of the peak at a tenth of it.
FLAT_TOLERANCE = 0.15
RUN_FILES = 100
TABLES = ("chains_run", "chains_steprun", "django_celery_results_taskresult")


def measure(*, quick: bool = False) -> list[dict]:
    """Run the benchmark in a child process (it builds its own databases)."""
    return child.measure_in_child("bench.purge", quick=quick)


# --- In the worker process ---------------------------------------------------------------------


def _filled(workdir: Path, runs: int) -> dict[str, str]:
    """A migrated database under `workdir` with `runs` finished runs, 10 steps each."""
    env = bench_environment(workdir)
    migrate(env)
    subprocess.run([sys.executable, "-m", "bench.dataset", "--var-dir", str(workdir),
                    "--runs", str(runs), "--finished-only", "--run-files", str(RUN_FILES),
                    "--quiet"], cwd=ROOT, env=env, check=True)
    return env


def _row_counts(workdir: Path) -> dict[str, int]:
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
        before = _row_counts(workdir)
        # Start-up of the command alone: a cutoff before every run deletes nothing.
        startup, _, _, _ = _run_command(["purge_runs", "--older-than", "100000"], env)
        seconds, peak_mb, cpu, output = _run_command(["purge_runs", "--older-than", "0"], env)
        after = _row_counts(workdir)
        files_left = len(list((workdir / "data" / "runs").glob("*")))
        if any(after.values()) or files_left or output != f"deleted {runs} run(s)":
            raise RuntimeError(f"purge left {after}, {files_left} folders: {output!r}")
        return {"seconds": seconds, "peak_rss_mb": peak_mb, "cpu_s": cpu, "startup_s": startup,
                "rows_before": before}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def worker(*, quick: bool) -> list[dict]:
    full, small = (10_000, 1_000) if quick else (100_000, 10_000)
    at_small = _purge(small)
    at_full = _purge(full)
    flat = at_full["peak_rss_mb"] <= at_small["peak_rss_mb"] * (1 + FLAT_TOLERANCE)
    label = f"{small // 1000}k"
    return [{
        "benchmark": f"purge_runs over {full:,} runs", "metric": "seconds",
        "project": round(at_full["seconds"], 2), "reference": None, "reference_name": "",
        "ratio": None, "goal": f"<= {GOAL_SECONDS:.0f} s, flat memory",
        "met": at_full["seconds"] <= GOAL_SECONDS and flat,
        "details": {
            "peak_rss_mb": round(at_full["peak_rss_mb"], 1),
            f"peak_rss_mb_at_{label}": round(at_small["peak_rss_mb"], 1),
            f"seconds_at_{label}": round(at_small["seconds"], 2),
            "cpu_seconds": round(at_full["cpu_s"], 2),
            "command_startup_s": round(at_full["startup_s"], 2),
            "runs_per_second": round(full / at_full["seconds"]),
            "rows_deleted": at_full["rows_before"], "run_folders_removed": RUN_FILES,
            "flat_memory": flat,
        },
    }]


if __name__ == "__main__":
    child.main(__doc__, measure=measure, worker=worker)
