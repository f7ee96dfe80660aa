"""The run timeline and the run comparison in a real browser (Chromium driven by Playwright,
as in test_browser): the run page's timeline at 1, 10 and 200 steps (rows and tick labels that
do not overlap, labels that stay in their column, an axis that stays in view while the rows
scroll, a sub-chain that links to its child's timeline), and two runs of two versions of a
chain compared from the runs list's action and from the run page's Compare button.
Screenshots at 1400x900 under tests/artifacts/: timeline-1, timeline-10, timeline-200,
compare, compare-picker."""
import random
import uuid
from datetime import timedelta

from django.utils import timezone

from chains import services
from chains.models import MapItem, Run, RunStatus, StepRun
from chains.presets import Preset, StepSpec
from tests.factories import make_run
from tests.test_browser import BROWSER_MARKS, view_shot
from tests.test_browser import admin_page as admin_page  # noqa: F401 (a fixture)
from tests.test_browser import browser as browser  # noqa: F401 (a fixture)

pytestmark = BROWSER_MARKS

ADD = StepSpec("math.add", {"numbers": [1]}, 0)



def stamp(run: Run, index: int, *, status: str, start: float | None = None,
          end: float | None = None, t0=None, **fields) -> None:
    """The step's status and its start and end, `start` and `end` seconds after `t0`."""
    StepRun.objects.filter(run=run, index=index).update(
        status=status, started_at=None if start is None else t0 + timedelta(seconds=start),
        finished_at=None if end is None else t0 + timedelta(seconds=end), **fields)


def finished(run: Run, *, status: str, t0, seconds: float, error: str = "",
             result=None) -> None:
    Run.objects.filter(id=run.id).update(
        status=status, created_at=t0, published_at=t0 + timedelta(seconds=0.05), started_at=t0,
        finished_at=t0 + timedelta(seconds=seconds), error=error, result=result,
        steps_done=run.step_runs.filter(status__in=[RunStatus.COMPLETED,
                                                    RunStatus.SKIPPED]).count())


def one_step_run(t0) -> Run:
    run = make_run(StepSpec("math.add", {"numbers": [1, 2]}, 0))
    stamp(run, 0, status=RunStatus.COMPLETED, start=0.3, end=1.45, t0=t0, result=4)
    finished(run, status=RunStatus.COMPLETED, t0=t0, seconds=1.45, result=4)
    return run


def ten_step_run(t0) -> tuple[Run, Run]:
    """Every kind of row: a step, two in parallel, a map over 100 items, a skipped step, an
    approval, a sub-chain with its child run, a failure and the two steps it cancelled."""
    run = make_run(
        StepSpec("data.load", {"path": "orders.csv"}, 0, name="load the orders"),
        StepSpec("math.add", {"numbers": [1]}, 1, name="add one"),
        StepSpec("math.multiply", {"numbers": [2]}, 1, name="double"),
        StepSpec("math.multiply", {"numbers": [3]}, 2, name="triple each", map=True),
        StepSpec("math.add", {"numbers": [5]}, 3, name="only when large",
                 when={"path": "", "op": ">", "value": 1000}),
        StepSpec("flow.approval", {"message": "Ship it?"}, 4, name="sign-off"),
        StepSpec("flow.chain", {"chain": "report"}, 5, name="report"),
        StepSpec("math.divide", {"numbers": [0]}, 6, name="share per region"),
        StepSpec("math.add", {"numbers": [1]}, 7),
        StepSpec("math.add", {"numbers": [2]}, 8))
    c, f = RunStatus.COMPLETED, RunStatus.FAILED
    stamp(run, 0, status=c, start=0.2, end=1.5, t0=t0)
    stamp(run, 1, status=c, start=1.6, end=2.4, t0=t0)
    stamp(run, 2, status=c, start=2.1, end=3.0, t0=t0)  # waited for a free worker
    stamp(run, 3, status=c, start=3.1, end=12.0, t0=t0, items_total=100, items_done=100)
    map_step = run.step_runs.get(index=3)
    rng = random.Random(3)
    items = []
    for i in range(100):
        begin = 3.2 + rng.uniform(0, 4.0)
        items.append(MapItem(step_run=map_step, index=i, task_id=str(uuid.uuid4()), status=c,
                             started_at=t0 + timedelta(seconds=begin),
                             finished_at=t0 + timedelta(seconds=begin + rng.uniform(0.3, 4.5))))
    MapItem.objects.bulk_create(items)
    stamp(run, 4, status=RunStatus.SKIPPED, end=12.1, t0=t0)
    stamp(run, 5, status=c, start=12.2, end=19.0, t0=t0)  # waited for a person
    stamp(run, 6, status=c, start=19.1, end=23.0, t0=t0)
    child = make_run(ADD, parent_step=run.step_runs.get(index=6))
    stamp(child, 0, status=c, start=19.3, end=22.8, t0=t0)
    finished(child, status=c, t0=t0 + timedelta(seconds=19.1), seconds=3.8)
    stamp(run, 7, status=f, start=23.4, end=23.5, t0=t0, error="step 8 (math.divide): "
          "division by zero")
    stamp(run, 8, status=RunStatus.CANCELLED, end=23.5, t0=t0)
    stamp(run, 9, status=RunStatus.CANCELLED, end=23.5, t0=t0)
    finished(run, status=f, t0=t0, seconds=23.5, error="step 8 (math.divide): division by zero")
    return run, child


