"""Commits that need not wait for the disk. On PostgreSQL each commit waits for its WAL to be
flushed (a few ms on a plain disk) unless synchronous_commit is off for its transaction. A
mark whose loss in a server crash costs nothing the reconciler does not restore (a step's or
an item's start, a run's publication) is written so: the server still writes it within a few
hundred ms, and any later commit that waits flushes it first."""
from typing import Any, TypeVar

from django.db import connections, router
from django.db.models import Func, QuerySet, TextField, Value
from django.db.models.lookups import IsNull

Rows = TypeVar("Rows", bound=QuerySet[Any])

# set_config(name, value, is_local): evaluated in the WHERE of a statement that is its own
# transaction, it holds until that transaction's commit.
_SYNCHRONOUS_COMMIT_OFF = Func(Value("synchronous_commit"), Value("off"), Value(True),
                               function="set_config", output_field=TextField())


def unflushed(rows: Rows) -> Rows:
    """`rows`, such that an UPDATE of them outside any transaction (autocommit) commits
    without waiting for its flush on PostgreSQL; unchanged elsewhere, or inside a
    transaction (whose own commit decides)."""
    connection = connections[router.db_for_write(rows.model)]
    if (connection.vendor == "postgresql" and not connection.in_atomic_block
            and connection.get_autocommit()):
        return rows.filter(IsNull(_SYNCHRONOUS_COMMIT_OFF, False))
    return rows
