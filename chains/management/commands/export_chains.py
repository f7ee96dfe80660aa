"""Write chains (steps and schedules included) as JSON."""
import json

from django.core.management.base import BaseCommand, CommandError

from chains.selectors import chains_export


class Command(BaseCommand):
    help = ("Print the named chains (all when none is named) with their steps and schedules "
            "as JSON, for import_chains. Exit 1 if a named chain does not exist.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME")

    def handle(self, *args, names: list[str], **options) -> None:
        data = chains_export(names or None)
        missing = sorted(set(names) - {c["name"] for c in data["chains"]})
        if missing:
            raise CommandError(f"no chain named {', '.join(map(repr, missing))}")
        self.stdout.write(json.dumps(data, indent=2, sort_keys=True))
