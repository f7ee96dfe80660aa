"""The audit trail: who did what, when and from where, kept as django-auditlog entries
(`auditlog.LogEntry`). The services record each event with `record`: chains and schedules
created, changed, enabled, disabled and deleted; runs started, cancelled, retried, approved,
rejected and deleted; API tokens created. Who and from where come from the context an entry
point sets with `acting` (the middleware for the admin and the API, a command, beat); a
service that knows who acted passes them itself."""
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from functools import cache, wraps
from typing import Any

from auditlog.cid import get_cid
from auditlog.models import DEFAULT_OBJECT_REPR, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Model, Subquery
from django.utils.encoding import smart_str
from rest_framework.authtoken.models import Token as AuthToken

from chains.models import ApiToken, Chain, ChainSchedule, Run

# The `event` of each entry (additional_data["event"]), the admin's and /api/audit/'s filter.
EVENTS = (
    "chain created", "chain changed", "chain enabled", "chain disabled", "chain deleted",
    "schedule created", "schedule changed", "schedule enabled", "schedule disabled",
    "schedule deleted", "run started", "run cancelled", "run retried", "run approved",
    "run rejected", "run deleted", "token created",
)

# What an entry is about (/api/audit/'s `object_type`, the admin's filter): each type's model.
OBJECT_TYPES: dict[str, type[Model]] = {
    "chain": Chain, "run": Run, "chainschedule": ChainSchedule, "apitoken": ApiToken,
}

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
           **data: Any) -> None:
    """One entry: `event` (one of EVENTS) on `obj`, with `changes` ({field: [old, new]}) and
    `data` kept beside them: one INSERT, which reads the content type's id itself."""
    entry_for(event, obj, user=user, changes=changes, **data).save(force_insert=True)


def entry_for(event: str, obj: Model, *, user: Any = None,
              changes: dict[str, Any] | None = None, **data: Any) -> LogEntry:
    """The entry `record` writes, not yet saved (what `LogEntry.objects.log_create` would
    write): a service may build it before its transaction and save it within, so that its
    building does not hold SQLite's write lock. Its `content_type_id` is a subquery that the
    INSERT evaluates (see `_content_type_id`)."""
    context = _context.get() or {}
    actor = user if getattr(user, "is_authenticated", False) else context.get("user")
    if not getattr(actor, "is_authenticated", False):
        actor = None
    pk = obj.pk
    content_type_id, object_pk = _content_type_id(type(obj)), str(pk)
    if isinstance(obj, AuthToken):  # its primary key is the secret: named by its prefix instead
        content_type_id, object_pk = (_content_type_id(ApiToken, concrete=False),
                                      _token_name(obj.key))
    try:
        object_repr = smart_str(obj)
    except ObjectDoesNotExist:
        object_repr = DEFAULT_OBJECT_REPR
    return LogEntry(
        content_type_id=content_type_id, object_pk=object_pk,
        object_id=pk if isinstance(pk, int) else None, object_repr=object_repr,
        serialized_data=LogEntry.objects._get_serialized_data_or_none(obj),
        action=_action(event), changes=changes or {}, actor=actor,
        remote_addr=context.get("remote_addr"), cid=get_cid(),
        additional_data={"event": event, "source": context.get("source", "system"), **data})


def _content_type_id(model: type[Model], *, concrete: bool = True) -> Subquery:
    """The id of the model's content type as the INSERT reads it from the table, not from the
    manager's per-process cache: a process that outlives a rewrite of the table (a worker while
    tests flush the database) would write an id that is gone. No statement of its own: the
    row is made once per process when missing (`get_for_model`), then read by the INSERT."""
    ContentType.objects.get_for_model(model, for_concrete_model=concrete)
    return _content_type_subquery(model, concrete)


@cache
def _content_type_subquery(model: type[Model], concrete: bool) -> Subquery:
    """One per model and process: an INSERT resolves a copy of it, never the shared one."""
    opts = (model._meta.concrete_model or model)._meta if concrete else model._meta
    return Subquery(ContentType.objects.filter(app_label=opts.app_label,
                                               model=opts.model_name).values("id")[:1])


def _token_name(key: str) -> str:
    return f"{key[:4]}…"


# --- Reading entries (the admin and /api/audit/) -------------------------------------------


def content_types(object_type: str) -> list[ContentType]:
    """The content types of entries on `object_type` (a key of OBJECT_TYPES); a token's are
    its own and, for entries written before tokens were named by their prefix, its base's."""
    model = OBJECT_TYPES[object_type]
    found = [ContentType.objects.get_for_model(model, for_concrete_model=False)]
    if model._meta.proxy:
        found.append(ContentType.objects.get_for_model(model))
    return found


def object_type(entry: LogEntry) -> str:
    """The key of OBJECT_TYPES an entry is about (else its model's name)."""
    model = entry.content_type.model
    return "apitoken" if model == "token" else model


def object_id(entry: LogEntry) -> str:
    """The id of the entry's object; a token's prefix, never its key."""
    if object_type(entry) == "apitoken" and not entry.object_pk.endswith("…"):
        return _token_name(entry.object_pk)
    return entry.object_pk


def event_of(entry: LogEntry) -> str:
    return (entry.additional_data or {}).get("event", "")


def source_of(entry: LogEntry) -> str:
    return (entry.additional_data or {}).get("source", "")


def data_of(entry: LogEntry) -> dict[str, Any]:
    """What the entry keeps beside its event and source (a run's trigger, a version number,
    an approval's comment...)."""
    return {key: value for key, value in (entry.additional_data or {}).items()
            if key not in ("event", "source")}


def enter(*, source: str) -> Token[dict[str, Any] | None]:
    """Like `acting`, for code that cannot wrap a block (a Celery task's prerun and postrun
    signals): give the token to `leave`."""
    return _context.set({"source": source, "user": None, "remote_addr": None})


def leave(token: Token[dict[str, Any] | None]) -> None:
    _context.reset(token)
