from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from oversight import demo


class Command(BaseCommand):
    help = "Create the demo people (operator, editor, admin), three systems (levels 1-3) and their API keys."

    def handle(self, *args: Any, **opts: Any) -> None:
        store = demo.seed()
        self.stdout.write("Demo people (username / password):")
        for username, password in store["passwords"].items():
            self.stdout.write(f"  {username:<9} {password}")
        self.stdout.write("Demo systems: " + ", ".join(store["keys"]))
        self.stdout.write(f"(passwords and the simulator's API keys are kept in {demo._secrets_file()})")
