"""The run timeline: its geometry (chains.timeline) at 1, 10 and 200 steps, a map step's
spread, skipped and waiting steps; the queued times (selectors.step_queued_times) of first and
later stages and of retried steps; the map items' spread in one query; the run page's SVG and
`queued_at` in GET /api/runs/{id}/."""
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chains import selectors
from chains.models import AttemptEnd, MapItem, Run, RunStatus, StepAttempt, StepRun
from chains.presets import StepSpec
from chains.timeline import (
    DENSE_ROW_H,
    LABEL_CHARS,
    MAP,
    PLOT_W,
    PLOT_X,
    ROW_H,
    SUBCHAIN,
    Spread,
    Step,
    axis_ticks,
    cut,
    nice_step,
    run_timeline,
    seconds_text,
    tick_text,
)
from tests.factories import make_run, make_user

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sequential(n: int, *, each: float = 1.0, wait: float = 0.25, label: str = "math.add"
               ) -> list[Step]:
    """`n` steps one after the other: each waits `wait` s in its queue, then runs `each` s."""
    steps = []
    for i in range(n):
        queued = at(i * (each + wait))
        steps.append(Step(index=i, label=label, status="COMPLETED", stage=i, queued_at=queued,
                          started_at=queued + timedelta(seconds=wait),
                          finished_at=queued + timedelta(seconds=wait + each)))
    return steps


# --- geometry ---------------------------------------------------------------------------------


def test_one_step_fills_the_axis_from_its_queueing_to_its_end():
    timeline = run_timeline(sequential(1, each=3, wait=1), now=at(100))
    (row,) = timeline.rows
    assert (timeline.start, timeline.end, timeline.span) == (at(0), at(4), "4.00 s")
    assert timeline.height == ROW_H and not timeline.empty
    # The wait is the first quarter of the plot, the run the rest.
    assert (row.wait.x, row.wait.w) == (PLOT_X, PLOT_W / 4)
    assert (row.bar.x, row.bar.end) == (PLOT_X + PLOT_W / 4, PLOT_X + PLOT_W)
    assert (row.label, row.duration, row.marker) == ("1. math.add", "3.00 s", None)
    assert "waited 1.00 s in its queue" in row.title and "ran 3.00 s" in row.title
    assert [t.label for t in timeline.ticks] == ["0", "0.5 s", "1.0 s", "1.5 s", "2.0 s",
                                                 "2.5 s", "3.0 s", "3.5 s", "4.0 s"]
    assert timeline.ticks[0].anchor == "start" and timeline.ticks[-1].anchor == "end"
    assert timeline.now_x is None  # a finished run has no "now"
    assert timeline.legend == {"wait", "ran"}  # the legend names what is drawn, no more


def test_ten_steps_follow_each_other_without_overlap_and_ticks_have_room():
    timeline = run_timeline(sequential(10), now=at(100))
    rows = timeline.rows
    assert [row.y for row in rows] == [i * ROW_H for i in range(10)]
    for before, after in zip(rows, rows[1:], strict=False):
        assert before.bar.end <= after.wait.x + 0.2  # the next is queued as one ends
        assert after.wait.end == pytest.approx(after.bar.x, abs=0.2)
    assert rows[-1].bar.end == PLOT_X + PLOT_W
    assert 4 <= len(timeline.ticks) <= 9
    gaps = [b.x - a.x for a, b in zip(timeline.ticks, timeline.ticks[1:], strict=False)]
    assert min(gaps) >= 70  # a label is at most ~60 px wide
    assert timeline.ticks[-1].label == "12 s"
    # Every other stage is shaded: parallel steps read as one group.
    assert [row.stripe for row in rows[:4]] == [False, True, False, True]


def test_two_hundred_steps_are_dense_rows_with_cut_labels_and_full_titles():
    long = "a step with a name far too long to fit in the label column"
    timeline = run_timeline(sequential(200, label=long), now=at(10_000))
    assert len(timeline.rows) == 200
    assert timeline.height == 200 * DENSE_ROW_H
    first, last = timeline.rows[0], timeline.rows[-1]
    # Cut in the middle, at words: the end of a name is often what tells rows apart.
    assert first.label == "1. a step with a name… column"
    assert len(last.label) <= LABEL_CHARS and last.label.startswith("200. a step")
    assert cut("24. add one to the running total, part 24") == "24. add one to the… part 24"
    assert cut("1. " + "x" * 60) == "1. " + "x" * 28 + "…"  # no word to cut at
    assert long in last.title and "200." in last.title
    # Each bar is at least visible (2 px) and stays on the plot.
    assert all(row.bar.w >= 2 and row.bar.end <= PLOT_X + PLOT_W + 0.1 for row in timeline.rows)
    assert [t.label for t in timeline.ticks] == ["0", "1 min", "2 min", "3 min", "4 min"]


