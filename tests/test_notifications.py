"""Notifications: webhooks signed and retried against a real local HTTP server, the SSRF rules at
save and at delivery, email through the locmem backend, and that nothing a notification does
changes its run."""
import json
import socket
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.utils import timezone

from chains import services
from chains.errors import ChainError
from chains.events import run_waiting
from chains.models import Delivery, MetricCount, NotificationRule, Run, RunStatus
from chains.notification_models import DeliveryStatus
from chains.services import notifications
from chains.tasks import deliver_notification
from tests.factories import make_chain, make_user, token_client
from tests.notify_server import Receiver, verify

pytestmark = pytest.mark.django_db

SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def local_hooks(settings):
    """What the test settings allow: http, and 127.0.0.1 whatever it is."""
    settings.CHAINS_WEBHOOK_ALLOW_HTTP = True
    settings.CHAINS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.CHAINS_SITE_URL = "https://chains.example.com"


@pytest.fixture
def strict_hooks(settings):
    """No host allowed: every address is checked (http allowed, so the address is what is
    refused, not the scheme)."""
    settings.CHAINS_WEBHOOK_ALLOW_HTTP = True
    settings.CHAINS_WEBHOOK_ALLOWED_HOSTS = []


@pytest.fixture
def eager(monkeypatch):
    """Deliveries run in this process through the real task (its retries eagerly, at once)
    instead of on a worker."""
    monkeypatch.setattr(notifications, "delivery_enqueue",
                        lambda delivery_id: deliver_notification.apply(args=[delivery_id]))


def running_run(chain, *, seconds: float = 1.0) -> Run:
    now = timezone.now()
    return Run.objects.create(chain=chain, status=RunStatus.RUNNING, trigger="api",
                              started_at=now - timedelta(seconds=seconds))


def end(run: Run, status: str, capture, error: str = "") -> Run:
    """End the run through the one service that ends runs; the notifications made once its
    end commits."""
    with capture(execute=True):
        services.run_end(run.id, status, error=error, finished_at=timezone.now())
    run.refresh_from_db()
    return run


def webhook_rule(chain, url: str, events=("run_failed",)) -> NotificationRule:
    return services.rule_save(chain=chain, channel="webhook", events=list(events), url=url,
                              secret=SECRET)


# --- Webhooks -------------------------------------------------------------------------------


def test_webhook_is_signed_and_retried_until_the_server_answers(
        local_hooks, eager, receiver, django_capture_on_commit_callbacks):
    receiver.script = [(500, {}), (503, {}), (200, {})]
    chain = make_chain("divide")
    webhook_rule(chain, receiver.url())
    run = end(running_run(chain), RunStatus.FAILED, django_capture_on_commit_callbacks,
              error="step 1 (math.divide): division by zero")

    delivery = Delivery.objects.get(run=run)
    assert (delivery.status, delivery.attempts, delivery.status_code, delivery.error) == (
        DeliveryStatus.SENT, 3, 200, "")
    assert len(receiver.received) == 3
    assert all(verify(SECRET, r) for r in receiver.received)
    assert not verify("another-secret-entirely", receiver.received[0])
    bodies = [json.loads(r.body) for r in receiver.received]
    assert bodies[0] == bodies[2]  # the same event each time, the same delivery id
    body = bodies[2]
    assert body["event"] == "run_failed" and body["run_id"] == str(run.id)
    assert body["chain"] == {"id": chain.id, "name": "divide"}
    assert body["status"] == "FAILED"
    assert body["error"] == "step 1 (math.divide): division by zero"
    assert body["delivery_id"] == delivery.id
    assert body["duration_seconds"] >= 1.0 and body["finished_at"]
    assert body["url"] == f"https://chains.example.com/admin/chains/run/{run.id}/change/"
    headers = receiver.received[2].headers
    assert headers["Content-Type"] == "application/json"
    assert headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert run.status == RunStatus.FAILED


