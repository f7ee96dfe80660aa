"""Recovery: 16 runs of 4 steps in flight when their worker is SIGKILLed; seconds from a new
worker being ready until the last run completed. The project (shipped settings: 600 s
visibility timeout, heartbeats, reconciler every 10 s) against a plain Celery chain whose
only way back is the broker's visibility timeout, set ten times shorter (60 s).

    python -m bench.recovery    # prints the rows as JSON
"""
import json
import os
import signal
import subprocess
import sys
import time

from bench.stack import ROOT, Stack

RUNS = 16


def _start(stack: Stack, args: list[str], name: str) -> subprocess.Popen:
    log = (stack.workdir / f"{name}.log").open("wb")
    stack.logs.append(log)
    process = subprocess.Popen([sys.executable, "-m", "celery", *args], cwd=ROOT, env=stack.env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.processes.append(process)
    return process


def _worker(stack: Stack, app: str, queues: str, name: str) -> subprocess.Popen:
    return _start(stack, ["-A", app, "worker", "--queues", queues, "--hostname",
                          f"{name}@%h", "--pool", "prefork", "--concurrency", "2",
                          "--loglevel", "INFO", "--without-mingle", "--without-gossip"], name)


def _wait_ready(stack: Stack, name: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while "ready." not in (stack.workdir / f"{name}.log").read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker {name} did not start")
        time.sleep(0.05)


def _kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def project(stack: Stack) -> float:
    from chains import services
    from chains.models import Run, RunStatus, StepRun
    from chains.presets import Preset, StepSpec

    first = _worker(stack, "config", "celery,math,data,io", "project-first")
    _wait_ready(stack, "project-first")
    specs = [StepSpec("flow.wait", {"seconds": 1}, 0), StepSpec("math.add", {"numbers": [1]}, 1),
             StepSpec("flow.wait", {"seconds": 1}, 2), StepSpec("math.add", {"numbers": [1]}, 3)]
    ids = [services.run_create(preset=Preset(specs=specs, inputs=0), trigger="command").id
           for _ in range(RUNS)]
    while not StepRun.objects.filter(status=RunStatus.RUNNING).exists():
        time.sleep(0.05)
    _kill(first)
    _worker(stack, "config", "celery,math,data,io", "project-second")
    _wait_ready(stack, "project-second")
    back = time.monotonic()
    while Run.objects.filter(id__in=ids, status__in=["PENDING", "RUNNING"]).exists():
        if time.monotonic() - back > 900:
            raise RuntimeError("project runs unfinished after 900 s")
        time.sleep(0.1)
    seconds = time.monotonic() - back
    results = set(Run.objects.filter(id__in=ids).values_list("status", "result"))
    if results != {(RunStatus.COMPLETED, 2)}:
        raise RuntimeError(f"project runs ended {results}")
    return seconds


def raw(stack: Stack) -> float:
    from celery import chain

    from bench import raw_recovery as r

    first = _worker(stack, "bench.raw_recovery", r.QUEUE, "raw-first")
    _wait_ready(stack, "raw-first")
    results = [chain(r.wait.s(0, seconds=1), r.add.s(number=1), r.wait.s(seconds=1),
                     r.add.s(number=1)).apply_async() for _ in range(RUNS)]
    time.sleep(0.5)  # the first steps are running
    _kill(first)
    _worker(stack, "bench.raw_recovery", r.QUEUE, "raw-second")
    _wait_ready(stack, "raw-second")
    back = time.monotonic()
    for result in results:
        if result.get(timeout=900, interval=0.1) != 2:
            raise RuntimeError("a raw chain gave a wrong result")
    return time.monotonic() - back


def run_all() -> list[dict]:
    stack = Stack(prefix="taskchain-bench-recovery-")
    try:
        stack.activate()
        _start(stack, ["-A", "config", "beat", "--loglevel", "INFO", "--schedule",
                       str(stack.workdir / "beat-schedule")], "beat")
        project_seconds = project(stack)
        raw_seconds = raw(stack)
    finally:
        for process in stack.processes[1:]:  # workers and beat in their own process groups
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        stack.stop()
    return [{
        "benchmark": f"recovery, {RUNS} runs in flight, worker SIGKILLed", "metric": "seconds",
        "project": round(project_seconds, 3), "reference": round(raw_seconds, 3),
        "reference_name": "raw Celery chain, visibility timeout 60 s (shipped: 600 s)",
        "ratio": round(project_seconds / raw_seconds, 3), "goal": "<= 60 s",
        "met": project_seconds <= 60,
        "details": {"project_visibility_timeout": 600, "raw_visibility_timeout": 60},
    }]


def measure() -> list[dict]:
    """Runs the benchmark in a fresh process (Django is set up once per process)."""
    output = subprocess.run([sys.executable, "-m", "bench.recovery"], cwd=ROOT, check=True,
                            capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(run_all()))
