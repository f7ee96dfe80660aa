"""Create or replace chains from an export_chains file, all or nothing."""
import json
import sys

from django.core.management.base import BaseCommand, CommandError

from chains import audit, services
from chains.errors import ChainError


class Command(BaseCommand):
    help = ("Read an export_chains file (or - for standard input) and create or replace each "
            "chain by name, with its steps and schedules. Everything is validated first: on "
            "any error nothing is written and the command exits 1 naming the field.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("file")

    @audit.from_command
    def handle(self, *args, file: str, **options) -> None:
        try:
            text = sys.stdin.read() if file == "-" else open(file, encoding="utf-8").read()
            data = json.loads(text)
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from exc
        try:
            chains = services.chains_import(data=data)
        except ChainError as exc:
            raise CommandError("; ".join(f"{k}: {', '.join(v)}"
                                         for k, v in exc.errors.items())) from exc
        self.stdout.write(f"imported {len(chains)} chain(s): "
                          f"{', '.join(c.name for c in chains)}")
