"""Start a run of a chain from the command line, optionally waiting for its result."""
import json
import time

from django.core.management.base import BaseCommand, CommandError

from chains import audit, services
from chains.errors import ChainError
from chains.models import Chain, Run, RunStatus, RunTrigger


class Command(BaseCommand):
    help = (
        "Start a run of the chain named NAME (or with id ID). Prints the bare run id on stdout. "
        "With --wait, shows progress on stderr, then prints the run's result as JSON on stdout; "
        "exits 1 if it did not complete. Inputs that do not fit the chain's inputs schema are "
        "printed one 'field: reason' a line, and the command exits 1."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("chain", help="chain name or numeric id")
        parser.add_argument("--input", dest="inputs", help="run inputs as JSON")
        parser.add_argument("--wait", action="store_true", help="wait and print the result")
        parser.add_argument("--timeout", type=float, default=600, help="seconds to wait")

    @audit.from_command
    def handle(self, *args, chain: str, inputs: str | None, wait: bool, timeout: float,
               **options) -> None:
        target = self._chain(chain)
        try:
            parsed = json.loads(inputs) if inputs is not None else None
        except json.JSONDecodeError as exc:
            raise CommandError(f"--input is not JSON: {exc}") from exc
        try:
            run = services.run_start(chain=target, inputs=parsed, trigger=RunTrigger.COMMAND)
        except ChainError as exc:  # one "field: reason" a line, e.g. "inputs.age: ..."
            raise CommandError("\n".join(f"{field}: {reason}"
                                         for field, reasons in exc.errors.items()
                                         for reason in reasons)) from exc
        self.stdout.write(str(run.id))  # bare, for scripts: RUN=$(manage.py run_chain …)
        if not wait:
            return
        run = self._wait(run, timeout)
        if run.status != RunStatus.COMPLETED:
            raise CommandError(f"run {run.id} ended {run.status}: {run.error}")
        self.stdout.write(json.dumps(run.result))

    def _chain(self, ref: str) -> Chain:
        chain = Chain.objects.filter(name=ref).first()
        if chain is None and ref.isdigit():
            chain = Chain.objects.filter(pk=int(ref)).first()
        if chain is None:
            raise CommandError(f"no chain named or numbered {ref!r}")
        return chain

    def _wait(self, run: Run, timeout: float) -> Run:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            run.refresh_from_db()
            running = run.step_runs.filter(status=RunStatus.RUNNING, progress__isnull=False
                                           ).values_list("index", "progress", "progress_message")
            state = (run.status, run.steps_done, tuple(running))
            if state != last:
                line = f"{run.status} {run.steps_done}/{run.steps_total}"
                for index, progress, message in state[2]:  # what a running step says
                    line += f"; step {index + 1}: {progress:.0%}{' ' + message if message else ''}"
                self.stderr.write(line)
                last = state
            if run.is_finished:
                return run
            time.sleep(0.2)
        raise CommandError(f"run {run.id} still {run.status} after {timeout:g}s")