def two_hundred_step_run(t0) -> Run:
    """200 steps: mostly one per stage, every tenth stage three in parallel; each waits up
    to half a second in its queue and runs 0.1 to 3 s."""
    rng = random.Random(200)
    specs, stage = [], 0
    while len(specs) < 200:
        width = 3 if stage % 10 == 9 else 1
        for _ in range(min(width, 200 - len(specs))):
            specs.append(StepSpec("math.add", {"numbers": [1]}, stage,
                                  name=f"add one to the running total, part {len(specs) + 1}"))
        stage += 1
    run = make_run(*specs)
    clock = 0.0
    rows = list(run.step_runs.order_by("index"))
    by_stage: dict[int, list[StepRun]] = {}
    for row in rows:
        by_stage.setdefault(row.stage, []).append(row)
    for members in by_stage.values():
        ends = []
        for row in members:
            start = clock + rng.uniform(0.02, 0.5)
            end = start + rng.uniform(0.1, 3.0)
            row.status, row.result = RunStatus.COMPLETED, 1
            row.started_at, row.finished_at = (t0 + timedelta(seconds=start),
                                               t0 + timedelta(seconds=end))
            ends.append(end)
        clock = max(ends)
    StepRun.objects.bulk_update(rows, ["status", "result", "started_at", "finished_at"])
    finished(run, status=RunStatus.COMPLETED, t0=t0, seconds=clock, result=200)
    return run


def check_timeline(page, rows: int) -> None:
    """The timeline has `rows` rows; labels neither overlap nor leave their column; tick
    labels do not overlap; the axis stays in view while the rows scroll."""
    page.wait_for_selector("#timeline .tc-timeline-body")
    assert page.locator("#timeline .tc-tl-row").count() == rows
    boxes = page.eval_on_selector_all(
        "#timeline .tc-tl-label", "ls => ls.map(l => l.getBoundingClientRect().toJSON())")
    body = page.eval_on_selector("#timeline .tc-timeline-body",
                                 "e => e.getBoundingClientRect().toJSON()")
    plot_x = 240  # chains.timeline.PLOT_X
    for before, after in zip(boxes, boxes[1:], strict=False):
        assert before["bottom"] <= after["top"] + 0.5, "two labels overlap"
    assert all(box["right"] <= body["left"] + plot_x - 4 for box in boxes), (
        "a label runs into the plot")
    ticks = page.eval_on_selector_all(
        "#timeline .tc-tl-tick", "ts => ts.map(t => t.getBoundingClientRect().toJSON())")
    assert len(ticks) >= 2
    for before, after in zip(ticks, ticks[1:], strict=False):
        assert before["right"] + 4 <= after["left"], "two tick labels overlap"
    durations = page.eval_on_selector_all(
        "#timeline .tc-tl-duration", "ts => ts.map(t => t.getBoundingClientRect().right)")
    assert max(durations) <= body["right"], "a duration is cut off"
    if rows > 20:  # the rows scroll inside their box, under an axis that stays in view
        page.eval_on_selector(".tc-timeline-scroll", "e => { e.scrollTop = 1200; }")
        page.wait_for_timeout(100)
        axis_top, box_top = page.evaluate(
            "[document.querySelector('.tc-timeline-axis').getBoundingClientRect().top,"
            " document.querySelector('.tc-timeline-scroll').getBoundingClientRect().top]")
        assert abs(axis_top - box_top) <= 1.5
        page.eval_on_selector(".tc-timeline-scroll", "e => { e.scrollTop = 0; }")


