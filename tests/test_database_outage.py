"""PostgreSQL stopped and started again under a running system: the API answers 503 while the
database is away, and every run finishes once it is back. The test starts its own PostgreSQL
server (in a temporary directory, on a free port), web process, worker and beat."""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.services import CeleryBeat, CeleryWorker, free_port, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = [
    pytest.mark.fault,
    pytest.mark.skipif(not PG_BIN or os.geteuid() != 0 or shutil.which("runuser") is None,
                       reason="needs PostgreSQL server binaries and root (to run them as "
                              "the postgres user)"),
]


class PrivatePostgres:
    """A throwaway PostgreSQL cluster owned by the postgres user."""

    def __init__(self) -> None:
        self.bin = Path(PG_BIN[-1])
        self.dir = Path(tempfile.mkdtemp(prefix="taskchain-pg-"))
        shutil.chown(self.dir, "postgres")
        self.port = free_port()
        self._as_postgres(self.bin / "initdb", "-D", self.dir / "data", "-A", "trust",
                          "-U", "postgres", "--no-sync")

    def _as_postgres(self, *args) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        self._as_postgres(self.bin / "pg_ctl", "-D", self.dir / "data", "-l",
                          self.dir / "log", "-w", "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")
        wait_for_port(self.port)

    def stop(self) -> None:
        self._as_postgres(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w",
                          "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"


def call(url: str, token: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def test_postgres_restart_mid_run(tmp_path, embedded_redis):
    postgres = PrivatePostgres()
    processes = []
    try:
        postgres.start()
        env = {
            **os.environ, "DATABASE_URL": postgres.url,
            "REDIS_URL": embedded_redis.url.rsplit("/", 1)[0] + "/3",  # queues of its own
            "CHAINS_DATA_DIR": str(tmp_path / "data"), "TASK_CHAIN_VAR_DIR": str(tmp_path),
            "CHAINS_STALL_SECONDS": "6", "CHAINS_RECONCILE_EVERY": "2",
            "CHAINS_PUBLISH_GRACE_SECONDS": "2", "CHAINS_VISIBILITY_TIMEOUT": "20",
        }
        env["CELERY_BROKER_URL"] = env["REDIS_URL"]
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
        admin = subprocess.run([*manage, "ensure_admin"], cwd=ROOT, env=env, check=True,
                               capture_output=True, text=True, timeout=60).stdout
        token = admin.split("API token: ")[1].split()[0]
        web_port = free_port()
        web_log = (tmp_path / "web.log").open("wb")
        web = subprocess.Popen([*manage, "runserver", f"127.0.0.1:{web_port}", "--noreload"],
                               cwd=ROOT, env=env, stdout=web_log, stderr=subprocess.STDOUT)
        processes.append(web)
        worker = CeleryWorker(env=env, log_path=tmp_path / "worker.log")
        beat = CeleryBeat(env=env, log_path=tmp_path / "beat.log")
        processes += [worker, beat]
        wait_for_port(web_port, timeout=30)
        worker.wait_ready()
        base = f"http://127.0.0.1:{web_port}"

        status, chain = call(f"{base}/api/chains/", token, "POST", {"name": "slow", "steps": [
            {"step_type": "flow.wait", "params": {"seconds": 3}, "stage": 0, "time_limit": 5},
            {"step_type": "math.add", "params": {"numbers": [1]}, "stage": 1, "time_limit": 5},
            {"step_type": "flow.wait", "params": {"seconds": 1}, "stage": 2, "time_limit": 5},
            {"step_type": "math.add", "params": {"numbers": [1]}, "stage": 3, "time_limit": 5},
        ]})
        assert status == 201, chain
        run_ids = []
        for n in range(3):
            status, run = call(f"{base}/api/chains/{chain['id']}/run/", token, "POST",
                               {"inputs": n})
            assert status == 201, run
            run_ids.append(run["id"])
        deadline = time.monotonic() + 30
        while call(f"{base}/tasks/{run_ids[-1]}/status", token)[1]["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.1)

        postgres.stop()
        status, body = call(f"{base}/tasks/statistics", token)
        assert status == 503, body
        assert "database is unavailable" in body.lower()
        time.sleep(8)
        postgres.start()

        deadline = time.monotonic() + 120
        for n, run_id in enumerate(run_ids):
            while True:
                status, body = call(f"{base}/tasks/{run_id}/status", token)
                if status == 200 and body["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
                assert time.monotonic() < deadline, (run_id, status, body)
                time.sleep(0.5)
            assert (body["status"], body["result"]) == ("COMPLETED", n + 2), body
        assert "Traceback" not in (tmp_path / "web.log").read_text(errors="replace")
    finally:
        for process in reversed(processes):
            if isinstance(process, subprocess.Popen):
                stop(process)
            else:
                process.stop()
        postgres.destroy()
