"""API tokens: a user renews their own."""
from typing import TYPE_CHECKING

from django.db import transaction
from rest_framework.authtoken.models import Token

if TYPE_CHECKING:
    from django.contrib.auth.models import User


@transaction.atomic
def token_regenerate(*, user: "User") -> Token:
    """A new API token for `user`; the old one stops working at once."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)
