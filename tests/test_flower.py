"""Flower, started against the project's workers, lists a run's step tasks by their registry
names (with the workers' task events on)."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from chains import services
from chains.models import StepRun
from tests.helpers import wait_for_run
from tests.services import ROOT, free_port, stop, wait_for_port, worker_env

pytest.importorskip("flower")
pytestmark = [pytest.mark.flow, pytest.mark.django_db(transaction=True)]


def test_flower_lists_step_tasks_by_registry_name(start_worker, tmp_path):
    port = free_port()
    log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "flower", f"--port={port}",
         "--address=127.0.0.1"],
        cwd=ROOT, env={**os.environ, **worker_env(), "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=30)
        start_worker(CHAINS_WORKER_EVENTS="1")  # at once, not at Flower's next enable_events
        run = services.run_submit_task(task_type="math_chain", config={
            "operation": "multiply", "numbers": [2, 3], "iterations": 2})
        assert wait_for_run(run.id).status == "COMPLETED"
        task_ids = set(StepRun.objects.filter(run=run).values_list("task_id", flat=True))
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tasks", timeout=10) as r:
                tasks = json.load(r)
            seen = {tid: t.get("name") for tid, t in tasks.items() if tid in task_ids}
            if len(seen) == len(task_ids) and all(seen.values()):
                break
            assert time.monotonic() < deadline, (seen, (tmp_path / "flower.log").read_text())
            time.sleep(0.5)
        assert set(seen.values()) == {"chains.step.math.multiply"}
    finally:
        stop(flower)
        log.close()
