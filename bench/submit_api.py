"""Submit API benchmark: POST /tasks/submit (math_chain) against a bare DRF create endpoint."""
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.database import database_environment, engine, without_database_url

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK = "submit API (POST /tasks/submit, math_chain)"
REFERENCE_NAME = "bare DRF create"
SUBMIT_BODY = {"task_type": "math_chain", "description": "sum twice",
               "config": {"operation": "add", "numbers": [1, 2, 3], "iterations": 2}}
NOTE_BODY = {"text": "sum twice"}
# Two processes for two cores (with the GIL, one process per core is the CPU ceiling; more
# processes only add switching and SQLite lock contention); gthread because sync workers close
# every connection; 4 threads each so the 8 keep-alive clients never wait for a free thread
# while another waits on SQLite or Redis. Measured here, 2 sync workers and 4 x 2 threads gave
# a third of the reference's requests/s of 2 x 4.
GUNICORN_WORKERS = 2
GUNICORN_THREADS = 4
# Measured in alternating slices of this length, so load from elsewhere on the machine hits
# both endpoints alike.
SLICE_SECONDS = 2.0
# Goals relative to the reference measured beside it: at least 0.8x its requests/s, and a
# p95 latency at most 1.25x its p95.
RATIO_GOAL = 0.8
P95_RATIO_GOAL = 1.25


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    body: bytes


SUBMIT = Endpoint("project", "/tasks/submit", json.dumps(SUBMIT_BODY).encode())
NOTE = Endpoint("reference", "/bench/notes", json.dumps(NOTE_BODY).encode())


@dataclass
class Sample:
    """Latencies (seconds) of the successful requests, errors, and the wall time they took."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    first_error: str = ""

    def add(self, other: "Sample") -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.seconds += other.seconds
        self.first_error = self.first_error or other.first_error


# --- The server: Redis, a migrated SQLite database, a token and gunicorn ------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def _environment(workdir: Path, redis_port: int) -> dict[str, str]:
    import os

    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    return {
        **without_database_url(os.environ), **database_environment(workdir),
        "DJANGO_SETTINGS_MODULE": "bench.settings", "TASK_CHAIN_VAR_DIR": str(workdir),
        "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "DJANGO_DEBUG": "0",
        "DJANGO_LOG_LEVEL": "WARNING", "CHAINS_API_RATE_USER": "1000000/min",
        # No worker runs here, so every submitted run stays open: no per-user cap on them.
        "CHAINS_MAX_ACTIVE_RUNS_PER_USER": "0",
        "PYTHONPATH": str(ROOT),
    }


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stderr[-2000:]}")
    return done.stdout


TOKEN_SCRIPT = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
user = get_user_model().objects.create_user("bench")
print(Token.objects.create(user=user).key)
"""

COUNT_SCRIPT = """
import json
from chains.models import Run
from bench.reference.models import Note
print(json.dumps({"runs": Run.objects.count(),
                  "published": Run.objects.filter(published_at__isnull=False).count(),
                  "notes": Note.objects.count()}))
"""


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Server:
    port: int
    token: str
    env: dict[str, str]

    def counts(self) -> dict[str, int]:
        """Rows written so far: runs, runs whose canvas reached the broker, notes."""
        return json.loads(_manage(self.env, "shell", "-c", COUNT_SCRIPT).strip().splitlines()[-1])


def _gunicorn_command(port: int, workdir: Path, workers: int, threads: int) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "config.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        "--worker-class", "gthread" if threads > 1 else "sync", "--threads", str(threads),
        "--keep-alive", "120", "--timeout", "60", "--log-level", "warning",
        "--error-logfile", str(workdir / "gunicorn.log"), "--worker-tmp-dir", str(workdir),
    ]


@contextmanager
def running_server(*, workers: int = GUNICORN_WORKERS, threads: int = GUNICORN_THREADS):
    """Redis, a fresh database with a user and token, and gunicorn; no Celery worker, so the
    cores go to the server and the load generator (the submit needs the broker only)."""
    from config.embedded_redis import redis_server_command

    workdir = Path(tempfile.mkdtemp(prefix="taskchain-submit-bench-"))
    processes: list[subprocess.Popen] = []
    try:
        redis_port, port = _free_port(), _free_port()
        env = _environment(workdir, redis_port)
        (workdir / "redis").mkdir()
        processes.append(subprocess.Popen(redis_server_command(redis_port, workdir / "redis"),
                                          stdout=subprocess.DEVNULL))
        _wait_port(redis_port, processes[-1])
        _manage(env, "migrate", "--noinput", "-v0")
        token = _manage(env, "shell", "-c", TOKEN_SCRIPT).strip().splitlines()[-1]
        processes.append(subprocess.Popen(_gunicorn_command(port, workdir, workers, threads),
                                          cwd=ROOT, env=env))
        _wait_port(port, processes[-1])
        yield Server(port=port, token=token, env=env)
    finally:
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


# --- The load generator: keep-alive connections, one thread each -------------------------


def _post(connection: http.client.HTTPConnection, endpoint: Endpoint,
          headers: dict[str, str]) -> int:
    connection.request("POST", endpoint.path, body=endpoint.body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def _client(connection: http.client.HTTPConnection, endpoint: Endpoint, token: str,
            deadline: float, sample: Sample) -> None:
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json",
               "Connection": "keep-alive"}
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            status = _post(connection, endpoint, headers)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()  # http.client reconnects on the next request
            sample.errors += 1
            sample.first_error = sample.first_error or repr(exc)
            continue
        if 200 <= status < 300:
            sample.latencies.append(time.perf_counter() - started)
        else:
            sample.errors += 1
            sample.first_error = sample.first_error or f"HTTP {status} from {endpoint.path}"


