"""The cluster as Celery's remote control and the broker see it: `celery inspect`, our way."""
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chains.cluster import cluster_state


class Command(BaseCommand):
    help = (
        "Workers online with the queues they consume, their running and reserved tasks, the "
        "step tasks they have registered, and messages waiting per queue. Exit 0 when at least "
        "one worker answers, 1 when none does, 2 when the broker cannot be reached."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait")

    def handle(self, *args, timeout: float, **options) -> None:
        state = cluster_state(timeout=timeout, detail=True)
        if state.error:
            raise CommandError(state.error, returncode=2)
        workers: list[dict[str, Any]] = [{"name": name, "queues": queues, "active": active,
                    "reserved": state.reserved.get(name, 0),
                    "registered": state.registered.get(name, [])}
                   for name, queues, active in state.worker_rows]
        report = {"workers": workers, "queues": state.queue_lengths}
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            for worker in workers:
                self.stdout.write(
                    f"{worker['name']}: queues {', '.join(worker['queues'])}; "
                    f"{worker['active']} running, {worker['reserved']} reserved; "
                    f"{len(worker['registered'])} chains tasks registered")
            for queue, length in state.queue_lengths.items():
                self.stdout.write(f"queue {queue}: {'-' if length is None else length} waiting")
        if not workers:
            raise CommandError("no worker answered", returncode=1)
