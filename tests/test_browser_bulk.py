"""Bulk actions in a real browser (Chromium driven by Playwright, as in test_browser): filter
the run list, follow "all N runs matching this filter", read the counts per status on the
confirmation page, retry them and read the result message. Screenshots at 1400x900 under
tests/artifacts/: bulk-confirm, bulk-result."""


from chains import services
from chains.models import Run, RunStatus
from chains.presets import StepSpec
from tests.factories import make_run
from tests.test_browser import BROWSER_MARKS, view_shot
from tests.test_browser import admin_page as admin_page  # noqa: F401 (a fixture)
from tests.test_browser import browser as browser  # noqa: F401 (a fixture)

pytestmark = BROWSER_MARKS



def test_retry_all_failed_runs_of_a_chain_from_the_run_list(admin_page, live_server, broker):
    page = admin_page
    steps = [StepSpec("math.add", {"numbers": [1]}, 0),
             StepSpec("math.divide", {"numbers": [0]}, 1)]
    chain = services.chain_save(name="nightly import", steps=steps)
    made = {status: [make_run(*steps, chain=chain) for _ in range(n)]
            for status, n in ((RunStatus.FAILED, 3), (RunStatus.COMPLETED, 2),
                              (RunStatus.CANCELLED, 1))}
    for status, runs in made.items():
        Run.objects.filter(id__in=[r.id for r in runs]).update(status=status)
    make_run(*steps)  # another chain's run: not matched

    page.goto(f"{live_server.url}/admin/chains/run/?chain__id__exact={chain.id}")
    link = page.locator("#tc-bulk-all")
    assert link.inner_text() == "Cancel, retry or delete all 6 runs matching this filter…"
    link.click()
    page.wait_for_selector("#tc-bulk-form")
    counts = page.locator(".tc-bulk-counts tbody tr").all_inner_texts()
    assert [" ".join(row.split()) for row in counts] == ["COMPLETED 2", "FAILED 3", "CANCELLED 1"]
    assert "Nothing has been done yet" in page.inner_text("#content-main")
    page.check("#tc-bulk-retry")
    view_shot(page, "bulk-confirm")
    assert [Run.objects.get(id=r.id).status for r in made[RunStatus.FAILED]] == [
        RunStatus.FAILED] * 3

    page.click("#tc-bulk-go")
    page.wait_for_selector(".messagelist")
    assert page.inner_text(".messagelist") == "Retried 4 runs. Skipped 2: 2 wrong status."
    view_shot(page, "bulk-result")
    retried = made[RunStatus.FAILED] + made[RunStatus.CANCELLED]
    assert {Run.objects.get(id=r.id).status for r in retried} == {RunStatus.PENDING}
