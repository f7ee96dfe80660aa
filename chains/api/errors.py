"""API errors: ChainError -> 400 with the field paths and reasons (DRF's shape); values out
of the database's range -> 400."""
from django.db import DataError
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chains.errors import ChainError


def as_validation_error(error: ChainError) -> ValidationError:
    return ValidationError(error.errors)


def exception_handler(exc, context):
    """DRF's handler, plus: a number too large for the database (OverflowError on SQLite,
    DataError on PostgreSQL) is the client's mistake, a 400, not a 500."""
    if isinstance(exc, OverflowError | DataError):
        return Response({"detail": "a value in the request is out of range"}, status=400)
    return drf_exception_handler(exc, context)
