"""Counts by status and, per chain, success rate and durations."""
import json

from django.core.management.base import BaseCommand

from chains import selectors


class Command(BaseCommand):
    help = ("Runs by status (pending, running, waiting for an approval or a child run, "
            "completed, failed, cancelled; and how many were retried), and per chain and seed "
            "task type: finished runs, success rate, p50 and p95 seconds.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options) -> None:
        counts = selectors.run_statistics(user=None)
        # A seed task type's runs (math_chain, ...) have no chain: its row names the type.
        chains = [{"chain": row["chain"].name if row["chain"] else None,
                   "task_type": row["task_type"], "finished_runs": row["runs"],
                   "success_rate": round(row["success_rate"], 4), "p50_seconds": row["p50"],
                   "p95_seconds": row["p95"]}
                  for row in selectors.chain_performance(user=None)]
        if options["json"]:
            self.stdout.write(json.dumps({"runs": counts, "chains": chains}, indent=2))
            return
        self.stdout.write("  ".join(f"{k}={v}" for k, v in counts.items()))
        for row in chains:
            p50 = "-" if row["p50_seconds"] is None else f"{row['p50_seconds']:.2f}s"
            p95 = "-" if row["p95_seconds"] is None else f"{row['p95_seconds']:.2f}s"
            name = row["chain"] or f"task type {row['task_type']}"
            self.stdout.write(f"{name}: {row['finished_runs']} finished, "
                              f"{row['success_rate']:.0%} completed, p50 {p50}, p95 {p95}")
