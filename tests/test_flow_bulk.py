"""Bulk retry against a real Celery worker on a real Redis: every failed run of a chain,
retried with one request after its params are fixed, completes."""
import time

import pytest

from chains.models import BulkJob, Run, RunStatus
from chains.services import bulk
from tests.helpers import wait_for_run

pytestmark = [pytest.mark.flow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _worker(celery_worker):
    return celery_worker


def failing_chain(api, name: str) -> tuple[dict, list[str]]:
    """A chain dividing by zero, and three of its runs, failed."""
    chain = api.post("/api/chains/", {"name": name, "steps": [
        {"step_type": "math.add", "params": {"numbers": [1]}},
        {"step_type": "math.divide", "params": {"numbers": [0]}, "stage": 1},
    ]}, format="json").json()
    run_ids = [api.post(f"/api/chains/{chain['id']}/run/", {"inputs": n},
                        format="json").json()["id"] for n in (1, 3, 5)]
    for run_id in run_ids:
        assert wait_for_run(run_id).status == RunStatus.FAILED
    chain["steps"][1]["params"] = {"numbers": [2]}  # the fix
    assert api.put(f"/api/chains/{chain['id']}/", chain, format="json").status_code == 200
    return chain, run_ids


def test_bulk_retry_of_every_failed_run_of_a_fixed_chain_completes_them(api):
    chain, run_ids = failing_chain(api, "divide by zero")
    other = api.post("/api/chains/", {"name": "other", "steps": [
        {"step_type": "math.divide", "params": {"numbers": [0]}}]}, format="json").json()
    other_run = api.post(f"/api/chains/{other['id']}/run/", {"inputs": 1},
                         format="json").json()["id"]
    assert wait_for_run(other_run).status == RunStatus.FAILED
    response = api.post("/api/runs/bulk/", {"action": "retry", "filter": {
        "chain": chain["id"], "status": "FAILED"}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"action": "retry", "matched": 3, "done": 3, "skipped": {}}
    runs = [wait_for_run(run_id) for run_id in run_ids]
    assert [(r.status, r.result, r.retries) for r in runs] == [
        (RunStatus.COMPLETED, 1.0, 1), (RunStatus.COMPLETED, 2.0, 1),
        (RunStatus.COMPLETED, 3.0, 1)]
    assert Run.objects.get(id=other_run).status == RunStatus.FAILED  # another chain's


def poll(api, url: str, timeout: float = 30) -> dict:
    """GET a bulk job until it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(url).json()
        if job["status"] in ("COMPLETED", "FAILED"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"bulk job still {job['status']} after {timeout}s")


def test_a_large_bulk_retry_runs_as_a_job_on_the_worker(api, monkeypatch):
    monkeypatch.setattr(bulk, "IN_REQUEST_LIMIT", 2)
    chain, run_ids = failing_chain(api, "divide by zero, as a job")
    response = api.post("/api/runs/bulk/", {"action": "retry", "filter": {
        "chain": chain["id"], "status": "FAILED"}}, format="json")
    assert response.status_code == 202, response.content
    url = response.json()["url"]
    job = poll(api, url)
    runs = [wait_for_run(run_id) for run_id in run_ids]
    assert [r.status for r in runs] == [RunStatus.COMPLETED] * 3
    assert (job["status"], job["matched"], job["done"], job["skipped"], job["progress"]) == (
        "COMPLETED", 3, 3, {}, 1.0)
    assert BulkJob.objects.get().source == "api"
