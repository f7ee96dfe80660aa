"""The step registry, and the public way to add to it: `@step` declares a step type, and
`register_task` makes an existing Celery task's body one. Every installed app's `steps` module
is imported at startup (chains.apps), so declaring is all a team has to do.

A key is `<family>.<name>` in lowercase letters, digits and `_`; the family is the default
queue. A key is the only name input may give: no request ever names a Celery task."""
import inspect
import json
import re
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel, ConfigDict, TypeAdapter

from chains.steps.base import StepType
from chains.steps.context import StepContext

KEY = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")
KINDS_ACCEPTED = ("any", "numbers", "file")
KINDS_PRODUCED = ("record", "number", "file", "input", "any")

# key -> step type, in the order they were declared.
STEP_TYPES: dict[str, StepType] = {}
_listeners: list[Callable[[StepType], None]] = []


def register(step_type: StepType, *, origin: str) -> StepType:
    """Add `step_type` to the registry, or ImproperlyConfigured naming `origin` (the module
    that declared it) and the key. Declaring the same function again (a module imported
    twice) is harmless."""
    key = step_type.key
    problem = _problem(step_type)
    if problem is None and key in STEP_TYPES:
        known = STEP_TYPES[key]
        if _origin_of(known.run) == _origin_of(step_type.run):
            return known
        problem = f"is already declared by {_origin_of(known.run)}"
    if problem:
        raise ImproperlyConfigured(f"{origin}: step type {key!r} {problem}")
    STEP_TYPES[key] = step_type
    for listener in _listeners:
        listener(step_type)
    return step_type


def on_register(listener: Callable[[StepType], None]) -> None:
    """Call `listener` for every step type declared so far and for each one declared later
    (chains.tasks makes each one a Celery task)."""
    _listeners.append(listener)
    for step_type in list(STEP_TYPES.values()):
        listener(step_type)


def step(key: str, *, params: type[BaseModel], description: str = "", queue: str = "",
         accepts: str = "any", produces: str = "record"
         ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare `function(params, previous, context)` as the step type `key`. Its params are
    checked against `params` (a pydantic model) before a chain is saved and again when the
    step runs. Raising StepFailed fails the step with that message, without retries; any
    other exception is retried up to the step's max_retries. Returns the function unchanged.
    """
    def declare(function: Callable[..., Any]) -> Callable[..., Any]:
        register(StepType(key, description or inspect.getdoc(function) or "", _strict(params),
                          function,
                          queue=queue, accepts=accepts, produces=produces),
                 origin=function.__module__)
        return function
    return declare


def register_task(task: Any, *, key: str, params: type[BaseModel], description: str = "",
                  queue: str = "", accepts: str = "any", produces: str = "record") -> StepType:
    """Make the body of an existing Celery task the step type `key`: it is called with the
    params as keyword arguments, and the previous result as `previous` when it takes one.
    It runs inside the step's own task, so the ledger, redelivery, time limits, retries and
    queues apply as for any step; the original task is left as it was."""
    body = getattr(task, "run", task)
    takes_previous = "previous" in inspect.signature(body).parameters

    def run(values: BaseModel, previous: Any, context: StepContext) -> Any:
        arguments = values.model_dump(mode="json")  # as a message would bring them
        if takes_previous:
            arguments["previous"] = previous
        return body(**arguments)

    run.__module__, run.__qualname__ = body.__module__, body.__qualname__
    return register(StepType(key, description or inspect.getdoc(body) or "", _strict(params), run,
                             queue=queue, accepts=accepts, produces=produces),
                    origin=body.__module__)


def _strict(params: type[BaseModel]) -> type[BaseModel]:
    """`params`, refusing keys it does not have (a typo is a 400, not a default silently
    kept), unless the model says what to do with extra keys itself."""
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        return params  # refused by _problem, naming it
    if "extra" in params.model_config:
        return params
    return type(params.__name__, (params,), {
        "model_config": ConfigDict(extra="forbid"), "__module__": params.__module__,
        "__doc__": params.__doc__})


def _origin_of(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def _problem(step_type: StepType) -> str | None:
    """Why `step_type` cannot be registered, or None."""
    if not isinstance(step_type.key, str) or not KEY.fullmatch(step_type.key):
        return ("is not a valid key: use <family>.<name>, lowercase letters, digits and _ "
                "(e.g. shop.double)")
    if not (isinstance(step_type.params, type) and issubclass(step_type.params, BaseModel)):
        return f"has params {step_type.params!r}, which is not a pydantic model"
    if step_type.accepts not in KINDS_ACCEPTED:
        return f"accepts {step_type.accepts!r}; one of {', '.join(KINDS_ACCEPTED)}"
    if step_type.produces not in KINDS_PRODUCED:
        return f"produces {step_type.produces!r}; one of {', '.join(KINDS_PRODUCED)}"
    for name, field in step_type.params.model_fields.items():
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        elif field.is_required():
            continue
        else:
            default = field.default
        try:
            json.dumps(TypeAdapter(field.annotation or Any).dump_python(default, mode="json"))
        except Exception:  # noqa: BLE001 - pydantic and json each have their own errors
            return f"has a default for {name!r} that is not JSON: {default!r}"
    try:
        step_type.params.model_json_schema()
    except Exception as exc:  # noqa: BLE001 - any reason the schema cannot be made
        return f"has params whose JSON schema cannot be made: {exc}"
    return None
