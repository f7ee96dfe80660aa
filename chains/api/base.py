"""What every Task Chain API view uses, whatever the project's REST_FRAMEWORK settings say:
token and session sign-in (a wrong token throttled like an anonymous request), bounded JSON
bodies, bounded pages, the app's rates, its error format and its schema."""
from drf_spectacular.openapi import AutoSchema
from rest_framework.authentication import SessionAuthentication
from rest_framework.pagination import BasePagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.views import APIView

from chains import audit
from chains.api.errors import exception_handler
from chains.api.pagination import BoundedPagination
from chains.api.parsers import BoundedJSONParser
from chains.api.throttles import (
    AnonThrottle,
    Authenticated,
    ThrottledTokenAuthentication,
    UserThrottle,
)


class ChainsAPI(APIView):
    """Put first among the bases of each API view of the app (before DRF's own classes)."""

    authentication_classes = [ThrottledTokenAuthentication, SessionAuthentication]
    permission_classes = [Authenticated]
    parser_classes = [BoundedJSONParser, FormParser, MultiPartParser]
    pagination_class: type[BasePagination] | None = BoundedPagination  # for the list views
    throttle_classes = [AnonThrottle, UserThrottle]
    schema = AutoSchema()

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # Authenticated now (a token is read here, after the middleware): the audit's actor.
        if request.user.is_authenticated:
            audit.set_user(request.user, source="api")

    def get_exception_handler(self):
        return exception_handler
