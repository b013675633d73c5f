from __future__ import annotations

import json
import random
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dashboards import references
from oversight import simulator
from oversight.models import AISystem

SYSTEM = "nightly-recs"


class Command(BaseCommand):
    help = ("Give the demo's recommender a reference: listening as it was before March 2020 (the "
            "simulator's normal traffic), unless it has one already.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=5000)
        parser.add_argument("--replace", action="store_true", help="store a new one even if there is one")

    def handle(self, *args: Any, **opts: Any) -> None:
        system = AISystem.objects.filter(slug=SYSTEM).first()
        if system is None:
            self.stdout.write(f"no system {SYSTEM!r}: run seed_demo first")
            return
        if references.current(system.id) is not None and not opts["replace"]:
            return
        rng = random.Random(2019)
        lines = []
        for _ in range(opts["rows"]):
            features, _, _, confidence = simulator.nightly_row(rng, "normal")
            lines.append(json.dumps({**features, "prediction.confidence": confidence}))
        ref = references.store_upload(system, "\n".join(lines).encode(), "jsonl", None,
                                      categorical=["activity", "genre"], note="demo: listening before March 2020")
        self.stdout.write(f"{SYSTEM}: reference of {ref.rows} rows ({', '.join(ref.columns)})")
