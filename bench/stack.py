"""The processes a benchmark measures against: Redis, a migrated SQLite database in a fresh
directory, and 2-process prefork workers, all children of the bench process."""
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.database import database_environment, without_database_url

ROOT = Path(__file__).resolve().parent.parent
WORKER = ["--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING",
          "--without-mingle", "--without-gossip"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_environment(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of every bench process: its own var dir (so its own SQLite file and
    data dir), its own Redis, debug off."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    return {**without_database_url(os.environ), **database_environment(workdir),
            "TASK_CHAIN_VAR_DIR": str(workdir), "REDIS_URL": url,
            "CELERY_BROKER_URL": url, "DJANGO_DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "config.settings", "CHAINS_MAX_STEPS": "2000",
            "DJANGO_LOG_LEVEL": "WARNING", **extra}


class Stack:
    """Redis and a migrated database; workers are added with `start_worker`."""

    def __init__(self, *, prefix: str = "taskchain-bench-") -> None:
        from config.embedded_redis import redis_server_command

        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        self.env = bench_environment(self.workdir)
        port = int(self.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        (self.workdir / "redis").mkdir()
        self.processes: list[subprocess.Popen] = [subprocess.Popen(
            redis_server_command(port, self.workdir / "redis"), stdout=subprocess.DEVNULL)]
        self.logs = []
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT,
                       env=self.env, check=True)

    def activate(self) -> None:
        """Point this process at the stack and set Django up (once per process)."""
        os.environ.update(self.env)
        import django

        django.setup()

    def start_worker(self, app: str, queues: str, *, include: str = "") -> None:
        log = (self.workdir / f"worker-{len(self.logs)}.log").open("wb")
        self.logs.append(log)
        extra = ["--include", include] if include else []
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, "worker", "--queues", queues,
             "--hostname", f"bench{len(self.logs)}@%h", *WORKER, *extra],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    @staticmethod
    def wait_ready(app, workers: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(app.control.ping(timeout=0.5)) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the bench workers did not start")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for log in self.logs:
            log.close()


def start_redis(workdir: Path, **env: str) -> tuple[subprocess.Popen, int]:
    """A Redis of a benchmark's own (nothing kept on disk) that this process's Django and
    Celery then use (REDIS_URL, CELERY_BROKER_URL, and `env`), once it answers; its process
    and port."""
    import redis

    from config.embedded_redis import redis_server_command

    port = free_port()
    (workdir / "redis").mkdir()
    server = subprocess.Popen(redis_server_command(port, workdir / "redis", persist=False),
                              stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    os.environ.update({"REDIS_URL": url, "CELERY_BROKER_URL": url, **env})
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            return server, port
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                server.terminate()
                raise
            time.sleep(0.05)
