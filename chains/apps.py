"""App configuration: imports every installed app's `steps` module (the step types it
declares), connects the signal receivers; API tokens print as a key prefix."""
from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import autodiscover_modules

from chains.conf import apply_defaults

# Before any model or step module reads them: the defaults of the settings not set.
apply_defaults(settings)


class ChainsConfig(AppConfig):
    name = "chains"
    verbose_name = "Task chains"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from rest_framework.authtoken.models import Token

        from chains import login_guard, signals  # noqa: F401

        # Step types, wherever they are declared: this app's own families first. A bad
        # declaration is an ImproperlyConfigured here, in the web process, worker and beat.
        autodiscover_modules("steps")

        # DRF's Token prints its whole key; Django's pages print related objects (deleting a
        # user lists their token), so a key would show to whoever may delete users.
        setattr(Token, "__str__", lambda token: f"{token.key[:4]}…")  # noqa: B010