def load(connections: list[http.client.HTTPConnection], endpoint: Endpoint, token: str,
         seconds: float) -> Sample:
    """Each connection in its own thread posts to `endpoint` back to back for `seconds`."""
    samples = [Sample() for _ in connections]
    started = time.perf_counter()
    deadline = started + seconds
    threads = [threading.Thread(target=_client, args=(c, endpoint, token, deadline, s))
               for c, s in zip(connections, samples, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Sample(seconds=time.perf_counter() - started)
    for sample in samples:
        total.latencies += sample.latencies
        total.errors += sample.errors
        total.first_error = total.first_error or sample.first_error
    return total


def alternate(server: Server, *, duration: float, concurrency: int) -> dict[str, Sample]:
    """Warm both endpoints, then measure them in alternating slices (ABBA...), both over the
    same keep-alive connections so each gunicorn worker serves the same clients for both."""
    connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                   for _ in range(concurrency)]
    try:
        warmup = min(3.0, max(0.5, duration / 10))
        for endpoint in (NOTE, SUBMIT):
            load(connections, endpoint, server.token, warmup)
        rounds = max(1, round(duration / SLICE_SECONDS))
        totals = {NOTE.name: Sample(), SUBMIT.name: Sample()}
        for index in range(rounds):
            order = (NOTE, SUBMIT) if index % 2 == 0 else (SUBMIT, NOTE)
            for endpoint in order:
                totals[endpoint.name].add(load(connections, endpoint, server.token,
                                               duration / rounds))
        return totals
    finally:
        for connection in connections:
            connection.close()


# --- Rows ----------------------------------------------------------------------------------


def _percentile_ms(latencies: list[float], percent: int) -> float:
    if len(latencies) < 2:
        return round(1000 * latencies[0], 2) if latencies else float("nan")
    return round(1000 * statistics.quantiles(latencies, n=100, method="inclusive")[percent - 1], 2)


def _rate(sample: Sample) -> float:
    return round(len(sample.latencies) / sample.seconds, 1) if sample.seconds else 0.0


def rows(samples: dict[str, Sample], *, counts: dict[str, int], duration: float,
         concurrency: int, workers: int, threads: int) -> list[dict]:
    project, reference = samples[SUBMIT.name], samples[NOTE.name]
    unpublished = counts["runs"] - counts["published"]
    errors = project.errors + reference.errors + unpublished
    details = {
        "project_p50_ms": _percentile_ms(project.latencies, 50),
        "project_p95_ms": _percentile_ms(project.latencies, 95),
        "reference_p50_ms": _percentile_ms(reference.latencies, 50),
        "reference_p95_ms": _percentile_ms(reference.latencies, 95),
        "errors": errors,
        "requests": len(project.latencies) + len(reference.latencies),
        "project_requests": len(project.latencies), "project_errors": project.errors,
        "reference_requests": len(reference.latencies), "reference_errors": reference.errors,
        "runs_created": counts["runs"], "runs_unpublished": unpublished,
        "first_error": project.first_error or reference.first_error,
        "duration_s": duration, "concurrency": concurrency,
        "server": f"gunicorn {workers} workers x {threads} threads, {engine()}, Redis, "
                  "no worker",
    }
    rps_project, rps_reference = _rate(project), _rate(reference)
    ratio = round(rps_project / rps_reference, 3) if rps_reference else 0.0
    p95_project, p95_reference = details["project_p95_ms"], details["reference_p95_ms"]
    p95_ratio = round(p95_project / p95_reference, 3) if p95_reference else 0.0
    return [
        {"benchmark": BENCHMARK, "metric": "requests/s", "project": rps_project,
         "reference": rps_reference, "reference_name": REFERENCE_NAME, "ratio": ratio,
         "goal": f">= {RATIO_GOAL}x", "met": errors == 0 and ratio >= RATIO_GOAL,
         "details": details},
        {"benchmark": BENCHMARK, "metric": "p95 ms", "project": p95_project,
         "reference": p95_reference, "reference_name": REFERENCE_NAME,
         "ratio": p95_ratio, "goal": f"<= {P95_RATIO_GOAL:g}x",
         "met": errors == 0 and bool(p95_reference) and p95_ratio <= P95_RATIO_GOAL,
         "details": details},
    ]


def measure(*, duration: float = 20, concurrency: int = 8, workers: int = GUNICORN_WORKERS,
            threads: int = GUNICORN_THREADS) -> list[dict]:
    """Both endpoints in one gunicorn server, `duration` seconds each at `concurrency`."""
    with running_server(workers=workers, threads=threads) as server:
        samples = alternate(server, duration=duration, concurrency=concurrency)
        counts = server.counts()
    return rows(samples, counts=counts, duration=duration, concurrency=concurrency,
                workers=workers, threads=threads)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=20, help="seconds per endpoint")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=GUNICORN_WORKERS)
    parser.add_argument("--threads", type=int, default=GUNICORN_THREADS,
                        help="threads per gunicorn worker; 1 means sync workers")
    args = parser.parse_args()
    print(json.dumps(measure(duration=args.duration, concurrency=args.concurrency,
                             workers=args.workers, threads=args.threads), indent=2))


if __name__ == "__main__":
    main()
