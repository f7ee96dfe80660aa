"""Bounds on every JSON value and text the project accepts: nesting depth, encoded size and
length, checked before anything is saved or queued."""
import json
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from chains.errors import ChainError

DEPTH_REASON = "is nested {depth} levels deep; the limit is {limit} (CHAINS_MAX_JSON_DEPTH)"
SIZE_REASON = "is {size} bytes as JSON; the limit is {limit}"
NOT_JSON_REASON = "must be JSON: {error}"
TEXT_REASON = "is {length} characters long; the limit is {limit}"


def json_depth(value: Any, *, stop_after: int | None = None) -> int:
    """How deeply lists and objects nest in `value` (a scalar is 0, [] is 1), without
    recursion, so a hostile value cannot exhaust the stack. Stops counting past
    `stop_after`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if stop_after is not None and deepest > stop_after:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def json_problem(value: Any, *, max_bytes: int | None = None) -> str | None:
    """Why `value` may not be stored or sent (too deep, not JSON, too large), or None."""
    limit = settings.CHAINS_MAX_JSON_DEPTH
    depth = json_depth(value, stop_after=limit)
    if depth > limit:
        return DEPTH_REASON.format(depth=f"more than {limit}", limit=limit)
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        return NOT_JSON_REASON.format(error=exc)
    if max_bytes is not None and size > max_bytes:
        return SIZE_REASON.format(size=size, limit=max_bytes)
    return None


def check_json(value: Any, *, field: str, max_bytes: int | None = None) -> None:
    """ChainError naming `field` when `value` is too deep, too large or not JSON."""
    problem = json_problem(value, max_bytes=max_bytes)
    if problem:
        raise ChainError("invalid JSON", errors={field: [problem]})


def check_inputs(value: Any, *, field: str) -> None:
    """Run inputs, a chain's default inputs, a schedule's inputs."""
    check_json(value, field=field, max_bytes=settings.CHAINS_MAX_INPUT_BYTES)


def check_text(errors: dict[str, list[str]], field: str, value: str, limit: int) -> None:
    """Adds the reason to `errors` when `value` is longer than `limit` characters."""
    if value is not None and len(value) > limit:
        errors.setdefault(field, []).append(TEXT_REASON.format(length=len(value), limit=limit))


def parse_json(text: str) -> Any:
    """`text` as JSON within the bounds; ValueError says why not."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(DEPTH_REASON.format(depth="too many",
                                             limit=settings.CHAINS_MAX_JSON_DEPTH)) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON at line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg}") from exc
    if problem := json_problem(value):
        raise ValueError(problem)
    return value
