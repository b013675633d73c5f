from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from oversight import demo, supervise


class Command(BaseCommand):
    help = ("Migrate, seed the demo, then run web + Celery workers + beat + traffic simulator under "
            "supervisord (a process that dies is started again) until Ctrl-C or SIGTERM.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("OVERSIGHT_PORT", "8000")))
        parser.add_argument("--no-simulator", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        port = opts["port"]
        try:
            with supervise.interrupts():  # SIGTERM while seeding still stops the embedded servers
                call_command("migrate", interactive=False, verbosity=0)
                store = demo.seed()
                call_command("seed_demo_reference")  # the recommender's "before March 2020" (dashboards app)
            names = [n for n in supervise.DEMO_PROGRAMS if not (opts["no_simulator"] and n == "simulator")]
            layout = supervise.default_layout(port)
            self.stdout.write(self.style.SUCCESS(f"\nOversight demo on http://127.0.0.1:{port}/"))
            for username, password in store["passwords"].items():
                self.stdout.write(f"  log in as {username:<9} password {password}")
            self.stdout.write(f"  DATABASE_URL={settings.DATABASE_URL}\n  REDIS_URL={settings.REDIS_URL}")
            self.stdout.write(f"  a process that dies is started again (logs: {layout.dir})")
            self.stdout.write(f"  {supervise.ctl_hint(layout)}")
            self.stdout.write("  Ctrl-C stops everything.\n")
            self.stdout.flush()
            supervise.supervise(names, supervise.runner_env(port), layout, say=self.stdout.write)
        except supervise.Interrupted:
            pass
        finally:
            supervise.stop_embedded_if_started(say=self.stdout.write)
