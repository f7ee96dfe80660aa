"""Notifications end to end: a real worker on a real Redis ends a failing run and delivers its
webhook to a local HTTP server, signed, through the general queue (with its retries)."""
import json
import time

import pytest

from chains.models import Delivery, RunStatus
from tests.helpers import wait_for_run
from tests.notify_server import Receiver, verify

pytestmark = [pytest.mark.flow, pytest.mark.django_db(transaction=True)]

SECRET = "flow-secret-flow-secret"
LOCAL = {"CHAINS_WEBHOOK_ALLOW_HTTP": "1", "CHAINS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
         "CHAINS_NOTIFY_BACKOFF_SECONDS": "1"}


@pytest.fixture
def receiver(settings):
    settings.CHAINS_WEBHOOK_ALLOW_HTTP = True  # this process saves the rule
    settings.CHAINS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    server = Receiver()
    yield server
    server.stop()


def failing_chain_with_webhook(api, url: str) -> int:
    chain = api.post("/api/chains/", {"name": "divide-by-zero", "steps": [
        {"step_type": "math.divide", "params": {"numbers": [1, 0]}}]}, format="json")
    assert chain.status_code == 201, chain.content
    rule = api.post("/api/notification-rules/", {
        "chain": chain.json()["id"], "channel": "webhook", "events": ["run_failed"],
        "url": url, "secret": SECRET}, format="json")
    assert rule.status_code == 201, rule.content
    return chain.json()["id"]


def delivered(run_id, *, timeout: float = 20) -> Delivery:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery = Delivery.objects.filter(run_id=run_id).first()
        if delivery is not None and delivery.status != "pending":
            return delivery
        time.sleep(0.1)
    raise AssertionError(f"no delivery of run {run_id} ended in {timeout}s")


def test_a_failing_run_delivers_exactly_one_signed_event(api, start_worker, receiver):
    start_worker(**LOCAL)
    chain_id = failing_chain_with_webhook(api, receiver.url())
    run_id = api.post(f"/api/chains/{chain_id}/run/", {}, format="json").json()["id"]
    assert wait_for_run(run_id).status == RunStatus.FAILED
    delivery = delivered(run_id)
    assert (delivery.status, delivery.attempts, delivery.status_code) == ("sent", 1, 200)
    time.sleep(1)  # nothing else arrives
    assert len(receiver.received) == 1
    (event,) = receiver.received
    assert verify(SECRET, event)
    body = json.loads(event.body)
    assert (body["event"], body["run_id"], body["status"]) == ("run_failed", run_id, "FAILED")
    assert body["error"] == "step 1 (math.divide): division by zero"
    assert wait_for_run(run_id).status == RunStatus.FAILED


def test_a_webhook_that_fails_twice_is_retried_by_the_worker(api, start_worker, receiver):
    receiver.script = [(500, {}), (502, {}), (200, {})]
    start_worker(**LOCAL)
    chain_id = failing_chain_with_webhook(api, receiver.url())
    run_id = api.post(f"/api/chains/{chain_id}/run/", {}, format="json").json()["id"]
    delivery = delivered(run_id, timeout=30)
    assert (delivery.status, delivery.attempts, delivery.status_code) == ("sent", 3, 200)
    assert len(receiver.received) == 3 and all(verify(SECRET, r) for r in receiver.received)
    assert len({r.headers["X-Task-Chain-Delivery"] for r in receiver.received}) == 1
