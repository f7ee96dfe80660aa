"""A step's condition (`when`): a dotted path into the step's input, an operator and a value.
No expression language and no eval: a path is looked up, one comparison is made."""
import re
from typing import Any

OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "exists", "truthy")
# Operators that take no value.
UNARY = ("exists", "truthy")
MAX_PATH = 200
INDEX = re.compile(r"-?[0-9]+")  # ASCII digits only ("²" is a digit to str.isdigit)
_MISSING = object()


def when_problems(when: Any) -> list[str]:
    """What is wrong with a condition as given (empty: it is fine)."""
    if not isinstance(when, dict):
        return ['must be an object like {"path": "", "op": ">", "value": 100}']
    problems = [f"unknown key {key!r}" for key in sorted(set(when) - {"path", "op", "value"})]
    path, op = when.get("path", ""), when.get("op")
    if not isinstance(path, str) or len(path) > MAX_PATH:
        problems.append(f"path must be a dotted path of at most {MAX_PATH} characters")
    if op not in OPS:
        problems.append(f"op must be one of {' '.join(OPS)}")
    elif op in UNARY:
        if "value" in when:
            problems.append(f"op {op} takes no value")
    elif "value" not in when:
        problems.append(f"op {op} needs a value")
    elif op in ("in", "not_in") and not isinstance(when["value"], list):
        problems.append(f"op {op} needs a list as its value")
    return problems


def lookup(value: Any, path: str) -> Any:
    """The part of `value` at a dotted `path` ("" is the whole value; a number indexes a
    list), or _MISSING."""
    for part in path.split(".") if path else []:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and INDEX.fullmatch(part) and (
                -len(value) <= int(part) < len(value)):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def holds(when: dict[str, Any], value: Any) -> bool:
    """Whether the condition holds for the step's input. Where the path leads nowhere, `exists`
    is false and so is every other operator; a comparison of values that cannot be compared
    (a string with a number) is false."""
    found = lookup(value, when.get("path", ""))
    op = when["op"]
    if op == "exists":
        return found is not _MISSING
    if found is _MISSING:
        return False
    if op == "truthy":
        return bool(found)
    other: Any = when.get("value")
    try:
        match op:
            case "==":
                return bool(found == other)
            case "!=":
                return bool(found != other)
            case "<":
                return bool(found < other)
            case "<=":
                return bool(found <= other)
            case ">":
                return bool(found > other)
            case ">=":
                return bool(found >= other)
            case "in":
                return bool(found in other)
            case "not_in":
                return bool(found not in other)
    except TypeError:
        return False
    return False


def describe(when: dict[str, Any]) -> str:
    """The condition as a short label: `when stats.mean > 100`."""
    subject = when.get("path") or "input"
    if when.get("op") in UNARY:
        return f"when {subject} {when['op']}"
    return f"when {subject} {when.get('op')} {when.get('value')!r}"
