from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from oversight import demo
from oversight.errors import ActionError


class Command(BaseCommand):
    help = "Switch the demo's traffic: normal, march-2020 (routines change overnight) or feedback-loop."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("scenario", nargs="?", choices=list(demo.SCENARIOS),
                            help="leave out to print the scenario in force")

    def handle(self, *args: Any, **opts: Any) -> None:
        name = opts["scenario"]
        if name is None:
            self.stdout.write(demo.scenario())
            return
        try:
            demo.set_scenario(None, name)
        except (ActionError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"scenario: {demo.SCENARIOS[name]} (the simulator follows within 2 s)")
