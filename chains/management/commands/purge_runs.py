"""Delete old finished runs in chunks, with their steps, task results and files."""
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from chains import audit, services
from chains.models import RunStatus


class Command(BaseCommand):
    help = ("Delete finished runs (COMPLETED, FAILED, CANCELLED) created more than DAYS days "
            "ago, optionally of one status, with their step rows, the steps' map items, "
            "approvals and earlier attempts, the runs' deliveries and idempotency keys, the "
            "django-celery-results rows of all of those and the runs' files; 10,000 runs at a "
            "time. Prints the count deleted.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", type=float, required=True, metavar="DAYS")
        parser.add_argument("--status", choices=[RunStatus.COMPLETED, RunStatus.FAILED,
                                                 RunStatus.CANCELLED])
        # Each chunk rewrites most pages of the indexes keyed by random ids (run ids, task
        # ids), so fewer, bigger chunks write far less; a chunk holds the write lock for
        # seconds at most.
        parser.add_argument("--chunk", type=int, default=10_000)

    @audit.from_command
    def handle(self, *args, older_than: float, status, chunk: int, **options) -> None:
        if older_than < 0 or chunk < 1:
            raise CommandError("--older-than must be 0 or more and --chunk 1 or more")
        cutoff = timezone.now() - timedelta(days=older_than)

        def progress(done: int) -> None:
            self.stderr.write(f"\rdeleted {done} runs", ending="")
            self.stderr.flush()

        _larger_sqlite_cache()
        deleted = services.runs_purge(older_than=cutoff, status=status, chunk=chunk,
                                      progress=progress)
        if deleted:
            self.stderr.write("")
        self.stdout.write(f"deleted {deleted} run(s)")


def _larger_sqlite_cache() -> None:
    """32 MB of page cache for this command's connection (SQLite's default is 2 MB), so a
    chunk's index pages are read once rather than evicted and read again."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size = -32768")