def test_a_map_step_is_one_bar_with_its_items_spread_and_band():
    spread = Spread(first_start=at(1), last_finish=at(9), p10=at(3), p90=at(8), finished=50)
    step = Step(index=0, label="double", status="COMPLETED", kind=MAP, queued_at=at(0),
                started_at=at(0.5), finished_at=at(10), spread=spread)
    (row,) = run_timeline([step], now=at(20)).rows
    scale = PLOT_W / 10
    assert (row.bar.x, row.bar.end) == pytest.approx((PLOT_X + 0.5 * scale, PLOT_X + PLOT_W))
    assert (row.spread.x, row.spread.end) == pytest.approx((PLOT_X + scale, PLOT_X + 9 * scale))
    assert (row.band.x, row.band.end) == pytest.approx((PLOT_X + 3 * scale, PLOT_X + 8 * scale))
    assert row.bar.x < row.spread.x < row.band.x < row.band.end < row.spread.end < row.bar.end
    assert "50 items finished" in row.title and "90% by 7.00 s" in row.title


def test_skipped_is_a_marker_waiting_runs_to_now_and_a_sub_chain_links():
    steps = [
        Step(index=0, label="add", status="COMPLETED", stage=0, queued_at=at(0),
             started_at=at(1), finished_at=at(2)),
        Step(index=1, label="only big", status="SKIPPED", stage=1, queued_at=at(2),
             started_at=None, finished_at=at(2.5)),
        Step(index=2, label="ship it?", status="WAITING", stage=2, kind="approval",
             queued_at=at(2.5), started_at=at(3)),
        Step(index=3, label="child", status="PENDING", stage=3, kind=SUBCHAIN,
             href="/admin/chains/run/x/change/#timeline"),
    ]
    timeline = run_timeline(steps, now=at(12), open_run=True)
    done, skipped, waiting, later = timeline.rows
    assert skipped.bar is None and skipped.marker == pytest.approx(PLOT_X + 2.5 * PLOT_W / 12)
    assert skipped.duration == "skipped" and skipped.marker_points
    # Open: the approval's span reaches now, the end of the axis, with the "now" line.
    assert timeline.end == at(12) and timeline.now_x == PLOT_X + PLOT_W
    assert waiting.open and waiting.bar.end == PLOT_X + PLOT_W
    assert "waited so far 9.00 s" in waiting.title
    assert (later.wait, later.bar, later.duration) == (None, None, "-")  # not queued yet
    assert later.href.endswith("#timeline")
    assert timeline.legend == {"wait", "ran", "waited", "skipped"}


def test_nothing_queued_is_an_empty_timeline():
    timeline = run_timeline([Step(index=0, label="add", status="PENDING")], now=T0)
    assert timeline.empty and timeline.ticks == [] and len(timeline.rows) == 1


@pytest.mark.parametrize(("span", "step", "labels"), [
    (0.004, 0.0005, None), (0.3, 0.05, ["0", "50 ms", "100 ms"]),
    (90, 15, ["0", "15 s", "30 s", "45 s", "1 min", "1 min 15 s"]),
    (7200, 900, ["0", "15 min", "30 min", "45 min", "1 h", "1 h 15 min"]),
])
def test_tick_spacing_and_labels(span, step, labels):
    if labels is None:  # below the finest spacing: still at most eight ticks
        assert nice_step(span) == 0.001
        return
    assert nice_step(span) == step
    ticks = axis_ticks(span, PLOT_W / span)
    assert [t.label for t in ticks][:len(labels)] == labels
    assert len(ticks) <= 9


def test_durations_read_as_people_say_them():
    assert [seconds_text(s) for s in (0.25, 0.0042, 1.5, 42, 125, 4800, 200_000)] == [
        "250 ms", "4.2 ms", "1.50 s", "42.0 s", "2 min 5 s", "1 h 20 min", "2 d 7 h"]
    assert tick_text(1.5, 0.5) == "1.5 s" and tick_text(0.15, 0.05) == "150 ms"


# --- queued times and spreads from the rows -----------------------------------------------------


def stamp(run: Run, index: int, **fields) -> None:
    StepRun.objects.filter(run=run, index=index).update(**fields)


@pytest.mark.django_db
def test_queued_is_the_runs_publishing_then_the_end_of_the_stage_before():
    run = make_run(StepSpec("math.add", {"numbers": [1]}, 0),
                   StepSpec("math.add", {"numbers": [1]}, 1),
                   StepSpec("math.add", {"numbers": [2]}, 1),
                   StepSpec("math.add", {}, 2), StepSpec("math.add", {}, 3))
    Run.objects.filter(id=run.id).update(created_at=at(0), published_at=at(0.2))
    stamp(run, 0, status="COMPLETED", started_at=at(0.5), finished_at=at(1))
    stamp(run, 1, status="COMPLETED", started_at=at(1.1), finished_at=at(2))
    stamp(run, 2, status="COMPLETED", started_at=at(1.2), finished_at=at(3))
    stamp(run, 3, status="RUNNING", started_at=at(3.5))
    run.refresh_from_db()
    step_runs = selectors.step_runs_with_results(run)
    queued = {sr.index: q for sr in step_runs
              for q in [selectors.step_queued_times(run, step_runs)[sr.id]]}
    assert queued == {0: at(0.2), 1: at(1), 2: at(1), 3: at(3), 4: None}


