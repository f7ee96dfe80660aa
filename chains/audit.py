"""The audit trail: who did what, when and from where, kept as django-auditlog entries
(`auditlog.LogEntry`). The services record each event with `record`: chains and schedules
created, changed, enabled, disabled and deleted; runs started, cancelled, retried, approved,
rejected and deleted; API tokens created. Who and from where come from the context an entry
point sets with `acting` (the middleware for the admin and the API, a command, beat); a
service that knows who acted passes them itself."""
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from functools import wraps
from typing import Any

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Model
from rest_framework.authtoken.models import Token as AuthToken

from chains.models import ApiToken

# The `event` of each entry (additional_data["event"]), the admin's and /api/audit/'s filter.
EVENTS = (
    "chain created", "chain changed", "chain enabled", "chain disabled", "chain deleted",
    "schedule created", "schedule changed", "schedule enabled", "schedule disabled",
    "schedule deleted", "run started", "run cancelled", "run retried", "run approved",
    "run rejected", "run deleted", "token created",
)

_context: ContextVar[dict[str, Any] | None] = ContextVar("chains_audit", default=None)


@contextmanager
def acting(*, source: str, user: Any = None, remote_addr: str | None = None) -> Iterator[None]:
    """Within the block, entries are by `user` (when signed in), from `source` (admin, api,
    command, beat, worker) and `remote_addr`."""
    token = _context.set({"source": source, "user": user, "remote_addr": remote_addr})
    try:
        yield
    finally:
        _context.reset(token)


def from_command(handle: Callable[..., Any]) -> Callable[..., Any]:
    """For a management command's `handle`: its entries come from `command`."""
    @wraps(handle)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with acting(source="command"):
            return handle(*args, **kwargs)
    return wrapper


def set_user(user: Any, *, source: str | None = None) -> None:
    """Who acts, once it is known later than the context was set (DRF authenticates a token
    in the view, after the middleware)."""
    context = dict(_context.get() or {})
    context["user"] = user
    if source:
        context["source"] = source
    _context.set(context)


def _action(event: str) -> int:
    if event.endswith(("created", "started")):
        return LogEntry.Action.CREATE
    if event.endswith("deleted"):
        return LogEntry.Action.DELETE
    return LogEntry.Action.UPDATE


def record(event: str, obj: Model, *, user: Any = None, changes: dict[str, Any] | None = None,
           **data: Any) -> LogEntry:
    """One entry: `event` (one of EVENTS) on `obj`, with `changes` ({field: [old, new]}) and
    `data` kept beside them."""
    context = _context.get() or {}
    actor = user if getattr(user, "is_authenticated", False) else context.get("user")
    if not getattr(actor, "is_authenticated", False):
        actor = None
    names: dict[str, Any] = {}
    if isinstance(obj, AuthToken):  # its primary key is the secret: named by its prefix instead
        names = {"content_type": ContentType.objects.get_for_model(ApiToken,
                                                                   for_concrete_model=False),
                 "object_pk": _token_name(obj.key)}
    return LogEntry.objects.log_create(
        obj, force_log=True, action=_action(event), changes=changes or {}, actor=actor,
        remote_addr=context.get("remote_addr"), **names,
        additional_data={"event": event, "source": context.get("source", "system"), **data})


def _token_name(key: str) -> str:
    return f"{key[:4]}…"


def enter(*, source: str) -> Token[dict[str, Any] | None]:
    """Like `acting`, for code that cannot wrap a block (a Celery task's prerun and postrun
    signals): give the token to `leave`."""
    return _context.set({"source": source, "user": None, "remote_addr": None})


def leave(token: Token[dict[str, Any] | None]) -> None:
    _context.reset(token)
