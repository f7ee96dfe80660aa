"""Chain versions and the audit trail in a real browser (Chromium driven by Playwright, as in
test_browser): change a chain twice in the builder, look at its versions and the diff, restore
the first version, see the run page's "version 1 (current: 4)" line lead to the diff, and read
the audit trail. Screenshots at 1400x900 under tests/artifacts/: versions, version-restore,
versions-restored, run-version, audit-list."""
from datetime import timedelta

from django.utils import timezone

from chains import services
from chains.models import Chain, Run, RunStatus, StepRun
from chains.presets import StepSpec
from tests.factories import make_run
from tests.test_browser import BROWSER_MARKS, add_step, view_shot
from tests.test_browser import admin_page as admin_page  # noqa: F401 (a fixture)
from tests.test_browser import browser as browser  # noqa: F401 (a fixture)

pytestmark = BROWSER_MARKS



def test_change_a_chain_twice_restore_the_first_version_and_read_the_trail(admin_page,
                                                                          live_server):
    page = admin_page
    chain = services.chain_save(name="nightly totals", description="adds the numbers",
                                steps=[StepSpec("math.add", {"numbers": [1, 2]}, 0)],
                                source="command")
    # a run of version 1, finished (no worker needed to read its page)
    run = make_run(StepSpec("math.add", {"numbers": [1, 2]}, 0), chain=chain,
                   version=services.current_version(chain), inputs=1)
    start = timezone.now()
    StepRun.objects.filter(run=run).update(status=RunStatus.COMPLETED, result=4, attempts=1,
                                           started_at=start + timedelta(seconds=0.1),
                                           finished_at=start + timedelta(seconds=0.4))
    Run.objects.filter(id=run.id).update(status=RunStatus.COMPLETED, result=4, steps_done=1,
                                         started_at=start,
                                         finished_at=start + timedelta(seconds=0.4))

    # change 1: the description; change 2: a second step
    change_url = f"{live_server.url}/admin/chains/chain/{chain.pk}/change/"
    page.goto(change_url)
    page.fill("#id_description", "adds the numbers, then doubles the total")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    add_step(page, 1, step_type="math.multiply", stage=1)
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    assert list(chain.versions.order_by("number").values_list("number", "source")) == [
        (1, "command"), (2, "admin"), (3, "admin")]

    # the chain page links its versions; the page diffs the previous with the current
    page.click("#tc-versions-link")
    page.wait_for_selector("#tc-diff")
    assert page.locator(".tc-version-row").count() == 3
    assert page.locator(".tc-version-current").get_attribute("data-number") == "3"
    assert "What changed from version 2 to version 3" in page.inner_text("#tc-diff h2")
    assert "math.multiply · stage 1" in page.inner_text("#tc-diff")
    # pick two others: 1 against 3
    page.check("input[name=a][value='1']")
    page.click("#tc-compare")
    page.wait_for_selector("#tc-diff h2:has-text('from version 1 to version 3')")
    diff = page.inner_text("#tc-diff")
    assert "description" in diff and "then doubles the total" in diff and "step 2" in diff
    view_shot(page, "versions")

    # restore version 1: a confirmation saying what it changes, then a new version
    page.click("#tc-restore-1")
    page.wait_for_selector("#tc-confirm-restore")
    assert "removed" in page.inner_text("#tc-diff")
    view_shot(page, "version-restore")
    page.click("#tc-confirm-restore")
    page.wait_for_selector(".messagelist .success")
    assert "Restored version 1 as version 4" in page.inner_text(".messagelist")
    assert page.locator(".tc-version-current").get_attribute("data-number") == "4"
    assert "What changed from version 3 to version 4" in page.inner_text("#tc-diff h2")
    view_shot(page, "versions-restored")
    chain = Chain.objects.get(pk=chain.pk)
    assert chain.description == "adds the numbers"
    assert [s.step_type for s in chain.steps.all()] == ["math.add"]

    # the run page says which version it ran and links to the diff with the current one
    page.goto(f"{live_server.url}/admin/chains/run/{run.pk}/change/")
    line = page.locator("#tc-run-version")
    assert line.inner_text() == "Chain version 1 (current: 4)"
    view_shot(page, "run-version")
    page.click("#tc-run-version-link")
    page.wait_for_selector("#tc-diff")
    assert "No difference: versions 1 and 4 have the same definition." in page.inner_text(
        "#tc-diff")

    # the audit trail: every change, by whom, from where; nothing to edit
    page.goto(f"{live_server.url}/admin/auditlog/logentry/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 5  # created (command), changed twice, restored, run started
    assert rows.first.locator(".field-event").inner_text() == "chain changed"
    assert rows.first.locator(".field-user").inner_text() == "boss"
    assert rows.first.locator(".field-source").inner_text() == "admin"
    assert page.locator(".object-tools .addlink").count() == 0  # nothing to add
    assert page.locator("#action-toggle").count() == 0  # nor actions (delete) to take
    view_shot(page, "audit-list")
    page.click("#result_list tbody tr:first-child .field-time a")
    page.wait_for_selector(".field-changes_shown")
    assert page.locator("input[name=_save]").count() == 0
    assert page.locator(".deletelink").count() == 0
    assert "version: 4" in page.inner_text(".field-data_shown")
    view_shot(page, "audit-entry")
    page.click("a.tc-audit-diff")  # what that change did: the diff that wrote version 4
    page.wait_for_selector("#tc-diff h2:has-text('from version 3 to version 4')")
