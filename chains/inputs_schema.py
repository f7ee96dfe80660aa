"""A chain's inputs schema (JSON Schema, checked with `jsonschema`): the schema itself when a
chain is saved, and a run's inputs against it from every entry point."""
from typing import Any
from urllib.parse import unquote

from jsonschema import exceptions, validators
from referencing.exceptions import Unresolvable

from chains.bounds import json_problem
from chains.errors import ChainError

# Errors reported for one value: enough to fix a form, not a flood.
MAX_ERRORS = 20


def schema_problem(schema: Any) -> str | None:
    """What is wrong with a schema as a chain's inputs schema, or None."""
    if schema is None:
        return None
    if not isinstance(schema, dict | bool):
        return "must be a JSON Schema (an object)"
    if problem := json_problem(schema):
        return problem
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        where = ".".join(str(part) for part in exc.absolute_path)
        return f"not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else "")
    for ref in _refs(schema):
        if not ref.startswith("#"):
            return f"$ref {ref!r}: only references inside the schema (#/...) are allowed"
        if not _resolves(schema, ref):
            return f"$ref {ref!r} points at nothing in the schema"
    return None


def _refs(node: Any) -> list[str]:
    """Every $ref in a schema."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolves(schema: Any, ref: str) -> bool:
    """Whether a local reference (a JSON pointer after '#') leads somewhere in `schema`."""
    node = schema
    for raw in ref[1:].split("/")[1:] if ref != "#" else []:
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(
                node):
            node = node[int(part)]
        else:
            return False
    return True


def inputs_errors(schema: Any, inputs: Any, *, field: str = "inputs") -> dict[str, list[str]]:
    """Each way `inputs` does not fit `schema`, keyed `field` or `field.<path>`."""
    if schema is None:
        return {}
    validator = validators.validator_for(schema)(schema)
    errors: dict[str, list[str]] = {}
    try:
        found = sorted(validator.iter_errors(inputs),
                       key=lambda error: [str(part) for part in error.absolute_path])
    except (exceptions.SchemaError, Unresolvable) as exc:
        # A schema saved before its references were checked: say so, never a 500.
        return {"inputs_schema": [f"cannot be checked: {exc}"]}
    for error in found[:MAX_ERRORS]:
        key = ".".join([field, *(str(part) for part in error.absolute_path)])
        errors.setdefault(key, []).append(error.message)
    return errors


def check_inputs_schema(schema: Any, inputs: Any, *, field: str = "inputs") -> None:
    """ChainError naming each field of `inputs` that does not fit the chain's schema."""
    if errors := inputs_errors(schema, inputs, field=field):
        raise ChainError("inputs do not fit the chain's inputs schema", errors=errors)
