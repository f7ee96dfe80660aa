"""ChainError -> 400 with the field paths and reasons, the same shape DRF uses."""
from rest_framework.exceptions import ValidationError

from chains.errors import ChainError


def as_validation_error(error: ChainError) -> ValidationError:
    return ValidationError(error.errors)