def test_the_run_timeline_at_1_10_and_200_steps(admin_page, live_server):  # noqa: F811
    page = admin_page
    t0 = timezone.now() - timedelta(hours=1)
    one = one_step_run(t0)
    page.goto(f"{live_server.url}/admin/chains/run/{one.pk}/change/")
    check_timeline(page, 1)
    assert page.get_attribute("#timeline .tc-tl-row", "data-status") == "COMPLETED"
    view_shot(page, "timeline-1", "#tc-run-panel")

    ten, child = ten_step_run(t0)
    page.goto(f"{live_server.url}/admin/chains/run/{ten.pk}/change/")
    check_timeline(page, 10)
    assert page.locator("#timeline .tc-tl-kind-map .tc-tl-spread").count() == 1
    assert page.locator("#timeline .tc-tl-kind-map .tc-tl-band").count() == 1
    assert page.locator("#timeline .tc-tl-skipped .tc-tl-marker").count() == 1
    link = page.get_attribute("#timeline a.tc-tl-link", "href")
    assert link == f"/admin/chains/run/{child.pk}/change/#timeline"
    view_shot(page, "timeline-10", "#timeline")
    page.click("#timeline a.tc-tl-link")  # the sub-chain opens its child run's timeline
    page.wait_for_url(f"**/{child.pk}/change/#timeline")
    check_timeline(page, 1)

    many = two_hundred_step_run(t0)
    page.goto(f"{live_server.url}/admin/chains/run/{many.pk}/change/")
    check_timeline(page, 200)
    view_shot(page, "timeline-200", "#timeline")

    # While the run goes on, the panel is redrawn every second: the rows keep their scroll,
    # and the last step's bar runs to the "now" line.
    Run.objects.filter(id=many.id).update(status=RunStatus.RUNNING, finished_at=None)
    StepRun.objects.filter(run=many, index=199).update(status=RunStatus.RUNNING,
                                                       finished_at=None)
    page.goto(f"{live_server.url}/admin/chains/run/{many.pk}/change/")
    page.wait_for_selector("#timeline .tc-tl-now", state="attached")  # a line: no width
    page.eval_on_selector(".tc-timeline-scroll", "e => { e.scrollTop = 1500; }")
    page.eval_on_selector("#timeline", "e => { e.dataset.drawn = 'before'; }")
    page.wait_for_function("document.getElementById('timeline').dataset.drawn !== 'before'",
                           timeout=5000)  # the panel was redrawn
    assert page.eval_on_selector(".tc-timeline-scroll", "e => e.scrollTop") == 1500
    assert page.locator("#timeline .tc-tl-open[data-step='199']").count() == 1


