"""Math steps: fold one operation left to right over the previous result and `numbers`."""
import math
import operator
from collections.abc import Callable
from typing import Any

from django.conf import settings
from pydantic import Field

from chains.steps.base import Number, Params, StepFailed
from chains.steps.context import StepContext
from chains.steps.registry import step

OPERATIONS = ("add", "subtract", "multiply", "divide", "power")


class NumbersParams(Params):
    numbers: list[Number] = Field(
        default_factory=list,
        max_length=settings.CHAINS_MAX_NUMBERS,
        description="Folded after the previous step's result (a number, or the list of a "
        "parallel stage's results).",
    )


def _divide(a: float, b: float) -> float:
    if b == 0:
        raise StepFailed("division by zero")
    return a / b


def _power(a: float, b: float) -> float:
    try:
        value = math.pow(a, b)
    except OverflowError as exc:
        raise StepFailed(f"{a} ** {b} is too large") from exc
    except ValueError as exc:
        raise StepFailed(f"{a} ** {b} is not a real number") from exc
    return value


_FUNCTIONS: dict[str, Callable[[float, float], float]] = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": _divide,
    "power": _power,
}


def _operands(previous: Any, numbers: list[float]) -> list[float]:
    if previous is None or previous == {}:
        prefix: list[float] = []
    elif _is_number(previous):
        prefix = [previous]
    elif isinstance(previous, list) and all(_is_number(item) for item in previous):
        prefix = list(previous)
    else:
        raise StepFailed(
            f"expects a number or a list of numbers from the previous step, got {previous!r:.80}"
        )
    values = prefix + list(numbers)
    if not values:
        raise StepFailed("has nothing to compute: no numbers and no previous result")
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_json_number(value: float) -> int | float:
    """6.0 -> 6, so integer results read as integers; large or fractional stay floats."""
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def fold(operation: str, values: list[float]) -> int | float:
    function = _FUNCTIONS[operation]
    accumulator = float(values[0])
    for value in values[1:]:
        accumulator = function(accumulator, float(value))
        if not math.isfinite(accumulator):
            raise StepFailed(f"{operation} overflowed: the result is not a finite number")
    return _as_json_number(accumulator)


def _declare(operation: str) -> None:
    def run(params: NumbersParams, previous: Any, context: StepContext) -> int | float:
        return fold(operation, _operands(previous, params.numbers))

    run.__qualname__ = f"math_{operation}"
    step(f"math.{operation}", params=NumbersParams, accepts="numbers", produces="number",
         description=f"{operation.capitalize()} numbers, left to right, starting from the "
         "previous result.")(run)


for _operation in OPERATIONS:
    _declare(_operation)
