"""The statuses of runs and steps and the moves allowed between them: the open and final sets,
one table for runs and one for steps, applied by `move` as a conditional UPDATE
(compare-and-set: its row count says who won). Nothing else in the project writes a status."""
from typing import Any

from django.db import models
from django.db.models import QuerySet


class RunStatus(models.TextChoices):
    """The words the seed contract's clients read."""

    # A run waiting for a concurrency slot of its chain (max_active_runs) or for its schedule's
    # active run (overlap policy buffer_one); the seed endpoints say PENDING.
    QUEUED = "QUEUED", "Queued"
    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"
    # A run waiting for an approval or a child run; a step doing so (the seed endpoints say
    # RUNNING). It holds no worker and no broker message meanwhile.
    WAITING = "WAITING", "Waiting"
    # A step whose condition (`when`) was false: it did not run.
    SKIPPED = "SKIPPED", "Skipped"


S = RunStatus
OPEN = frozenset({S.QUEUED, S.PENDING, S.RUNNING, S.WAITING})
FINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
# Open and in the hands of a worker or the broker (WAITING and QUEUED runs are in nobody's):
# what the reconciler watches for stalls.
ACTIVE = frozenset({S.PENDING, S.RUNNING})
# What holds one of its chain's concurrency slots (max_active_runs): started and not ended.
HOLDS_SLOT = frozenset({S.PENDING, S.RUNNING, S.WAITING})
# A step that is over and hands a value on: it ran, or its condition skipped it.
DONE = frozenset({S.COMPLETED, S.SKIPPED})
# What a run can be (SKIPPED is a step's only).
RUN_STATUSES = [S.QUEUED, S.PENDING, S.RUNNING, S.WAITING, S.COMPLETED, S.FAILED,
                S.CANCELLED]

# The seed contract's clients know five words: a run's other statuses are reported as one.
SEED_STATUSES = [S.PENDING, S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED]
AS_SEED = {S.WAITING: S.RUNNING, S.QUEUED: S.PENDING}


def seed_status(status: str) -> str:
    """A run's status as the seed endpoints report it (WAITING is RUNNING there)."""
    return str(AS_SEED.get(status, status))  # type: ignore[call-overload]


def reported_as(seed: str) -> list[str]:
    """The statuses the seed endpoints report as `seed`."""
    return [seed, *(status for status, shown in AS_SEED.items() if shown == seed)]


# from -> what it may become
RUN_MOVES: dict[str, frozenset[str]] = {
    # A slot freed (or the schedule's active run ended): it starts.
    S.QUEUED: frozenset({S.PENDING, S.FAILED, S.CANCELLED}),
    S.PENDING: frozenset({S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.WAITING, S.COMPLETED, S.FAILED, S.CANCELLED}),
    # Approved, or its child run ended: on with the next stage, or done.
    S.WAITING: frozenset({S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset({S.PENDING, S.QUEUED}),     # retried (queued when its chain is full)
    S.CANCELLED: frozenset({S.PENDING, S.QUEUED}),  # retried
}
STEP_MOVES: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.RUNNING, S.FAILED, S.CANCELLED, S.SKIPPED}),
    # RUNNING again: delivered again after its worker died, and started again. PENDING again:
    # its worker died and the reconciler published it anew. WAITING: an approval or a child
    # run. SKIPPED (before it starts): its condition was false.
    S.RUNNING: frozenset({S.RUNNING, S.WAITING, S.COMPLETED, S.FAILED, S.CANCELLED,
                          S.PENDING}),
    S.WAITING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.SKIPPED: frozenset(),
    S.FAILED: frozenset({S.PENDING}),     # its run retried
    S.CANCELLED: frozenset({S.PENDING}),  # its run retried
}
# A map step's items move as steps do (an item is never WAITING or SKIPPED).
TABLES = {"run": RUN_MOVES, "steprun": STEP_MOVES, "mapitem": STEP_MOVES}


def sources(table: dict[str, frozenset[str]], to: str) -> list[str]:
    """The statuses from which a row may become `to`."""
    return sorted(status for status, targets in table.items() if to in targets)


def move(rows: QuerySet[Any], to: str, **fields: Any) -> int:
    """The rows of `rows` (runs or steps) whose status may become `to` become it, with
    `fields`, in one UPDATE; returns how many did. Narrow `rows` to say which rows, and from
    which of the allowed statuses, may move."""
    table = TABLES[rows.model._meta.model_name]
    return rows.filter(status__in=sources(table, to)).update(status=to, **fields)


def mermaid(table: dict[str, frozenset[str]]) -> str:
    """The table as a Mermaid state diagram (the README shows both)."""
    starts = [S.PENDING.value] + ([S.QUEUED.value] if S.QUEUED in table else [])
    lines = ["stateDiagram-v2", *(f"    [*] --> {status}" for status in starts)]
    for status, targets in table.items():
        lines += [f"    {status} --> {target}" for target in sorted(targets)]
    ends = FINAL | {status for status, targets in table.items() if not targets}
    lines += [f"    {status} --> [*]" for status in sorted(ends)]
    return "\n".join(lines)
