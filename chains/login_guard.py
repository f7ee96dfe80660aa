"""Failed sign-ins are counted per user name and per address; past CHAINS_LOGIN_FAILURES
(per name) or CHAINS_LOGIN_FAILURES_PER_ADDRESS within CHAINS_LOGIN_LOCK_SECONDS, signing
in is refused until the window passes, with the right password too."""
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver

LOCKED_MESSAGE = ("Too many failed sign-ins for this account or from this address; try again "
                  "in {minutes} minutes.")


def client_address(request) -> str:
    return (request.META.get("REMOTE_ADDR") or "unknown") if request is not None else "unknown"


def _keys(username: str | None, address: str) -> list[tuple[str, int]]:
    keys = [(f"login-failures:address:{address}", settings.CHAINS_LOGIN_FAILURES_PER_ADDRESS)]
    if username:
        keys.append((f"login-failures:name:{username.lower()[:150]}",
                     settings.CHAINS_LOGIN_FAILURES))
    return keys


def is_locked(username: str | None, request) -> bool:
    return any((cache.get(key) or 0) >= limit
               for key, limit in _keys(username, client_address(request)))


def locked_message() -> str:
    return LOCKED_MESSAGE.format(minutes=max(1, settings.CHAINS_LOGIN_LOCK_SECONDS // 60))


class LockingModelBackend(ModelBackend):
    """Django's backend, refusing (without checking the password) while the name or the
    address is locked."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if is_locked(username or kwargs.get("username"), request):
            raise PermissionDenied(locked_message())
        return super().authenticate(request, username=username, password=password, **kwargs)


@receiver(user_login_failed, dispatch_uid="chains.count_login_failure")
def count_login_failure(sender, credentials: dict, request=None, **kwargs) -> None:
    for key, _ in _keys(credentials.get("username"), client_address(request)):
        if not cache.add(key, 1, timeout=settings.CHAINS_LOGIN_LOCK_SECONDS):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=settings.CHAINS_LOGIN_LOCK_SECONDS)


@receiver(user_logged_in, dispatch_uid="chains.forget_login_failures")
def forget_login_failures(sender, request, user, **kwargs) -> None:
    cache.delete(_keys(user.get_username(), client_address(request))[-1][0])
