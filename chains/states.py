"""The statuses of runs and steps and the moves allowed between them: the open and final sets,
one table for runs and one for steps, applied by `move` as a conditional UPDATE
(compare-and-set: its row count says who won). Nothing else in the project writes a status."""
from typing import Any

from django.db import models
from django.db.models import QuerySet


class RunStatus(models.TextChoices):
    """The words the seed contract's clients read."""

    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


S = RunStatus
OPEN = frozenset({S.PENDING, S.RUNNING})
FINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})

# from -> what it may become
RUN_MOVES: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset({S.PENDING}),     # retried
    S.CANCELLED: frozenset({S.PENDING}),  # retried
}
STEP_MOVES: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.RUNNING, S.FAILED, S.CANCELLED}),
    # RUNNING again: delivered again after its worker died, and started again. PENDING again:
    # its worker died and the reconciler published it anew.
    S.RUNNING: frozenset({S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED, S.PENDING}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset({S.PENDING}),     # its run retried
    S.CANCELLED: frozenset({S.PENDING}),  # its run retried
}
TABLES = {"run": RUN_MOVES, "steprun": STEP_MOVES}


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
    lines = ["stateDiagram-v2", f"    [*] --> {S.PENDING.value}"]
    for status, targets in table.items():
        lines += [f"    {status} --> {target}" for target in sorted(targets)]
    lines += [f"    {status} --> [*]" for status in sorted(FINAL)]
    return "\n".join(lines)