def test_compare_two_runs_of_two_versions(admin_page, live_server):  # noqa: F811
    page = admin_page
    t0 = timezone.now() - timedelta(hours=2)
    chain = services.chain_save(name="orders", steps=[
        StepSpec("math.add", {"numbers": [1]}, 0, name="add the fee"),
        StepSpec("math.multiply", {"numbers": [2]}, 1, name="apply the rate"),
        StepSpec("math.add", {"numbers": [10]}, 2, name="round up")])

    def run_of(inputs):
        return services.run_create(
            preset=Preset(specs=services.chain_step_specs(chain), inputs=inputs), chain=chain,
            trigger="admin", version=services.current_version(chain))

    old = run_of(5)
    stamp(old, 0, status=RunStatus.COMPLETED, start=0.1, end=0.3, t0=t0, result=6)
    stamp(old, 1, status=RunStatus.COMPLETED, start=0.4, end=0.6, t0=t0, result=12)
    stamp(old, 2, status=RunStatus.COMPLETED, start=0.7, end=0.9, t0=t0, result=22)
    finished(old, status=RunStatus.COMPLETED, t0=t0, seconds=0.9, result=22)
    services.chain_save(chain=chain, name="orders", steps=[
        StepSpec("math.add", {"numbers": [1]}, 0, name="add the fee"),
        StepSpec("math.multiply", {"numbers": [2.5]}, 1, name="apply the rate"),
        StepSpec("math.add", {"numbers": [10]}, 2, name="round up"),
        StepSpec("math.divide", {"numbers": [0]}, 3, name="split by region")])
    t1 = t0 + timedelta(minutes=30)
    new = run_of(5)
    stamp(new, 0, status=RunStatus.COMPLETED, start=0.1, end=0.3, t0=t1, result=6)
    stamp(new, 1, status=RunStatus.COMPLETED, start=0.4, end=2.6, t0=t1, result=15)
    stamp(new, 2, status=RunStatus.COMPLETED, start=2.7, end=2.9, t0=t1, result=25)
    stamp(new, 3, status=RunStatus.FAILED, start=3.0, end=3.1, t0=t1,
          error="step 4 (math.divide): division by zero")
    finished(new, status=RunStatus.FAILED, t0=t1, seconds=3.1,
             error="step 4 (math.divide): division by zero")
    other = make_run(ADD)  # another chain's run: not offered by the picker

    # From the runs list: select the two runs, "Compare selected runs".
    page.goto(f"{live_server.url}/admin/chains/run/")
    for run in (old, new):
        page.check(f"input.action-select[value='{run.pk}']")
    page.select_option("select[name=action]", "compare_selected_runs")
    page.click("button[name=index]")
    page.wait_for_selector("#tc-compare-steps")
    assert f"a={old.pk}" in page.url and f"b={new.pk}" in page.url  # the older one first
    versions = page.inner_text("#tc-compare-versions")
    assert "version 1 → version 2" in versions and "step 2 params" in versions
    assert "step 4 added" in versions
    rows = page.locator("#tc-compare-steps tbody tr")
    assert rows.count() == 4
    assert [rows.nth(i).get_attribute("data-change") for i in range(4)] == [
        "same", "changed", "changed", "added"]
    marked = page.eval_on_selector_all(
        "#tc-compare-steps tr[data-step='1'] td.tc-differs", "cs => cs.length")
    assert marked == 6  # duration, params and result, on each side
    fields = dict(page.eval_on_selector_all(
        "#tc-compare-runs tr[data-field]",
        "rs => rs.map(r => [r.dataset.field, r.querySelector('td').className])"))
    assert "tc-differs" in fields["status"] and "tc-differs" not in fields["chain"]
    assert "tc-differs" in fields["version"] and "tc-differs" not in fields["inputs"]
    view_shot(page, "compare", full_page=True)

    # From the run page: Compare, pick the other run of the chain.
    page.goto(f"{live_server.url}/admin/chains/run/{new.pk}/change/")
    page.click("#tc-compare")
    page.wait_for_selector("#tc-compare-form")
    picker = page.inner_text("#tc-compare-form")
    assert str(old.pk)[:8] in picker and str(other.pk)[:8] not in picker
    view_shot(page, "compare-picker", full_page=True)
    page.click("#tc-compare-go")
    page.wait_for_selector("#tc-compare-steps")
    assert f"a={new.pk}" in page.url and f"b={old.pk}" in page.url
    assert page.get_attribute("#tc-compare-steps tr[data-step='3']", "data-change") == "removed"
