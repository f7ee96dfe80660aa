"""Create the first admin account with a generated password, printed once."""
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = (
        "If no superuser exists, create one (default name 'admin') with a random password and "
        "an API token, and print both once. Does nothing when a superuser exists."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("An admin account exists; sign in at http://127.0.0.1:8000/admin/")
            return
        password = secrets.token_urlsafe(12)
        user = users.objects.create_superuser(username=username, email="", password=password)
        token = Token.objects.create(user=user)
        self.stdout.write(self.style.SUCCESS(
            "Created the admin account (shown once, keep it):\n"
            f"  username: {username}\n  password: {password}\n  API token: {token.key}\n"
            "Sign in at http://127.0.0.1:8000/admin/"
        ))
