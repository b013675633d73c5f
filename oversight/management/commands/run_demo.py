from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from oversight import demo, embedded


class Command(BaseCommand):
    help = "Migrate, seed the demo, then run web + Celery workers + beat + traffic simulator until Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("OVERSIGHT_PORT", "8000")))
        parser.add_argument("--no-simulator", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        store = demo.seed()
        call_command("seed_demo_reference")  # the recommender's "before March 2020" (dashboards app)
        base = Path(settings.BASE_DIR)
        env = {
            **os.environ,
            "OVERSIGHT_PORT": str(opts["port"]),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        procfile = base / "Procfile"
        names = ["web", "scoring", "monitoring", "beat"] + ([] if opts["no_simulator"] else ["simulator"])
        url = f"http://127.0.0.1:{opts['port']}/"
        self.stdout.write(self.style.SUCCESS(f"\nOversight demo on {url}"))
        for username, password in store["passwords"].items():
            self.stdout.write(f"  log in as {username:<9} password {password}")
        self.stdout.write(f"  DATABASE_URL={settings.DATABASE_URL}\n  REDIS_URL={settings.REDIS_URL}")
        self.stdout.write("  Ctrl-C stops everything.\n")
        honcho = [sys.executable, "-m", "honcho", "-f", str(procfile), "-d", str(base), "start", *names]
        proc = subprocess.Popen(honcho, env=env, cwd=base)  # noqa: S603
        try:
            proc.wait()
        except KeyboardInterrupt:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        finally:
            if os.environ.get("OVERSIGHT_EMBEDDED_STARTED") == "1" and not os.environ.get("OVERSIGHT_KEEP_SERVICES"):
                time.sleep(0.5)
                embedded.stop()
                self.stdout.write("embedded PostgreSQL and Redis stopped (data kept under var/)")
