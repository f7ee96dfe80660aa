"""Publish, resume or fail runs that the broker lost; what beat does every 30 seconds."""
import json

from django.core.management.base import BaseCommand

from chains import audit, services


class Command(BaseCommand):
    help = (
        "Find runs whose canvas never reached the broker and publish them; resume runs with no "
        "progress past their deadline from the last completed step; fail runs that stalled "
        "CHAINS_MAX_RESUMES times. Prints what it did as JSON."
    )

    @audit.from_command
    def handle(self, *args, **options) -> None:
        self.stdout.write(json.dumps(services.reconcile_runs()))
