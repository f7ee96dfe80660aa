"""The one domain error that services raise; admin, API and commands translate it."""


class ChainError(Exception):
    """A request the domain refuses. `errors` maps a field path to its reasons."""

    def __init__(self, message: str, *, errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or {"non_field_errors": [message]}


class NotAllowed(ChainError):
    """The user may not do this (the API answers 403)."""


class LimitReached(ChainError):
    """A per-user limit is reached (the API answers 429)."""


class Conflict(ChainError):
    """The request conflicts with an earlier one (the API answers 409)."""
