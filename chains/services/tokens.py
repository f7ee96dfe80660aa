"""API tokens: a user renews their own."""
from django.db import transaction
from rest_framework.authtoken.models import Token


@transaction.atomic
def token_regenerate(*, user) -> Token:
    """A new API token for `user`; the old one stops working at once."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)
