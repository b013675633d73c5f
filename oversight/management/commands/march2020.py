from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from oversight import demo
from oversight.errors import ActionError


class Command(BaseCommand):
    help = ("The demo's March 2020: the simulated listeners' routines change overnight (no commute, home "
            "all day, more sleep and rest, calmer music). --off: back to normal.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--off", action="store_true", help="back to the usual routines")

    def handle(self, *args: Any, **opts: Any) -> None:
        name = "normal" if opts["off"] else "march-2020"
        try:
            demo.set_scenario(None, name)
        except (ActionError, OSError) as exc:
            raise CommandError(f"could not switch the scenario: {exc}") from exc
        self.stdout.write(f"scenario: {demo.SCENARIOS[name]} (the simulator follows within 2 s)")
        if opts["off"]:
            self.stdout.write("The drift alerts resolve after two calm windows; a tripped breaker half-opens "
                              "after its cool-down and closes once the listeners play the tracks through again.")
            return
        from oversight.music import models, world

        cat = world.catalogue()
        self.stdout.write(
            "Watch /monitor/nightly-recs/: within a window or two (2 minutes each) the drift heat map turns red "
            "(hour, activity, tempo, energy, genre, confidence), the mean reward falls as listeners skip, more "
            "decisions go to people, and the breaker opens (mean reward under 0.6): the fallback answers.")
        self.stdout.write("Calm tracks editors might pin for the night (context daypart=night):")
        for item in models.calm_items(5):
            d = cat.describe(cat.index[item])
            self.stdout.write(f"  {d['id']:<5} {d['title']:<18} {d['genre']:<10} energy {d['energy']:.2f}, "
                              f"{d['tempo']} bpm")
        self.stdout.write("To take the collaborative filter out: engage the kill switch of model 'collab' of "
                          "nightly-recs. `manage.py march2020 --off` goes back to normal.")
