"""The admin in a real browser (Debian's Chromium driven by Playwright) against a live server
with a real worker on real Redis: build a chain, run it and watch it finish, cancel a slow run,
retry a failing one after fixing its params, open the dashboard; approve a waiting run, watch a
map step's items, see Run now refuse inputs that do not fit the chain's schema, and draw map
steps, conditions, approvals and sub-chains in the builder. Screenshots are saved under
tests/artifacts/."""
import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chains import services
from chains.models import Chain, Run, RunStatus
from chains.presets import StepSpec
from tests.factories import make_user

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
playwright = pytest.importorskip("playwright.sync_api")
# Every browser test module's marks.
BROWSER_MARKS = [
    pytest.mark.flow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is not installed"),
]
pytestmark = BROWSER_MARKS


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
def admin_page(browser, live_server, request):
    """A superuser signed in, in a 1400x900 window; no worker (pages that run nothing)."""
    make_user("boss", superuser=True)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
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


@pytest.fixture
def page(start_worker, admin_page):
    """The signed-in admin, with a real worker for the runs it starts."""
    start_worker()
    return admin_page


def fits(page) -> bool:
    """The page does not scroll sideways."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def shot_sizes(page, name: str) -> None:
    """Screenshots at 1400x900 and 1920x1080, and the page fits both widths."""
    for width, height in ((1400, 900), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(200)
        assert fits(page), f"{name} scrolls sideways at {width} px"
        shot(page, f"{name}-{width}")
    page.set_viewport_size({"width": 1400, "height": 900})


def view_shot(page, name: str, selector: str | None = None, *, full_page: bool = False
              ) -> None:
    """A screenshot at the page's size (1400x900) of the window, scrolled to `selector` when
    given, or of the whole page with `full_page`; the page must not scroll sideways."""
    assert fits(page), f"{name} scrolls sideways"
    ARTIFACTS.mkdir(exist_ok=True)
    if selector:
        page.eval_on_selector(selector, "e => e.scrollIntoView({block: 'start'})")
        page.evaluate("window.scrollBy(0, -12)")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


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
    page.wait_for_selector(".tc-step-row[data-status=RUNNING]")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("#tc-cancel")  # dismissed: nothing happens
    assert asked and asked[0].startswith("Cancel this run?")
    assert Run.objects.get(chain=chain).status == RunStatus.RUNNING
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#tc-cancel")
    wait_for_status(page, "CANCELLED")
    # The page says what really stopped: the running step on its worker, the next one unstarted.
    assert page.inner_text(".messagelist") == (
        "Cancelled: 1 running step stopped on the worker; 1 waiting step will not start.")
    said = page.inner_text("#content-main")
    assert "stopped on its worker by the cancel" in said
    assert "Traceback" not in said  # a cancelled step shows no ChordError traceback
    run = Run.objects.get(chain=chain)
    assert run.status == RunStatus.CANCELLED
    assert set(run.step_runs.values_list("status", flat=True)) == {RunStatus.CANCELLED}
    shot(page, "run-cancelled")


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
    # The failed attempt is kept and shown under its step; the run says it was retried.
    page.wait_for_selector(".tc-attempts")
    assert page.inner_text(".tc-attempts summary") == "1 earlier attempt"
    page.click(".tc-attempts summary")  # folded: the step completed since
    attempt = page.inner_text(".tc-attempt")
    assert "FAILED" in attempt and "the run was retried" in attempt
    assert "division by zero" in attempt
    assert "Retried 1 time" in page.inner_text("#tc-retried")
    assert "FAILED: step 2 (math.divide): division by zero" in page.inner_text("#tc-retried")
    shot_sizes(page, "run-retried")
    # The dashboard keeps the failure, marked retried, and does not count a first-time success.
    page.goto(f"{live_server.url}/admin/chains/run/dashboard/")
    failures = page.inner_text("text=Recent failures >> xpath=..")
    assert "step 2 (math.divide): division by zero" in failures and "retried" in failures


def test_dashboard(page, live_server):
    chain = services.chain_save(name="dash", steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    run = services.run_start(chain=chain)
    from tests.helpers import wait_for_run

    assert wait_for_run(run.id).status == RunStatus.COMPLETED
    seed = services.run_submit_task(task_type="math_chain",
                                    config={"operation": "add", "numbers": [1]})
    assert wait_for_run(seed.id).status == RunStatus.COMPLETED
    page.goto(f"{live_server.url}/admin/chains/run/")
    page.click("#nav-sidebar a:text-is('Dashboard')")  # in the sidebar of every admin page
    page.wait_for_selector(".tc-chart svg")
    assert "Data as of" in page.inner_text(".tc-as-of")  # and it refreshes itself
    font = page.eval_on_selector(".tc-chart svg text", "t => getComputedStyle(t).fontFamily")
    body_font = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert font == body_font  # the chart speaks the admin's font
    page.wait_for_selector(".tc-cluster table")  # the panel asked the workers after the page
    text = page.inner_text("#content-main")
    assert "dash" in text and "Workers and queues" in text
    assert "math_chain (task type)" in text  # seed task types have their row too
    assert "celery, data, io, math" in page.inner_text(".tc-cluster")  # the test's worker
    shot_sizes(page, "dashboard")


def test_the_chain_builder_fits_numbers_stages_and_draws_what_is_on_screen(admin_page,
                                                                          live_server):
    page = admin_page
    page.goto(f"{live_server.url}/admin/chains/chain/add/")
    assert page.locator("text=History").count() == 0  # nothing has happened to a new chain
    page.fill("#id_name", "on screen")
    for _ in range(3):
        page.click(".tc-steps .add-row a")
    # Each new step takes the next stage: three steps are three stages, not one.
    assert [page.input_value(f"#id_steps-{i}-stage") for i in range(3)] == ["0", "1", "2"]
    page.select_option("#id_steps-0-step_type", "data.load")
    page.locator("#steps-0 [data-django-jsonform-container] input").first.wait_for()
    page.locator("#steps-0 [data-django-jsonform-container] input").first.fill("in.csv")
    page.select_option("#id_steps-1-step_type", "math.add")
    page.select_option("#id_steps-2-step_type", "math.multiply")
    page.check("#steps-2 .tc-parallel-box")  # a deliberate choice: with the step above
    assert page.input_value("#id_steps-2-stage") == "1"
    # The picture follows the unsaved rows: two columns, the parallel pair stacked.
    page.wait_for_function("document.querySelectorAll('#tc-picture .tc-node').length === 3")
    xs = page.eval_on_selector_all("#tc-picture .tc-node rect",
                                   "rects => rects.map(r => r.getAttribute('x'))")
    assert len(set(xs)) == 2 and xs[1] == xs[2]
    shot_sizes(page, "chain-builder-unsaved")

    # Saving runs the checks Validate runs: a math step after a file is refused on its row.
    page.click("input[name=_continue]")
    page.wait_for_selector(".errornote")
    row_errors = page.inner_text("#steps-1 .errorlist, .tc-steps .row-form-errors")
    assert "stage 1: math.add needs a number or a list of numbers" in row_errors
    assert not Chain.objects.filter(name="on screen").exists()
    # Shown again, each row keeps its own type's params form, as typed.
    assert "Add numbers, left to right" in page.inner_text("#steps-1")
    assert page.locator("#steps-0 [data-django-jsonform-container] input").first.input_value(
    ) == "in.csv"
    shot(page, "chain-builder-refused")

    page.select_option("#id_steps-0-step_type", "math.add")
    # Saved once the row shows the new type's params form (not the old type's, whose `path`
    # would be refused).
    page.wait_for_selector("#steps-0 >> text=Add numbers, left to right")
    page.wait_for_function(
        "!document.querySelector('#id_steps-0-params').value.includes('in.csv')")
    page.click("input[name=_continue]")
    page.wait_for_selector("text=was added successfully")
    chain = Chain.objects.get(name="on screen")
    assert list(chain.steps.order_by("position").values_list("step_type", "stage")) == [
        ("math.add", 0), ("math.add", 1), ("math.multiply", 1)]
    shot_sizes(page, "chain-builder-saved")
    # Validate looks at the saved chain: with unsaved edits on screen it asks to save first.
    page.fill("#id_steps-1-name", "renamed")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("text=Validate")
    assert asked and asked[0].startswith("This page has unsaved changes. Save first")
    assert page.locator("text=The chain is valid").count() == 0
    assert page.is_visible("#tc-dirty-note")


def test_the_runs_list_shows_and_finds_runs(admin_page, live_server):
    page = admin_page
    chain = services.chain_save(name="nightly report", steps=[
        StepSpec("math.add", {"numbers": [1]}, 0), StepSpec("math.divide", {"numbers": [0]}, 1)])
    wanted = services.run_start(chain=chain, inputs=1)
    services.step_execute(step_run_id=wanted.step_runs.get(index=0).id, previous=1)
    services.step_fail(step_run_id=wanted.step_runs.get(index=1).id, error="division by zero")
    for _ in range(3):
        services.run_submit_task(task_type="math_chain",
                                 config={"operation": "add", "numbers": [1]})
    page.goto(f"{live_server.url}/admin/chains/run/")
    row = page.locator("#result_list tr", has_text="nightly report")
    assert row.locator(".tc-run-id").inner_text() == str(wanted.pk)[:8]  # short; full on hover
    assert row.locator(".tc-run-id").get_attribute("title") == str(wanted.pk)
    assert row.locator(".tc-progress").count() == 1 and "1/2" in row.inner_text()
    assert "step 2 (math.divide): division by zero" in row.inner_text()
    shot_sizes(page, "runs-list")
    for term in (str(wanted.pk)[:6], "nightly", wanted.step_runs.get(index=1).task_id[:12]):
        page.fill("#searchbar", term)
        page.press("#searchbar", "Enter")
        page.wait_for_selector("#result_list")
        assert page.locator("#result_list tbody tr").count() == 1, term
        assert page.locator(".tc-run-id").inner_text() == str(wanted.pk)[:8]


def test_a_schedule_shows_its_kinds_fields_and_offers_timezones(admin_page, live_server):
    page = admin_page
    chain = services.chain_save(name="scheduled", steps=[StepSpec("math.add", {}, 0)])
    page.goto(f"{live_server.url}/admin/chains/chain/{chain.pk}/change/")
    page.click(".tc-schedules .add-row a, .tc-schedules a.addlink >> nth=0")
    box = page.locator(".tc-schedules .inline-related:not(.empty-form)").last
    kind = box.locator("select[name$='-kind']")
    kind.select_option("interval")
    assert box.locator(".form-row.field-every_seconds").is_visible()
    assert not box.locator(".form-row.field-minute").is_visible()
    assert not box.locator(".form-row.field-run_at").is_visible()
    kind.select_option("crontab")
    assert box.locator(".form-row.field-minute").is_visible()
    assert not box.locator(".form-row.field-every_seconds").is_visible()
    kind.select_option("once")
    assert box.locator(".form-row.field-run_at").is_visible()
    assert not box.locator(".form-row.field-minute").is_visible()
    zone = box.locator("input[name$='-timezone']")
    assert zone.get_attribute("list") == "tc-timezones"
    assert page.locator("#tc-timezones option[value='Europe/Berlin']").count() == 1
    assert box.locator("textarea[name$='-inputs']").input_value() == ""  # empty: the defaults
    kind.select_option("interval")
    box.locator("input[name$='-every_seconds']").fill("3600")
    zone.fill("Europe/Berlin")
    shot_sizes(page, "chain-schedule")
    page.click("input[name=_continue]")
    page.wait_for_selector("text=was changed successfully")
    schedule = chain.schedules.get()
    assert (schedule.kind, schedule.every_seconds, schedule.timezone, schedule.inputs) == (
        "interval", 3600, "Europe/Berlin", None)
    berlin = datetime.now(ZoneInfo("Europe/Berlin")).strftime("%Z")  # CET or CEST, by date
    assert f" {berlin}" in page.inner_text(".field-next_fire_times")  # its own zone, labelled


# --- Workflows: approvals, map steps, typed inputs, the builder's second line -----------------


def test_approve_from_the_run_page(page, live_server):
    chain = services.chain_save(name="gated", steps=[
        StepSpec("math.add", {"numbers": [1]}, 0),
        StepSpec("flow.approval", {"message": "Ship the numbers?"}, 1),
        StepSpec("math.multiply", {"numbers": [10]}, 2)])
    page.goto(f"{live_server.url}/admin/chains/chain/{chain.pk}/run/")
    page.fill("#id_inputs", "1")
    page.click("input[type=submit]")
    wait_for_status(page, "WAITING")
    page.wait_for_selector("#tc-approve")
    panel = page.inner_text("#tc-run-panel")
    assert "Ship the numbers?" in panel and "due " in panel
    assert page.locator(".tc-node-waiting.tc-kind-approval polygon").count() == 1
    shot_sizes(page, "run-waiting-approval")
    # The panel keeps refreshing while the run waits, but not over a comment being written.
    page.fill(".tc-decide textarea", "numbers checked")
    page.wait_for_timeout(2500)
    assert page.input_value(".tc-decide textarea") == "numbers checked"
    page.click("#tc-approve")
    page.wait_for_selector("text=Approved: the run goes on.")
    wait_for_status(page, "COMPLETED")
    run = Run.objects.get(chain=chain)
    assert (run.status, run.result) == (RunStatus.COMPLETED, 20)
    decided = page.inner_text(".tc-decided")
    assert "APPROVED" in decided.upper() and "boss" in decided and "numbers checked" in decided
    assert page.locator("#tc-approve").count() == 0
    shot(page, "run-approved")


def test_a_map_step_on_the_run_page(page, live_server):
    chain = services.chain_save(name="doubler", steps=[
        StepSpec("math.multiply", {"numbers": [2]}, 0, map=True),
        StepSpec("math.add", {}, 1)])
    page.goto(f"{live_server.url}/admin/chains/chain/{chain.pk}/run/")
    page.fill("#id_inputs", json.dumps(list(range(1, 101))))
    page.click("input[type=submit]")
    wait_for_status(page, "COMPLETED", timeout=60_000)
    assert Run.objects.get(chain=chain).result == 10100
    assert page.locator(".tc-step-row").count() == 2  # the map step once, not 100 rows
    counts = page.inner_text(".tc-map")
    assert "100 items" in counts and "100 done · 0 failed · 0 running · 0 pending" in counts
    assert page.text_content(".tc-kind-map .tc-badge-map") == "× 100"
    shot_sizes(page, "run-map")

    # One item that fails fails the step, naming the item; the page lists the failed item.
    page.goto(f"{live_server.url}/admin/chains/chain/{chain.pk}/run/")
    page.fill("#id_inputs", json.dumps([1, 2, "x", 4]))
    page.click("input[type=submit]")
    wait_for_status(page, "FAILED")
    page.wait_for_selector(".tc-failed-items")
    assert page.locator(".tc-failed-items tbody td").first.inner_text() == "2"
    assert "item 2:" in page.inner_text("#tc-run-panel")
    shot(page, "run-map-failed")


def test_run_now_refuses_inputs_that_do_not_fit_the_schema(admin_page, live_server):
    page = admin_page
    chain = services.chain_save(name="typed", inputs_schema={
        "type": "object", "required": ["count"], "properties": {
            "count": {"type": "integer", "minimum": 1, "description": "How many rows."},
            "label": {"type": "string", "pattern": "^[a-z]+$"}}},
        steps=[StepSpec("flow.wait", {"seconds": 0}, 0)])
    run_now = f"{live_server.url}/admin/chains/chain/{chain.pk}/run/"
    page.goto(run_now)
    count = page.locator(".tc-generated-form input[type=number]").first
    count.wait_for()
    label = page.locator(".tc-generated-form input[type=text]").first
    assert "How many rows." in page.inner_text(".tc-generated-form")
    # What the form itself knows (a minimum) is refused before anything is sent.
    count.fill("0")
    page.click("input[type=submit]")
    assert count.evaluate("input => input.validity.valid") is False
    assert page.url == run_now and not Run.objects.exists()
    # What only the schema says (a pattern) is refused by the service, on the field.
    count.fill("3")
    label.fill("Q4 Report")
    page.click("input[type=submit]")
    page.wait_for_selector("#tc-run-errors")
    reason = "'Q4 Report' does not match '^[a-z]+$'"
    assert f"inputs.label: {reason}" in page.inner_text("#tc-run-errors")
    assert reason in page.inner_text(".tc-generated-form")  # beside the field
    assert page.locator(".tc-generated-form input[type=text]").first.input_value() == (
        "Q4 Report")  # kept as typed
    assert not Run.objects.exists()
    shot_sizes(page, "run-now-refused")
    page.locator(".tc-generated-form input[type=text]").first.fill("report")
    page.click("input[type=submit]")
    page.wait_for_selector("#tc-run-panel")
    assert Run.objects.get(chain=chain).inputs == {"count": 3, "label": "report"}


def test_the_builder_draws_map_conditions_approvals_and_sub_chains(admin_page, live_server):
    page = admin_page
    report = services.chain_save(name="report", steps=[StepSpec("math.add", {"numbers": [1]},
                                                                0)])
    chain = services.chain_save(name="workflows", default_inputs=[1, 2, 3], steps=[
        StepSpec("math.multiply", {"numbers": [2]}, 0, map=True, retry_backoff=5,
                 max_retries=2),
        StepSpec("math.add", {}, 1, name="sum if big",
                 when={"path": "0", "op": ">", "value": 1}),
        StepSpec("flow.approval", {"message": "Send the total?"}, 2),
        StepSpec("flow.chain", {"chain": "report"}, 3)])
    page.goto(f"{live_server.url}/admin/chains/chain/{chain.pk}/change/")
    picture = page.locator("#tc-picture svg")
    assert picture.locator(".tc-kind-map .tc-badge-map").text_content() == "× each"
    assert "when 0 > 1" in picture.locator(".tc-kind-step").text_content()
    assert picture.locator(".tc-kind-approval polygon").count() == 1
    assert picture.locator(".tc-kind-subchain .tc-inner").count() == 1
    assert picture.locator("a.tc-node-link").get_attribute("href") == (
        f"/admin/chains/chain/{report.pk}/change/")
    assert page.is_checked("#id_steps-0-map")
    assert page.input_value("#id_steps-1-when_2") == "1"
    assert page.input_value("#id_steps-0-retry_backoff") == "5"
    shot_sizes(page, "chain-builder-workflows")
    # The live picture follows the second line: a condition typed on screen shows on its node.
    page.select_option("#id_steps-2-when_1", "truthy")
    assert page.is_disabled("#id_steps-2-when_2")  # truthy takes no value
    page.wait_for_function(
        "document.querySelector('#tc-picture').textContent.includes('when input truthy')")
    page.uncheck("#id_steps-0-map")
    page.wait_for_function("!document.querySelector('#tc-picture .tc-kind-map')")
    # Saved, a bad condition is refused on its row; nothing changes.
    page.check("#id_steps-0-map")
    page.select_option("#id_steps-1-when_1", "in")
    page.fill("#id_steps-1-when_2", "3")
    page.click("input[name=_continue]")
    page.wait_for_selector(".errornote")
    assert "op in needs a list as its value" in page.inner_text("#steps-1")
    assert chain.steps.get(position=1).when == {"path": "0", "op": ">", "value": 1}
    shot(page, "chain-builder-workflows-refused")
    page.fill("#id_steps-1-when_2", "[3, 6]")
    page.click("input[name=_continue]")
    page.wait_for_selector("text=was changed successfully")
    assert chain.steps.get(position=1).when == {"path": "0", "op": "in", "value": [3, 6]}
    assert chain.steps.get(position=2).when == {"path": "", "op": "truthy"}
    # The preview reads a flow.chain step's chain from its params form: a chain that does
    # not exist is drawn without a link.
    assert page.locator("#tc-picture a.tc-node-link").count() == 1
    page.locator("#steps-3 [data-django-jsonform-container] input").first.fill("nowhere")
    page.wait_for_function("!document.querySelector('#tc-picture a.tc-node-link')")
    assert "4. run nowhere" in page.text_content("#tc-picture")
