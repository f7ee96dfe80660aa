"""The timeline of a run: a Gantt chart of its steps on one time axis, as SVG geometry.

Each step is a row: the time its message waited in a queue (queued -> started, a light bar),
then the time it ran (started -> finished, or -> now while it runs), coloured by status. A map
step is one bar with its items' spread over it: a line from the first item's start to the
last item's finish and a lighter band from the 10th to the 90th percentile of the items'
finish times. An approval or a sub-chain draws the span it waited for a person or a child run
(outlined: no worker is held meanwhile); a skipped step is a marker. Nothing here reads the
database: chains.admin.timeline turns a run's rows into `Step`s."""
import math
from dataclasses import dataclass
from datetime import datetime

# Columns: the label, the plot, the duration.
WIDTH = 1000
LABEL_W, DURATION_W, GAP = 230, 78, 10
PLOT_X = LABEL_W + GAP
PLOT_W = WIDTH - PLOT_X - GAP - DURATION_W
AXIS_H = 26
ROW_H, BAR_H = 22, 12
# Rows past this many are drawn closer together (200 steps stay a scroll, not a wall).
DENSE_AFTER, DENSE_ROW_H, DENSE_BAR_H = 40, 18, 10
LABEL_CHARS = 32
# At most about this many ticks on the axis (each label has ~85 px).
MAX_TICKS = 8
# The narrowest drawn span, so a step of a millisecond is still seen.
MIN_BAR_W = 2.0

STEP, MAP, APPROVAL, SUBCHAIN = "step", "map", "approval", "subchain"
# What a step that never started can have ended as (its row says so instead of a time).
ENDED_UNSTARTED = frozenset({"SKIPPED", "CANCELLED", "FAILED"})
# Kinds whose running span is a wait for something outside the workers.
WAITING_KINDS = frozenset({APPROVAL, SUBCHAIN})

# Tick spacings in seconds: 1-2-5 below a minute, then the clock's own steps.
NICE_STEPS = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400,
]


@dataclass(frozen=True)
class Spread:
    """A map step's items: the first item's start, the last item's finish, the 10th and 90th
    percentile of their finish times, and how many items finished."""

    first_start: datetime | None
    last_finish: datetime | None
    p10: datetime | None
    p90: datetime | None
    finished: int = 0


@dataclass(frozen=True)
class Step:
    """One step as the timeline takes it."""

    index: int
    label: str
    status: str
    stage: int = 0
    kind: str = STEP
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    href: str = ""
    spread: Spread | None = None


@dataclass(frozen=True)
class Segment:
    x: float
    w: float

    @property
    def end(self) -> float:
        return self.x + self.w


@dataclass(frozen=True)
class Row:
    index: int
    y: int  # top of the row
    h: int
    bar_y: float
    bar_h: int
    label: str
    title: str
    status: str
    kind: str
    stripe: bool  # every other stage is shaded, so parallel steps read as one group
    wait: Segment | None  # in its queue
    bar: Segment | None  # running, or waiting for a person or a child run
    marker: float | None  # a skipped step (or one that ended without a span) at this x
    spread: Segment | None  # a map step's items: first start -> last finish
    band: Segment | None  # a map step's items: p10 -> p90 of their finish times
    duration: str
    href: str
    open: bool  # still running or waiting: its bar ends at "now"

    @property
    def mid_y(self) -> float:
        return self.y + self.h / 2

    @property
    def text_y(self) -> float:
        return self.y + self.h / 2 + 4

    @property
    def bar_end_y(self) -> float:
        return self.bar_y + self.bar_h

    @property
    def marker_points(self) -> str:
        """A skipped step's diamond."""
        if self.marker is None:
            return ""
        x, y, r = self.marker, self.mid_y, self.bar_h / 2
        return f"{x},{y - r} {x + r},{y} {x},{y + r} {x - r},{y}"

    @property
    def spread_y(self) -> float:
        """The items' spread line runs along the middle of the bar."""
        return self.mid_y

    @property
    def cap_top(self) -> float:
        return self.bar_y - 2

    @property
    def cap_bottom(self) -> float:
        return self.bar_y + self.bar_h + 2


