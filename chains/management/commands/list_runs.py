"""List runs, newest first."""
import json

from django.core.management.base import BaseCommand, CommandError

from chains import selectors, states
from chains.models import Chain


class Command(BaseCommand):
    help = ("List runs newest first, optionally of one status (WAITING: waiting for an approval "
            "or a child run) and chain; --json for scripts.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--status", choices=[s.value for s in states.RUN_STATUSES])
        parser.add_argument("--chain", help="chain name or id")
        parser.add_argument("--limit", type=int, default=20, help="at most this many (20)")
        parser.add_argument("--json", action="store_true", help="one JSON array")

    def handle(self, *args, status, chain, limit, **options) -> None:
        if limit < 1:
            raise CommandError("--limit must be 1 or more")
        chain_id = None
        if chain:
            found = Chain.objects.filter(name=chain).first() or (
                Chain.objects.filter(pk=int(chain)).first() if chain.isdigit() else None)
            if found is None:
                raise CommandError(f"no chain named or numbered {chain!r}")
            chain_id = found.pk
        runs = selectors.run_list(user=None, status=status, chain=chain_id)[:limit]
        rows = [{"id": str(r.id), "chain": r.chain.name if r.chain else None,
                 "task_type": r.task_type, "status": r.status, "trigger": r.trigger,
                 "steps": f"{r.steps_done}/{r.steps_total}",
                 "created_at": r.created_at.isoformat(), "error": r.error} for r in runs]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("no runs")
            return
        self.stdout.write(f"{'ID':<36}  {'STATUS':<9}  {'STEPS':>7}  CHAIN OR TASK TYPE  CREATED")
        for row in rows:
            self.stdout.write(f"{row['id']}  {row['status']:<9}  {row['steps']:>7}  "
                              f"{row['chain'] or row['task_type']}  {row['created_at']}")
