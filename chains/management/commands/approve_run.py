"""Approve or reject the approval a run waits for."""
import uuid

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError

from chains import audit, selectors, services
from chains.errors import ChainError


class Command(BaseCommand):
    help = (
        "Approve (or with --reject, reject) the approval the run RUN_ID waits for, as the user "
        "--user names, else as the first active superuser (by id). Approved, the run goes on; "
        "rejected, it fails with 'rejected by <user>: <comment>'. Prints the run's status. "
        "Exits 1 with the reason when the run waits for no approval, it was decided already, "
        "or the user may not decide (chains.approve_run, and the approval's group)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("run_id", metavar="RUN_ID", help="the run's id (a UUID)")
        parser.add_argument("--reject", action="store_true", help="reject instead of approve")
        parser.add_argument("--comment", default="", help="kept with the decision")
        parser.add_argument("--user", metavar="USERNAME",
                            help="who decides (default: the first active superuser)")

    @audit.from_command
    def handle(self, *args, run_id: str, reject: bool, comment: str, user: str | None,
               **options) -> None:
        try:
            run_uuid = uuid.UUID(run_id)
        except ValueError as exc:
            raise CommandError(f"{run_id!r} is not a run id (a UUID)") from exc
        run = selectors.runs_visible_to(None).filter(id=run_uuid).first()
        if run is None:
            raise CommandError(f"no run {run_id}")
        decider = self._user(user)
        try:
            run = services.run_decide(run=run, user=decider, approve=not reject,
                                      comment=comment)
        except PermissionDenied as exc:
            raise CommandError(f"{decider.get_username()} may not decide: {exc}") from exc
        except ChainError as exc:
            raise CommandError("\n".join(f"{field}: {reason}"
                                         for field, reasons in exc.errors.items()
                                         for reason in reasons)) from exc
        decided = "rejected" if reject else "approved"
        line = f"run {run.id} {decided} by {decider.get_username()}: now {run.status}"
        self.stdout.write(line + (f" ({run.error})" if run.error else ""))

    def _user(self, username: str | None):
        users = get_user_model()
        if username:
            found = users.objects.filter(**{users.USERNAME_FIELD: username}).first()
            if found is None:
                raise CommandError(f"no user named {username!r}")
            return found
        first = users.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if first is None:
            raise CommandError("no active superuser: name the deciding user with --user")
        return first
