"""The benchmark-only reference app."""
from django.apps import AppConfig


class ReferenceConfig(AppConfig):
    name = "bench.reference"
    label = "bench_reference"
    default_auto_field = "django.db.models.BigAutoField"