@pytest.mark.django_db
def test_queued_of_a_step_tried_again_is_its_attempt_before_or_the_retry():
    run = make_run(StepSpec("math.add", {"numbers": [1]}, 0),
                   StepSpec("math.divide", {"numbers": [2]}, 1))
    # Step 1 finished long ago; step 2 failed at 5 s and the run was retried at 60 s (the
    # canvas published again then); step 2 started again at 61 s.
    Run.objects.filter(id=run.id).update(created_at=at(0), published_at=at(60))
    stamp(run, 0, status="COMPLETED", started_at=at(0.5), finished_at=at(1))
    stamp(run, 1, status="COMPLETED", started_at=at(61), finished_at=at(62))
    second = run.step_runs.get(index=1)
    StepAttempt.objects.create(step_run=second, number=1, task_id=str(uuid.uuid4()),
                               status="FAILED", started_at=at(4), finished_at=at(5),
                               ended_by=AttemptEnd.RUN_RETRIED)
    run.refresh_from_db()
    step_runs = selectors.step_runs_with_results(run)
    queued = selectors.step_queued_times(run, step_runs)
    # The first step keeps its own queueing: the retry's publishing came after it started.
    assert [queued[sr.id] for sr in step_runs] == [at(0), at(60)]
    # A Celery retry (no new publishing): queued again when the attempt before ended.
    Run.objects.filter(id=run.id).update(published_at=at(0.1))
    stamp(run, 1, started_at=at(7), finished_at=at(8))
    run.refresh_from_db()
    step_runs = selectors.step_runs_with_results(run)
    assert selectors.step_queued_times(run, step_runs)[step_runs[1].id] == at(5)


@pytest.mark.django_db
def test_map_item_spreads_take_one_query_for_every_map_step():
    run = make_run(StepSpec("math.multiply", {"numbers": [2]}, 0, map=True),
                   StepSpec("math.multiply", {"numbers": [2]}, 1, map=True))
    first, second = run.step_runs.order_by("index")
    # 20 items finishing at 1..20 s (started at 0.5..); two still running.
    MapItem.objects.bulk_create([
        MapItem(step_run=first, index=i, task_id=str(uuid.uuid4()), status="COMPLETED",
                started_at=at(i * 0.5 + 0.5), finished_at=at(i + 1)) for i in range(20)
    ] + [MapItem(step_run=first, index=20 + i, task_id=str(uuid.uuid4()), status="RUNNING",
                 started_at=at(0.1)) for i in range(2)]
      + [MapItem(step_run=second, index=0, task_id=str(uuid.uuid4()), status="PENDING")])
    with CaptureQueriesContext(connection) as captured:
        spreads = selectors.map_item_spreads([first.id, second.id])
    assert len(captured) == 1
    assert spreads == {first.id: {"first_start": at(0.1), "last_finish": at(20),
                                  "finished": 20, "p10": at(2), "p90": at(18)}}
    assert selectors.map_item_spreads([]) == {}


# --- the run page and the API --------------------------------------------------------------------


@pytest.mark.django_db
def test_the_run_page_draws_the_timeline_and_the_api_carries_queued_at(client):
    admin = make_user("tl-admin", superuser=True)
    run = make_run(StepSpec("math.add", {"numbers": [1]}, 0, name="first <b>"),
                   StepSpec("math.add", {"numbers": [1]}, 1), user=admin)
    Run.objects.filter(id=run.id).update(created_at=at(0), published_at=at(0.1),
                                         status=RunStatus.COMPLETED, started_at=at(0.2),
                                         finished_at=at(2))
    stamp(run, 0, status="COMPLETED", started_at=at(0.2), finished_at=at(1))
    stamp(run, 1, status="FAILED", started_at=at(1.5), finished_at=at(2), error="no")
    client.force_login(admin)
    page = client.get(reverse("admin:chains_run_change", args=[run.pk])).content.decode()
    assert 'id="timeline"' in page and 'class="tc-timeline-body"' in page
    assert 'data-step="1" data-status="FAILED"' in page
    assert "1. first &lt;b&gt;" in page and "<b>" not in page.split('id="timeline"')[1]
    assert "chains/timeline.css" in page
    detail = client.get(f"/api/runs/{run.id}/").json()
    assert [(s["queued_at"], s["started_at"], s["finished_at"]) for s in detail["steps"]] == [
        ("2026-11-29T12:00:00.100000Z", "2026-11-29T12:00:00.200000Z",
         "2026-11-29T12:00:01Z"),
        ("2026-11-29T12:00:01Z", "2026-11-29T12:00:01.500000Z", "2026-11-29T12:00:02Z")]
