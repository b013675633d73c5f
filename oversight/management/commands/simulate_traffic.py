from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from oversight import demo, simulator


class Command(BaseCommand):
    help = "Send demo decisions (and some outcomes) through the public API, as client services would."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--rate", type=float, default=3.0, help="decisions per second")
        parser.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")

    def handle(self, *args: Any, **opts: Any) -> None:
        keys = demo.load_secrets()["keys"]
        if not keys:
            raise CommandError("no demo API keys: run `python manage.py seed_demo` first")
        self.stdout.write(f"simulating {opts['rate']}/s decisions against {opts['url']} for {', '.join(keys)}")
        try:
            simulator.run(opts["url"], keys, opts["rate"], opts["duration"], log=self.stdout.write,
                          scenario=demo.scenario)
        except KeyboardInterrupt:
            self.stdout.write("simulator stopped")
