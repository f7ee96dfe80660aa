"""The admin in a real browser (Debian's Chromium driven by Playwright) against a live server
with a real worker on real Redis: build a chain, run it and watch it finish, cancel a slow run,
retry a failing one after fixing its params, open the dashboard. Screenshots are saved under
tests/artifacts/."""
import os
import shutil
from pathlib import Path

import pytest

from chains import services
from chains.models import Chain, Run, RunStatus
from chains.presets import StepSpec
from tests.factories import make_user

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.flow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is not installed"),
]


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls here are plain
    # sync calls, so Django's async-safety check is lifted for these tests only.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server, start_worker, request):
    start_worker()
    make_user("boss", superuser=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    yield page
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        shot(page, f"failed-{request.node.name}")
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def add_step(page, index: int, *, step_type: str, stage: int, fill=None) -> None:
    page.click(".tc-steps .add-row a")
    row = page.locator(f"#steps-{index}")
    row.locator("input[name$='-stage']").fill(str(stage))
    row.locator("select[name$='-step_type']").select_option(step_type)
    if fill:
        fill(row)


def wait_for_status(page, status: str, timeout: float = 30_000) -> None:
    page.wait_for_selector(f"#tc-run-status:text-is('{status}')", timeout=timeout)


def test_build_a_chain_run_it_and_watch_it_finish(page, live_server):
    page.goto(f"{live_server.url}/admin/chains/chain/add/")
    page.fill("#id_name", "browser-built")

    def seconds(row):
        row.locator("[data-django-jsonform-container] input").first.fill("0.5")

    add_step(page, 0, step_type="flow.wait", stage=0, fill=seconds)
    add_step(page, 1, step_type="math.add", stage=1)
    add_step(page, 2, step_type="math.multiply", stage=1)
    # Drag the last step above the second: positions follow the rows.
    page.locator("#steps-2 .tc-handle").drag_to(page.locator("#steps-1 .tc-handle"))
    page.click("input[name=_continue]")
    page.wait_for_selector(".tc-picture")
    chain = Chain.objects.get(name="browser-built")
    assert list(chain.steps.order_by("position").values_list("step_type", "stage", "params")) == [
        ("flow.wait", 0, {"seconds": 0.5}), ("math.multiply", 1, {"numbers": []}),
        ("math.add", 1, {"numbers": []})]
    assert page.locator(".tc-picture .tc-node").count() == 3
    page.click("text=Validate")
    page.wait_for_selector("text=The chain is valid")
    shot(page, "chain-page")

    page.click("a.tc-run-now")
    page.fill("#id_inputs", "7")
    page.click("input[type=submit]")
    page.wait_for_selector("#tc-run-panel")
    run_url = page.url
    wait_for_status(page, "COMPLETED")  # the panel refreshes itself: no reload
    assert page.url == run_url
    assert page.locator(".tc-node-completed").count() == 3
    run = Run.objects.get(chain=chain)
    assert (run.status, run.result) == (RunStatus.COMPLETED, [7, 7])
    shot(page, "run-page")


def test_cancel_a_slow_run(page, live_server):
    chain = services.chain_save(name="slow", steps=[
        StepSpec("flow.wait", {"seconds": 30}, 0), StepSpec("math.add", {"numbers": [1]}, 1)])
    page.goto(f"{live_server.url}/admin/chains/chain/{chain.pk}/run/")
    page.click("input[type=submit]")
    wait_for_status(page, "RUNNING")
    page.click("#tc-cancel")
    wait_for_status(page, "CANCELLED")
    run = Run.objects.get(chain=chain)
    assert run.status == RunStatus.CANCELLED
    assert set(run.step_runs.values_list("status", flat=True)) == {RunStatus.CANCELLED}


def test_retry_a_failing_run_after_fixing_its_params(page, live_server):
    chain = services.chain_save(name="fragile", steps=[
        StepSpec("math.add", {"numbers": [1]}, 0), StepSpec("math.divide", {"numbers": [0]}, 1)])
    page.goto(f"{live_server.url}/admin/chains/chain/{chain.pk}/run/")
    page.click("input[type=submit]")
    wait_for_status(page, "FAILED")
    assert "division by zero" in page.inner_text("#tc-run-panel")
    run_url = page.url

    page.goto(f"{live_server.url}/admin/chains/chain/{chain.pk}/change/")
    divisor = page.locator("#steps-1 [data-django-jsonform-container] input").first
    divisor.fill("4")
    page.click("input[name=_continue]")
    page.wait_for_selector(".tc-picture")
    assert chain.steps.get(position=1).params == {"numbers": [4]}

    page.goto(run_url)
    page.click("#tc-retry")
    wait_for_status(page, "COMPLETED")
    run = Run.objects.get(chain=chain)
    assert (run.status, run.result) == (RunStatus.COMPLETED, 0.25)
    assert run.step_runs.get(index=0).attempts == 1  # step 1's stored result was reused


def test_dashboard(page, live_server):
    chain = services.chain_save(name="dash", steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    run = services.run_start(chain=chain)
    from tests.helpers import wait_for_run

    assert wait_for_run(run.id).status == RunStatus.COMPLETED
    page.goto(f"{live_server.url}/admin/")
    page.click("text=Dashboard")
    page.wait_for_selector(".tc-chart svg")
    page.wait_for_selector(".tc-cluster table")  # the panel asked the workers after the page
    text = page.inner_text("#content-main")
    assert "dash" in text and "Workers and queues" in text
    assert "celery, data, io, math" in page.inner_text(".tc-cluster")  # the test's worker
    shot(page, "dashboard")