@dataclass(frozen=True)
class Tick:
    x: float
    label: str
    anchor: str  # text-anchor of its label


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int  # of the rows (the axis is drawn above them, AXIS_H high)
    rows: list[Row]
    ticks: list[Tick]
    start: datetime | None
    end: datetime | None
    now_x: float | None  # the "now" line of a run still going
    span: str  # the whole span, e.g. "4.2 s"
    axis_h: int = AXIS_H
    plot_x: int = PLOT_X
    plot_w: int = PLOT_W
    label_w: int = LABEL_W
    duration_x: int = WIDTH - DURATION_W

    @property
    def empty(self) -> bool:
        return self.start is None

    @property
    def legend(self) -> set[str]:
        """What the rows draw, so the legend names only that: "wait", "ran", "waited" (an
        approval or a sub-chain), "spread" (a map step's items), "skipped", "ended" (a step
        that ended without running)."""
        keys = set()
        for row in self.rows:
            keys |= {"wait"} if row.wait else set()
            if row.bar:
                keys.add("waited" if row.kind in WAITING_KINDS else "ran")
            keys |= {"spread"} if row.spread or row.band else set()
            if row.marker is not None:
                keys.add("skipped" if row.status == "SKIPPED" else "ended")
        return keys

    @property
    def plot_end(self) -> int:
        return self.plot_x + self.plot_w


def cut(text: str, limit: int = LABEL_CHARS) -> str:
    """`text` in at most `limit` characters, cut in the middle at word boundaries where it
    can: the end of a name ("…, part 24") is often what tells rows apart."""
    if len(text) <= limit:
        return text
    tail = ""
    for word in reversed(text.split(" ")):
        candidate = f"{word} {tail}".strip()
        if len(candidate) > limit // 3:
            break
        tail = candidate
    room = limit - 1 - (len(tail) + 1 if tail else 0)
    head = text[:room]
    if " " in head and len(head) - head.rindex(" ") <= 10:  # end the head at a word too
        head = head[:head.rindex(" ")]
    head = head.rstrip(" ,;:-")
    return f"{head}… {tail}" if tail else f"{head}…"


def seconds_text(seconds: float) -> str:
    """A duration as people read it: 250 ms, 1.5 s, 12 s, 2 min 5 s, 1 h 20 min, 2 d 3 h."""
    if seconds < 0:
        return "-" + seconds_text(-seconds)
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:.0f} ms" if ms >= 10 or ms == 0 else f"{ms:.1f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    for unit, size, sub_unit, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60),
                                           ("min", 60, "s", 1)):
        if whole >= size:
            major, rest = divmod(whole, size)
            minor = rest // sub_size
            return f"{major} {unit}" + (f" {minor} {sub_unit}" if minor else "")
    return f"{whole} s"  # pragma: no cover (whole >= 60 here)


def tick_text(seconds: float, step: float) -> str:
    """A tick's offset from the start, in one unit along the axis and with no more precision
    than the spacing needs: 50 ms, 0.4 s, 12 s, 1 min 30 s, 2 h."""
    if seconds == 0:
        return "0"
    if step < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if step < 1:
        return f"{seconds:.{-math.floor(math.log10(step) + 1e-9)}f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return seconds_text(seconds)


def nice_step(span: float, max_ticks: int = MAX_TICKS) -> float:
    """The smallest spacing of NICE_STEPS that puts at most `max_ticks` ticks on `span`."""
    for step in NICE_STEPS:
        if span / step <= max_ticks:
            return step
    return NICE_STEPS[-1] * math.ceil(span / (NICE_STEPS[-1] * max_ticks))


def axis_ticks(span: float, scale: float, *, max_ticks: int = MAX_TICKS) -> list[Tick]:
    """Ticks from 0 to `span` seconds, `scale` pixels a second, labelled from the start."""
    step = nice_step(span, max_ticks)
    ticks = []
    count = int(math.floor(span / step + 1e-9))
    for n in range(count + 1):
        offset = n * step
        x = PLOT_X + offset * scale
        # The first label starts at its tick, the last one that would pass the plot ends there.
        anchor = "start" if n == 0 else "end" if x > PLOT_X + PLOT_W - 30 else "middle"
        ticks.append(Tick(round(x, 1), tick_text(round(offset, 6), step), anchor))
    return ticks


def step_title(step: Step, now: datetime) -> str:
    """The tooltip of a row: its full label, status and times."""
    parts = [f"{step.index + 1}. {step.label}", step.status, f"stage {step.stage}"]
    if step.queued_at and step.started_at:
        parts.append(f"waited {seconds_text((step.started_at - step.queued_at).total_seconds())}"
                     " in its queue")
    elif step.queued_at and not step.started_at and step.finished_at is None:
        parts.append(f"queued for {seconds_text((now - step.queued_at).total_seconds())}")
    if step.started_at:
        end = step.finished_at or now
        verb = ("waited" if step.kind in WAITING_KINDS else "ran") + (
            " so far" if step.finished_at is None else "")
        parts.append(f"{verb} {seconds_text((end - step.started_at).total_seconds())}")
    for name, stamp in (("queued", step.queued_at), ("started", step.started_at),
                        ("finished", step.finished_at)):
        if stamp:
            parts.append(f"{name} {stamp:%H:%M:%S}.{stamp.microsecond // 1000:03d}")
    spread = step.spread
    if spread and spread.finished:
        parts.append(f"{spread.finished:,} items finished")
        if spread.p10 and spread.p90 and spread.first_start:
            p10 = (spread.p10 - spread.first_start).total_seconds()
            p90 = (spread.p90 - spread.first_start).total_seconds()
            parts.append(f"10% of them by {seconds_text(p10)}, 90% by {seconds_text(p90)} "
                         "after the first start")
    if step.href:
        parts.append("opens its child run's timeline")
    return " · ".join(parts)


