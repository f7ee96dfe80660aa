"""Who may start and act on runs; admin and API ask the same questions.

Users who are not staff start runs and act on their own runs (the seed contract's clients).
Staff act on anybody's runs as their Django permissions allow: chains.add_run to start,
chains.change_run to cancel or retry, chains.delete_run to delete. View-only staff can look
but not act."""
from chains.models import Run


def can_start_runs(user) -> bool:
    return user.is_authenticated and (not user.is_staff or user.has_perm("chains.add_run"))


def _can(user, run: Run, permission: str) -> bool:
    if user.is_staff:
        return user.has_perm(permission)
    return user.is_authenticated and run.created_by_id == user.id


def can_change_run(user, run: Run) -> bool:
    """Cancel or retry."""
    return _can(user, run, "chains.change_run")


def can_delete_run(user, run: Run) -> bool:
    return _can(user, run, "chains.delete_run")


def can_edit_chain(user, chain, *, delete: bool = False) -> bool:
    """Staff as their Django permissions on chains allow; everyone else their own chains."""
    if user.is_staff:
        return user.has_perm("chains.delete_chain" if delete else "chains.change_chain")
    return chain.created_by_id == user.id


def can_schedule_chain(user, chain) -> bool:
    """A schedule starts runs as its owner: its owner must be allowed to edit the chain and to
    start runs."""
    return can_edit_chain(user, chain) and can_start_runs(user)


def can_read_chain_inputs(user, chain) -> bool:
    """A chain's default inputs may hold what only its author should read (a key, a path):
    its author and staff read them; every other user sees the chain without them."""
    return user.is_staff or chain.created_by_id == user.id
