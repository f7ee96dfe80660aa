"""A database that is down or restarting answers 503 with a reason, not a traceback; the
audit trail learns who acts and from where."""
import logging
from functools import cache

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.urls import NoReverseMatch, reverse

from chains import audit

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


class AuditMiddleware:
    """Who acts and from where, for the audit trail (chains.audit): the signed-in user, the
    address the request came from (REMOTE_ADDR: put the real client address there in a proxy
    you trust), and `admin` or `api` as the source. Place it after AuthenticationMiddleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        source = "admin" if request.path.startswith(_admin_prefix()) else "api"
        with audit.acting(source=source, remote_addr=request.META.get("REMOTE_ADDR"),
                          user=user if getattr(user, "is_authenticated", False) else None):
            return self.get_response(request)


@cache
def _admin_prefix() -> str:
    try:
        return reverse("admin:index")
    except NoReverseMatch:
        return "/admin/"
