"""App configuration: connects the signal receivers; API tokens print as a key prefix."""
from django.apps import AppConfig


class ChainsConfig(AppConfig):
    name = "chains"
    verbose_name = "Task chains"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from rest_framework.authtoken.models import Token

        from chains import login_guard, signals  # noqa: F401

        # DRF's Token prints its whole key; Django's pages print related objects (deleting a
        # user lists their token), so a key would show to whoever may delete users.
        setattr(Token, "__str__", lambda token: f"{token.key[:4]}…")  # noqa: B010
