"""App configuration: connects the signal receivers."""
from django.apps import AppConfig


class ChainsConfig(AppConfig):
    name = "chains"
    verbose_name = "Task chains"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chains import login_guard, signals  # noqa: F401
