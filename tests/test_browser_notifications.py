"""Notifications in a real browser (Chromium driven by Playwright, as in test_browser): add a
webhook rule in the admin (a private address refused on its field), then read the deliveries
and resend one. Screenshots at 1400x900 under tests/artifacts/: notification-rule-refused,
deliveries, delivery."""


from chains.models import Delivery, NotificationRule, Run, RunStatus
from tests.factories import make_chain
from tests.test_browser import BROWSER_MARKS, view_shot
from tests.test_browser import admin_page as admin_page  # noqa: F401 (a fixture)
from tests.test_browser import browser as browser  # noqa: F401 (a fixture)

pytestmark = BROWSER_MARKS



def test_a_rule_refused_on_its_url_and_deliveries_with_resend(admin_page, live_server,
                                                              settings, monkeypatch):
    settings.CHAINS_WEBHOOK_ALLOW_HTTP = False
    settings.CHAINS_WEBHOOK_ALLOWED_HOSTS = []
    page = admin_page
    chain = make_chain("nightly-report")
    page.goto(f"{live_server.url}/admin/chains/notificationrule/add/")
    page.select_option("#id_chain", str(chain.id))
    page.check("input[name=events][value=run_failed]")
    page.select_option("#id_channel", "webhook")
    page.fill("#id_url", "https://169.254.169.254/latest/meta-data/")
    page.click("input[name=_save]")
    error = page.locator(".field-url .errorlist")
    assert "169.254.169.254, which is not a public address" in error.inner_text()
    view_shot(page, "notification-rule-refused")
    assert not NotificationRule.objects.exists()

    rule = NotificationRule.objects.create(chain=chain, channel="webhook",
                                           events=["run_failed"], secret="x" * 20,
                                           url="https://hooks.example.com/task-chain")
    run = Run.objects.create(chain=chain, status=RunStatus.FAILED, trigger="api",
                             error="step 1 (math.divide): division by zero")
    Delivery.objects.create(rule=rule, run=run, event="run_failed", status="failed",
                            attempts=6, status_code=503, error="HTTP 503: upstream down",
                            payload={"event": "run_failed", "run_id": str(run.id)})
    Delivery.objects.create(rule=rule, run=run, event="run_failed", status="sent",
                            attempts=1, status_code=200, payload={"event": "run_failed"})
    queued = []
    monkeypatch.setattr("chains.services.notifications.delivery_enqueue", queued.append)
    page.goto(f"{live_server.url}/admin/chains/delivery/")
    assert page.locator("#result_list tbody tr").count() == 2
    assert "HTTP 503: upstream down" in page.locator("#result_list").inner_text()
    view_shot(page, "deliveries")
    failed = Delivery.objects.get(status="failed")
    page.goto(f"{live_server.url}/admin/chains/delivery/{failed.id}/change/")
    view_shot(page, "delivery")
    page.click(".tc-resend")
    page.wait_for_selector(".messagelist")
    assert "queued" in page.locator(".messagelist").inner_text()
    again = Delivery.objects.get(resend_of=failed)
    assert queued == [again.id]
