"""API errors: ChainError -> 400 with the field paths and reasons; DRF's own validation
errors flattened to the same field paths; values out of the database's range -> 400."""
from django.db import DataError
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chains.errors import ChainError, Conflict, LimitReached, NotAllowed


class LimitExceeded(APIException):
    status_code = 429
    default_detail = "a limit is reached"
    default_code = "limit_reached"


class ConflictError(APIException):
    status_code = 409
    default_detail = "the request conflicts with an earlier one"
    default_code = "conflict"


def as_api_error(error: ChainError) -> APIException:
    """A refusal of the domain as the API answers it: 403 for what the user may not do, 429
    for a per-user limit, 409 for a conflict, otherwise 400; each with the field paths and
    reasons."""
    if isinstance(error, NotAllowed):
        return PermissionDenied(error.errors)
    if isinstance(error, LimitReached):
        return LimitExceeded(error.errors)
    if isinstance(error, Conflict):
        return ConflictError(error.errors)
    return ValidationError(error.errors)


def exception_handler(exc, context):
    """DRF's handler, plus: a number too large for the database (OverflowError on SQLite,
    DataError on PostgreSQL) is the client's mistake, a 400, not a 500."""
    if isinstance(exc, OverflowError | DataError):
        return Response({"detail": "a value in the request is out of range"}, status=400)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, ValidationError):
        response.data = flat_errors(response.data)
    return response


def flat_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested errors ({"steps": {"0": {"queue": [...]}}}) as field paths
    ({"steps.0.queue": [...]}), the shape services' errors have."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            out.update(flat_errors(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        out = {}
        for index, item in enumerate(detail):
            if item:
                out.update(flat_errors(item, f"{prefix}.{index}" if prefix else str(index)))
        return out
    messages = detail if isinstance(detail, list) else [detail]
    return {prefix or "non_field_errors": [str(message) for message in messages]}
