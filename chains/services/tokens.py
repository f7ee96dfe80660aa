"""API tokens: a user renews their own."""
from typing import TYPE_CHECKING

from django.db import transaction
from rest_framework.authtoken.models import Token

from chains import audit
from chains.models import ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User


@transaction.atomic
def token_regenerate(*, user: "User") -> Token:
    """A new API token for `user`; the old one stops working at once."""
    Token.objects.filter(user=user).delete()
    token = Token.objects.create(user=user)
    # Its key is a secret: the entry names the token by its user and a prefix (ApiToken).
    audit.record("token created", ApiToken.objects.get(pk=token.pk), user=user)
    return token
