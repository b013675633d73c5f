"""Extension points the core calls and other apps fill in (the core never imports them).

``decision rows``: other apps add rows that must commit together with new decisions. The
review queue registers one that makes review items, so a decision and its review item are
written in one transaction (for a single decision, one statement). Each source says which
decisions it wants. Sources only build rows (no I/O).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from django.db import models

    from oversight.config import SystemEntry
    from oversight.models import Decision

RowSource = Callable[["SystemEntry", Sequence["Decision"]], "Sequence[models.Model]"]
Wants = Callable[["Decision"], bool]
decision_rows: list[tuple[RowSource, Wants]] = []


def register_decision_rows(source: RowSource, wants: Wants) -> None:
    if all(s is not source for s, _ in decision_rows):
        decision_rows.append((source, wants))


def rows_for(system: SystemEntry, decisions: Sequence[Decision]) -> list[models.Model]:
    """Every row the registered sources add for these decisions, in registration order."""
    rows: list[models.Model] = []
    for source, wants in decision_rows:
        chosen = [d for d in decisions if wants(d)]
        if chosen:
            rows.extend(source(system, chosen))
    return rows


# ``overridden``: apps told, in the override's transaction, that a person replaced a released
# decision's output outside their own flow (the review queue closes the decision's open audit items).
Overridden = Callable[["Decision", object, "datetime"], None]
overridden: list[Overridden] = []


def register_overridden(listener: Overridden) -> None:
    if listener not in overridden:
        overridden.append(listener)


def decision_overridden(decision: Decision, person: object, now: datetime) -> None:
    for listener in overridden:
        listener(decision, person, now)
