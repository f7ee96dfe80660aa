"""Who may start and act on runs; admin and API ask the same questions.

Users who are not staff start runs and act on their own runs (the seed contract's clients).
Staff act on anybody's runs as their Django permissions allow: chains.add_run to start,
chains.change_run to cancel or retry, chains.delete_run to delete. View-only staff can look
but not act."""
from typing import TYPE_CHECKING, TypeAlias

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied

from chains.models import Chain, ChainSchedule, Run

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# Whoever acts: a request's user (maybe anonymous), a schedule's owner, a command's --user.
# `User` stands for the project's user model (AUTH_USER_MODEL) when types are checked.
Actor: TypeAlias = "User | AnonymousUser"


def signed_in(user: Actor) -> "User":
    """`user`, who the view already requires to be signed in; the one place that says so to
    the services, which record who acted."""
    if isinstance(user, AnonymousUser):
        raise PermissionDenied("sign in first")
    return user


def can_start_runs(user: Actor) -> bool:
    return user.is_authenticated and (not user.is_staff or user.has_perm("chains.add_run"))


def _can(user: Actor, run: Run, permission: str) -> bool:
    if user.is_staff:
        return user.has_perm(permission)
    return user.is_authenticated and run.created_by_id == user.pk


def can_change_run(user: Actor, run: Run) -> bool:
    """Cancel or retry."""
    return _can(user, run, "chains.change_run")


def can_delete_run(user: Actor, run: Run) -> bool:
    return _can(user, run, "chains.delete_run")


def can_edit_chain(user: Actor, chain: Chain, *, delete: bool = False) -> bool:
    """Staff as their Django permissions on chains allow; everyone else their own chains."""
    if user.is_staff:
        return user.has_perm("chains.delete_chain" if delete else "chains.change_chain")
    return chain.created_by_id == user.pk


def can_schedule_chain(user: Actor, chain: Chain) -> bool:
    """A schedule starts runs as its owner: its owner must be allowed to edit the chain and to
    start runs."""
    return can_edit_chain(user, chain) and can_start_runs(user)


def can_read_chain_inputs(user: Actor, chain: Chain) -> bool:
    """A chain's default inputs may hold what only its author should read (a key, a path):
    its author and staff read them; every other user sees the chain without them."""
    return user.is_staff or chain.created_by_id == user.pk


def can_read_schedule_inputs(user: Actor, schedule: ChainSchedule) -> bool:
    """A schedule's inputs are its owner's, as a chain's default inputs are its author's: its
    owner and staff read them; the chain's author sees the schedule without them."""
    return user.is_staff or schedule.created_by_id == user.pk
