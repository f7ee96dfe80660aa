"""What a step type is: a key, a params schema, a function, and the family that queues it."""
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from django.conf import settings
from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError, WithJsonSchema

from chains.conf import DEFAULTS

if TYPE_CHECKING:
    from chains.steps.context import StepContext

TASK_NAME_PREFIX = "chains.step."

# Read when this module is imported, which may be before the app's defaults are applied (an
# app listed before "chains" importing the step API in its own apps.py).
MAX_ABS_NUMBER = getattr(settings, "CHAINS_MAX_ABS_NUMBER", DEFAULTS["CHAINS_MAX_ABS_NUMBER"])


def _finite_number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number, not NaN or infinity")
    if abs(value) > MAX_ABS_NUMBER:
        raise ValueError(f"must be between -{MAX_ABS_NUMBER:g} and {MAX_ABS_NUMBER:g}")
    return value


# A finite JSON number within bounds; integers stay integers. Strings and booleans are refused.
Number = Annotated[
    int | float,
    PlainValidator(_finite_number),
    WithJsonSchema({"type": "number", "minimum": -MAX_ABS_NUMBER, "maximum": MAX_ABS_NUMBER}),
]


class Params(BaseModel):
    """Base for every step's params: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class StepFailed(Exception):
    """A step's own, expected failure (division by zero, a missing file). Not retried."""


class ParamsInvalid(Exception):
    """Params that do not fit a schema; `messages()` maps each field path to its reasons."""

    def __init__(self, error: ValidationError, *, prefix: str = ""):
        super().__init__(str(error))
        self.error = error
        self.prefix = prefix

    def messages(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item in self.error.errors(include_url=False):
            path = ".".join(str(part) for part in (self.prefix, *item["loc"]) if part != "")
            message = item["msg"].removeprefix("Value error, ")
            out.setdefault(path or "non_field_errors", []).append(message)
        return out


def validate(model: type[BaseModel], raw: Any, *, prefix: str = "") -> BaseModel:
    """Validate `raw` against `model`, raising ParamsInvalid with field paths under `prefix`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ParamsInvalid(exc, prefix=prefix) from exc


StepFunction = Callable[[Any, Any, "StepContext"], Any]


@dataclass(frozen=True)
class StepType:
    """One row of the registry."""

    key: str
    description: str
    params: type[BaseModel]
    run: StepFunction
    queue: str = ""
    # What the step takes from the previous stage and gives to the next, so a chain can be
    # checked before it runs: "numbers" (a number, a list of numbers or nothing), "file" (a
    # file reference, unless a `path` param names the file), or "any"; and "number", "file",
    # "record", or "input" (passes its input on).
    accepts: str = "any"
    produces: str = "record"

    @property
    def family(self) -> str:
        """The part of the key before the dot: math, data, io, flow."""
        return self.key.split(".", 1)[0]

    @property
    def default_queue(self) -> str:
        """Where the family's steps go unless a step names a queue: math, data, io, celery."""
        return self.queue or self.family

    @property
    def task_name(self) -> str:
        return TASK_NAME_PREFIX + self.key

    def validate_params(self, raw: Any, *, prefix: str = "") -> dict:
        """Checked and normalised params, as JSON, or ParamsInvalid."""
        return validate(self.params, raw, prefix=prefix).model_dump(mode="json")

    def params_schema(self) -> dict:
        return self.params.model_json_schema()

    def execute(self, params: dict, previous: Any, context: "StepContext") -> Any:
        return self.run(self.params.model_validate(params), previous, context)
