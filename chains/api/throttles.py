"""Anonymous requests and wrong tokens are throttled per address (CHAINS_API_RATE_ANON). DRF
checks throttles after permissions, so a request refused for want of a login (401) would
never reach its throttle: the permission and the token check apply it themselves."""
from django.conf import settings
from rest_framework import permissions
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle


class AnonThrottle(AnonRateThrottle):
    """Anonymous requests, at CHAINS_API_RATE_ANON (whatever the project's DRF rates are;
    its own scope, so its counts never mix with the project's throttles)."""

    scope = "chains_anon"

    def get_rate(self) -> str:
        return settings.CHAINS_API_RATE_ANON


class UserThrottle(UserRateThrottle):
    """Each user's requests, at CHAINS_API_RATE_USER."""

    scope = "chains_user"

    def get_rate(self) -> str:
        return settings.CHAINS_API_RATE_USER


class AddressThrottle(SimpleRateThrottle):
    """The anonymous rate, keyed by the client's address alone (it never asks who the user
    is, so it can run while the user is being authenticated)."""

    scope = "chains_anon"

    def get_rate(self) -> str:
        return settings.CHAINS_API_RATE_ANON

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def throttle_address(request, view=None) -> None:
    throttle = AddressThrottle()
    if not throttle.allow_request(request, view):
        raise Throttled(throttle.wait())


class Authenticated(permissions.IsAuthenticated):
    """IsAuthenticated, with anonymous requests counted against the address's rate."""

    def has_permission(self, request, view) -> bool:
        if super().has_permission(request, view):
            return True
        throttle_address(request, view)
        return False


class ThrottledTokenAuthentication(TokenAuthentication):
    """A wrong token counts against the address's rate, like an anonymous request."""

    def authenticate(self, request):
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            throttle_address(request)
            raise