def run_timeline(steps: list[Step], *, now: datetime, open_run: bool = False) -> Timeline:
    """The geometry of `steps` (in the order given) on one axis from the earliest stamp to the
    latest (or to `now` while the run is open and a step is still queued, running or
    waiting)."""
    dense = len(steps) > DENSE_AFTER
    row_h, bar_h = (DENSE_ROW_H, DENSE_BAR_H) if dense else (ROW_H, BAR_H)
    stamps = [s for step in steps for s in (step.queued_at, step.started_at, step.finished_at)
              if s is not None]
    for step in steps:
        if step.spread:
            stamps += [s for s in (step.spread.first_start, step.spread.last_finish) if s]
    going = [step for step in steps if step.finished_at is None
             and (step.started_at is not None or step.queued_at is not None)]
    height = max(1, len(steps)) * row_h
    if not stamps:
        return Timeline(width=WIDTH, height=height, rows=_rows(steps, None, 1.0, now, row_h,
                                                                bar_h, open_run=open_run),
                        ticks=[], start=None, end=None, now_x=None, span="")
    start = min(stamps)
    end = max(stamps)
    if open_run and going:
        end = max(end, now)
    span = max((end - start).total_seconds(), 0.001)
    scale = PLOT_W / span
    rows = _rows(steps, start, scale, now, row_h, bar_h, open_run=open_run)
    now_x = (round(PLOT_X + (now - start).total_seconds() * scale, 1)
             if open_run and going and now >= start else None)
    return Timeline(width=WIDTH, height=height, rows=rows, ticks=axis_ticks(span, scale),
                    start=start, end=end, now_x=now_x, span=seconds_text(span))


def _segment(start: datetime | None, a: datetime | None, b: datetime | None,
             scale: float) -> Segment | None:
    if start is None or a is None or b is None or b < a:
        return None
    x = PLOT_X + (a - start).total_seconds() * scale
    w = max((b - a).total_seconds() * scale, MIN_BAR_W)
    x = min(x, PLOT_X + PLOT_W - w)  # a minimal bar at the very end stays on the plot
    return Segment(round(x, 1), round(w, 1))


def _rows(steps: list[Step], start: datetime | None, scale: float, now: datetime, row_h: int,
          bar_h: int, *, open_run: bool) -> list[Row]:
    rows = []
    stages = sorted({step.stage for step in steps})
    shade = {stage: n % 2 == 1 for n, stage in enumerate(stages)}
    for n, step in enumerate(steps):
        y = n * row_h
        still = step.finished_at is None and open_run
        run_end = step.finished_at or (now if still else None)
        wait_end = step.started_at or step.finished_at or (now if still else None)
        wait = (_segment(start, step.queued_at, wait_end, scale)
                if step.queued_at and wait_end and wait_end > step.queued_at else None)
        bar = marker = None
        if step.status == "SKIPPED":
            at = step.finished_at or step.started_at or step.queued_at
            marker = (round(PLOT_X + (at - start).total_seconds() * scale, 1)
                      if at and start else None)
            wait = _segment(start, step.queued_at, at, scale) if at != step.queued_at else None
        else:
            bar = _segment(start, step.started_at, run_end, scale)
            if bar is None and wait is None and step.finished_at and start:
                marker = round(PLOT_X + (step.finished_at - start).total_seconds() * scale, 1)
        spread = band = None
        if step.spread:
            spread = _segment(start, step.spread.first_start, step.spread.last_finish, scale)
            band = _segment(start, step.spread.p10, step.spread.p90, scale)
        if step.started_at:
            duration = seconds_text(((step.finished_at or now) - step.started_at)
                                    .total_seconds())
        elif step.status in ENDED_UNSTARTED:
            duration = step.status.lower()  # skipped, or cancelled before it started
        else:
            duration = "-"
        rows.append(Row(
            index=step.index, y=y, h=row_h, bar_y=y + (row_h - bar_h) / 2, bar_h=bar_h,
            label=cut(f"{step.index + 1}. {step.label}"), title=step_title(step, now),
            status=step.status, kind=step.kind, stripe=shade.get(step.stage, False),
            wait=wait, bar=bar, marker=marker, spread=spread, band=band, duration=duration,
            href=step.href, open=bool(still and step.started_at)))
    return rows
