"""API tokens: a user renews their own."""
import logging

from django.db import transaction
from rest_framework.authtoken.models import Token

logger = logging.getLogger(__name__)


# --- API tokens -------------------------------------------------------------------------------


@transaction.atomic
def token_regenerate(*, user) -> Token:
    """A new API token for `user`; the old one stops working at once."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)
