"""A database that is down or restarting answers 503 with a reason, not a traceback."""
import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

logger = logging.getLogger(__name__)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, OperationalError | InterfaceError):
            logger.warning("database unavailable: %s", exception)
            response = JsonResponse(
                {"detail": "The database is unavailable; try again shortly."}, status=503
            )
            response["Retry-After"] = "5"
            return response
        return None
