"""Delete old finished runs in chunks, with their steps, task results and files."""
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from chains import services
from chains.models import RunStatus


class Command(BaseCommand):
    help = ("Delete finished runs (COMPLETED, FAILED, CANCELLED) created more than DAYS days "
            "ago, optionally of one status, with their step rows, django-celery-results rows "
            "and files; 1,000 runs at a time. Prints the count deleted.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", type=float, required=True, metavar="DAYS")
        parser.add_argument("--status", choices=[RunStatus.COMPLETED, RunStatus.FAILED,
                                                 RunStatus.CANCELLED])
        parser.add_argument("--chunk", type=int, default=1000)

    def handle(self, *args, older_than: float, status, chunk: int, **options) -> None:
        if older_than < 0 or chunk < 1:
            raise CommandError("--older-than must be 0 or more and --chunk 1 or more")
        cutoff = timezone.now() - timedelta(days=older_than)

        def progress(done: int) -> None:
            self.stderr.write(f"\rdeleted {done} runs", ending="")
            self.stderr.flush()

        deleted = services.runs_purge(older_than=cutoff, status=status, chunk=chunk,
                                      progress=progress)
        if deleted:
            self.stderr.write("")
        self.stdout.write(f"deleted {deleted} run(s)")
