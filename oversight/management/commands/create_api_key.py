from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from oversight import actions, people_audit
from oversight.models import AISystem


class Command(BaseCommand):
    help = "Create an API key for a system. The key is printed once; only its hash is stored."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("system", help="the system's slug")
        parser.add_argument("--name", default="", help="a label for the key, e.g. prod-recommender")
        parser.add_argument("--quiet", action="store_true", help="print only the key")
        parser.add_argument("--by", default="", metavar="PERSON",
                            help="the person the audit log names (default: the operating-system user)")

    def handle(self, *args: Any, **opts: Any) -> None:
        system = AISystem.objects.filter(slug=opts["system"]).first()
        if system is None:
            known = ", ".join(AISystem.objects.values_list("slug", flat=True)) or "none yet"
            raise CommandError(f"no system {opts['system']!r} (known: {known})")
        try:
            person = people_audit.command_person(opts["by"])
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        key, secret = actions.create_api_key(person, system, opts["name"])
        if opts["quiet"]:
            self.stdout.write(secret)
            return
        self.stdout.write(f"API key for {system.slug} (shown once, stored hashed):\n{secret}")