def test_backoff_doubles_with_jitter(settings):
    settings.CHAINS_NOTIFY_BACKOFF_SECONDS = 10
    settings.CHAINS_NOTIFY_BACKOFF_MAX_SECONDS = 100
    settings.CHAINS_VISIBILITY_TIMEOUT = 600
    for retries, base in [(0, 10), (1, 20), (2, 40), (3, 80), (4, 100), (9, 100)]:
        delays = {services.delivery_backoff(retries) for _ in range(20)}
        assert all(base <= d <= base * 1.25 for d in delays), (retries, delays)
        assert len(delays) > 1  # jitter
    settings.CHAINS_NOTIFY_BACKOFF_MAX_SECONDS = 3600  # held under the visibility timeout
    assert all(services.delivery_backoff(9) <= 300 for _ in range(20))


def test_a_webhook_that_keeps_failing_ends_failed_and_is_counted(
        local_hooks, eager, receiver, settings, django_capture_on_commit_callbacks):
    settings.CHAINS_NOTIFY_MAX_RETRIES = 2
    receiver.script = [(500, {})]
    chain = make_chain("always-500")
    webhook_rule(chain, receiver.url())
    run = end(running_run(chain), RunStatus.FAILED, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get(run=run)
    assert (delivery.status, delivery.attempts, delivery.status_code) == (
        DeliveryStatus.FAILED, 3, 500)
    assert delivery.error.startswith("HTTP 500")
    assert len(receiver.received) == 3
    counted = MetricCount.objects.get(name="chains_notification_deliveries_failed_total")
    assert (json.loads(counted.labels), counted.value) == (["webhook", "run_failed"], 1.0)


def test_only_the_events_a_rule_names_are_delivered(
        local_hooks, eager, receiver, django_capture_on_commit_callbacks):
    chain = make_chain("events")
    webhook_rule(chain, receiver.url(), events=["run_completed"])
    end(running_run(chain), RunStatus.FAILED, django_capture_on_commit_callbacks)
    end(running_run(chain), RunStatus.CANCELLED, django_capture_on_commit_callbacks)
    assert Delivery.objects.count() == 0
    completed = end(running_run(chain), RunStatus.COMPLETED, django_capture_on_commit_callbacks)
    assert list(Delivery.objects.values_list("run_id", "event", "status")) == [
        (completed.id, "run_completed", "sent")]
    disabled = NotificationRule.objects.get()
    disabled.enabled = False
    disabled.save()
    end(running_run(chain), RunStatus.COMPLETED, django_capture_on_commit_callbacks)
    assert Delivery.objects.count() == 1 and len(receiver.received) == 1


def test_a_run_slower_than_the_chains_p95_is_reported_slow(
        local_hooks, eager, receiver, django_capture_on_commit_callbacks):
    chain = make_chain("slow")
    for _ in range(5):  # their durations: 2 s plus the time a test takes to end them
        end(running_run(chain, seconds=2), RunStatus.COMPLETED,
            django_capture_on_commit_callbacks)
    webhook_rule(chain, receiver.url(), events=["run_slow"])
    # Faster than the usual by a second, not by the milliseconds a loaded machine varies.
    end(running_run(chain, seconds=1), RunStatus.COMPLETED, django_capture_on_commit_callbacks)
    assert Delivery.objects.count() == 0
    slow = end(running_run(chain, seconds=30), RunStatus.COMPLETED,
               django_capture_on_commit_callbacks)
    assert list(Delivery.objects.values_list("run_id", "event")) == [(slow.id, "run_slow")]
    assert json.loads(receiver.received[0].body)["duration_seconds"] >= 30


def test_a_run_waiting_for_approval_is_delivered_once(
        local_hooks, eager, receiver, django_capture_on_commit_callbacks):
    chain = make_chain("approve")
    webhook_rule(chain, receiver.url(), events=["run_waiting"])
    run = running_run(chain)
    Run.objects.filter(id=run.id).update(status=RunStatus.WAITING)
    for _ in range(2):  # the same wait told twice (a message delivered again)
        with django_capture_on_commit_callbacks(execute=True):
            run_waiting.send(sender=Run, run_id=run.id, step_run_id=None)
    assert list(Delivery.objects.values_list("event", "status")) == [("run_waiting", "sent")]
    assert json.loads(receiver.received[0].body)["status"] == "WAITING"


def test_resend_makes_a_new_delivery_of_the_same_event(
        local_hooks, eager, receiver, django_capture_on_commit_callbacks):
    chain = make_chain("resend")
    webhook_rule(chain, receiver.url())
    run = end(running_run(chain), RunStatus.FAILED, django_capture_on_commit_callbacks)
    first = Delivery.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        again = services.delivery_resend(delivery=first)
    again.refresh_from_db()
    assert (again.status, again.attempts, again.resend_of_id) == ("sent", 1, first.id)
    bodies = [json.loads(r.body) for r in receiver.received]
    assert [b["delivery_id"] for b in bodies] == [first.id, again.id]
    assert {b["run_id"] for b in bodies} == {str(run.id)}


# --- SSRF -----------------------------------------------------------------------------------

REFUSED_HOSTS = [
    ("127.0.0.1", "127.0.0.1"),
    ("[::1]", "::1"),
    ("localhost", "127.0.0.1"),
    ("10.1.2.3", "10.1.2.3"),
    ("172.16.0.1", "172.16.0.1"),
    ("172.31.255.254", "172.31.255.254"),
    ("192.168.1.1", "192.168.1.1"),
    ("169.254.169.254", "169.254.169.254"),
    ("[fe80::1]", "fe80::1"),
    ("[::ffff:127.0.0.1]", "127.0.0.1"),
    ("[::ffff:10.0.0.1]", "10.0.0.1"),
    ("0.0.0.0", "0.0.0.0"),
    ("100.64.0.1", "100.64.0.1"),
    ("224.0.0.1", "224.0.0.1"),
    ("2130706433", "127.0.0.1"),  # 127.0.0.1 as one number
    ("rebind.test", "127.0.0.1"),  # a name that resolves to loopback (see the fixture)
]


@pytest.fixture
def rebind_name(monkeypatch):
    """`rebind.test` resolves to 127.0.0.1; other names as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "rebind.test":
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(("host", "address"), REFUSED_HOSTS)
def test_webhook_urls_to_private_addresses_are_refused_when_saved(strict_hooks, rebind_name,
                                                                  host, address):
    chain = make_chain("ssrf")
    with pytest.raises(ChainError) as refused:
        webhook_rule(chain, f"http://{host}:8080/hook")
    assert list(refused.value.errors) == ["url"]
    reason = refused.value.errors["url"][0]
    assert f"resolves to {address}" in reason or "not a public address" in reason, reason
    assert not NotificationRule.objects.exists()


@pytest.mark.parametrize(("host", "address"), REFUSED_HOSTS)
def test_webhook_urls_to_private_addresses_are_refused_at_delivery(
        strict_hooks, rebind_name, eager, receiver, host, address,
        django_capture_on_commit_callbacks):
    """A rule written before the rules (or to a host whose name now resolves elsewhere) is
    checked again when it is sent: nothing reaches the local server."""
    chain = make_chain("ssrf-late")
    url = f"http://{host}:{receiver.port}/hook"
    NotificationRule.objects.create(chain=chain, channel="webhook", events=["run_failed"],
                                    url=url, secret=SECRET)
    run = end(running_run(chain), RunStatus.FAILED, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1)
    assert delivery.error.startswith("refused: url: host"), delivery.error
    assert receiver.received == []
    assert run.status == RunStatus.FAILED


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://example.com/x",
                                 "https://user:pw@example.com/x", "https:///x", "not a url"])
def test_webhook_urls_must_be_https_without_credentials(settings, url):
    settings.CHAINS_WEBHOOK_ALLOW_HTTP = False
    with pytest.raises(ChainError) as refused:
        notifications.webhook_target(url)
    assert list(refused.value.errors) == ["url"]


def test_the_address_checked_is_the_address_connected_to(strict_hooks, monkeypatch):
    """DNS rebinding: the name resolves to a public address when checked and to loopback
    afterwards; the connection goes to the address that was checked, by number."""
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1"])
    real = socket.getaddrinfo
    connected = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "flip.test":
            return real(next(answers), port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        connected.append(address)
        raise OSError("test: no network")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    with pytest.raises(notifications.DeliveryFailed):
        notifications.webhook_send(url="http://flip.test:8080/h", secret=SECRET,
                                   payload={"event": "run_failed"})
    assert connected == [("93.184.216.34", 8080)]


def test_a_redirect_is_not_followed(local_hooks, eager, receiver,
                                    django_capture_on_commit_callbacks):
    receiver.script = [(302, {"Location": f"http://localhost:{receiver.port}/internal"})]
    chain = make_chain("redirect")
    webhook_rule(chain, receiver.url())
    end(running_run(chain), RunStatus.FAILED, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.status_code, delivery.attempts) == (
        DeliveryStatus.FAILED, 302, 1)
    assert delivery.error == (f"HTTP 302: redirect to http://localhost:{receiver.port}/internal"
                              " not followed")
    assert [r.path for r in receiver.received] == ["/hook"]


def test_allowed_hosts_match_exactly_or_under_a_dotted_entry(settings):
    settings.CHAINS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1", ".internal.example"]
    assert notifications.host_allowed("127.0.0.1")
    assert notifications.host_allowed("hooks.internal.example")
    assert not notifications.host_allowed("internal.example.evil.com")
    assert not notifications.host_allowed("localhost")
    assert not notifications.host_allowed("127.0.0.2")


# --- Email ----------------------------------------------------------------------------------


def test_email_on_failure_to_addresses_and_a_groups_members(
        eager, django_capture_on_commit_callbacks):
    oncall = Group.objects.create(name="oncall")
    member = make_user("alice")
    member.email = "alice@example.com"
    member.save()
    member.groups.add(oncall)
    make_user("bob").groups.add(oncall)  # no address: not written to
    chain = make_chain("mailed")
    services.rule_save(chain=chain, channel="email", events=["run_failed"],
                       emails=["ops@example.com"], group="oncall")
    run = end(running_run(chain), RunStatus.FAILED, django_capture_on_commit_callbacks,
              error="step 1 (math.divide): division by zero")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com", "alice@example.com"]
    assert message.subject == f"[Task Chain] mailed: run failed (run {run.id})"
    assert "Error: step 1 (math.divide): division by zero" in message.body
    assert f"/admin/chains/run/{run.id}/change/" in message.body
    assert Delivery.objects.get().status == DeliveryStatus.SENT


@pytest.mark.parametrize(("fields", "field"), [
    ({"emails": ["not-an-address"]}, "emails"),
    ({"group": "nobody-here"}, "group"),
    ({}, "emails"),
    ({"emails": ["a@example.com"], "events": ["run_exploded"]}, "events"),
    ({"emails": ["a@example.com"], "events": []}, "events"),
])
def test_an_email_rule_names_the_field_it_is_refused_for(fields, field):
    chain = make_chain("bad-rule")
    with pytest.raises(ChainError) as refused:
        services.rule_save(chain=chain, channel="email",
                           **{"events": ["run_failed"], **fields})
    assert list(refused.value.errors) == [field]


# --- A notification never touches its run ---------------------------------------------------


def test_a_broken_notification_never_changes_the_run(
        local_hooks, monkeypatch, receiver, django_capture_on_commit_callbacks):
    """The broker refuses the delivery: it is recorded failed, the run's end stands."""
    chain = make_chain("broker-down")
    webhook_rule(chain, receiver.url(), events=["run_completed"])

    def refuse(*args, **kwargs):
        raise ConnectionError("broker away")

    monkeypatch.setattr(notifications.app, "send_task", refuse)
    run = end(running_run(chain), RunStatus.COMPLETED, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.COMPLETED
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.error == "could not be queued: ConnectionError: broker away"


def test_an_error_making_deliveries_is_logged_not_raised(
        monkeypatch, django_capture_on_commit_callbacks, caplog):
    chain = make_chain("explodes")
    NotificationRule.objects.create(chain=chain, channel="email", events=["run_failed"],
                                    emails=["a@example.com"])

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(notifications, "run_payload", explode)
    run = end(running_run(chain), RunStatus.FAILED, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    assert not Delivery.objects.exists()
    assert "could not be made" in caplog.text


# --- API ------------------------------------------------------------------------------------


def test_api_rules_for_the_chains_editor_and_a_400_naming_the_url(strict_hooks):
    owner, other = make_user("owner"), make_user("other")
    chain = make_chain("mine", user=owner)
    api, other_api = token_client(owner), token_client(other)
    refused = api.post("/api/notification-rules/", {
        "chain": chain.id, "channel": "webhook", "events": ["run_failed"],
        "url": "http://169.254.169.254/latest/meta-data"}, format="json")
    assert refused.status_code == 400
    assert list(refused.json()) == ["url"]
    assert "169.254.169.254" in refused.json()["url"][0]
    forbidden = other_api.post("/api/notification-rules/", {
        "chain": chain.id, "channel": "email", "events": ["run_failed"],
        "emails": ["x@example.com"]}, format="json")
    assert forbidden.status_code == 403
    created = api.post("/api/notification-rules/", {
        "chain": chain.id, "channel": "email", "events": ["run_failed", "run_slow"],
        "emails": ["x@example.com"]}, format="json")
    assert created.status_code == 201, created.content
    rule_id = created.json()["id"]
    assert api.get("/api/notification-rules/").json()["count"] == 1
    assert other_api.get("/api/notification-rules/").json()["count"] == 0
    assert other_api.get(f"/api/notification-rules/{rule_id}/").status_code == 404
    changed = api.patch(f"/api/notification-rules/{rule_id}/", {"enabled": False},
                        format="json")
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    assert api.delete(f"/api/notification-rules/{rule_id}/").status_code == 204


def test_api_deliveries_are_read_only_and_resent_by_the_editor(
        local_hooks, eager, receiver, django_capture_on_commit_callbacks):
    owner, other = make_user("owner"), make_user("other")
    chain = make_chain("mine", user=owner)
    webhook_rule(chain, receiver.url())
    end(running_run(chain), RunStatus.FAILED, django_capture_on_commit_callbacks)
    api, other_api = token_client(owner), token_client(other)
    listed = api.get("/api/deliveries/").json()
    assert listed["count"] == 1
    row = listed["results"][0]
    assert (row["event"], row["status"], row["attempts"], row["status_code"]) == (
        "run_failed", "sent", 1, 200)
    assert other_api.get("/api/deliveries/").json()["count"] == 0
    assert api.delete(f"/api/deliveries/{row['id']}/").status_code == 405
    assert other_api.post(f"/api/deliveries/{row['id']}/resend/").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        resent = api.post(f"/api/deliveries/{row['id']}/resend/")
    assert resent.status_code == 201, resent.content
    assert resent.json()["resend_of"] == row["id"]
    assert len(receiver.received) == 2


# --- Admin ----------------------------------------------------------------------------------


def test_admin_refuses_a_private_webhook_url_on_its_field(strict_hooks, client):
    client.force_login(make_user("root", superuser=True))
    chain = make_chain("admin-rule")
    response = client.post("/admin/chains/notificationrule/add/", {
        "chain": chain.id, "events": ["run_failed"], "channel": "webhook",
        "url": "http://10.0.0.5/hook", "enabled": "on"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"url": [
        "host 10.0.0.5 resolves to 10.0.0.5, which is not a public address (see "
        "CHAINS_WEBHOOK_ALLOWED_HOSTS)"]}
    response = client.post("/admin/chains/notificationrule/add/", {
        "chain": chain.id, "events": ["run_failed", "run_slow"], "channel": "email",
        "emails": "a@example.com, b@example.com", "enabled": "on"})
    assert response.status_code == 302
    rule = NotificationRule.objects.get()
    assert (rule.events, rule.emails) == (["run_failed", "run_slow"],
                                          ["a@example.com", "b@example.com"])


def test_admin_lists_deliveries_and_resends_one(local_hooks, eager, receiver, client,
                                                django_capture_on_commit_callbacks):
    client.force_login(make_user("root", superuser=True))
    chain = make_chain("admin-deliveries")
    webhook_rule(chain, receiver.url())
    end(running_run(chain), RunStatus.FAILED, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get()
    listed = client.get("/admin/chains/delivery/")
    assert listed.status_code == 200
    assert b"admin-deliveries" in listed.content and b"run_failed" in listed.content
    page = client.get(f"/admin/chains/delivery/{delivery.id}/change/")
    assert b"tc-resend" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        resent = client.post(f"/admin/chains/delivery/{delivery.id}/resend/")
    assert resent.status_code == 302
    assert Delivery.objects.filter(resend_of=delivery, status="sent").count() == 1
    assert len(receiver.received) == 2
