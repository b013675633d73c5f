"""Extension points the core calls and other apps fill in (core never imports them).

``decision_sinks`` run inside the transaction that stores new decisions: the review queue
registers one that writes review items, so a decision and its review item commit together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oversight.config import SystemEntry
    from oversight.models import Decision

DecisionSink = Callable[["SystemEntry", Sequence["Decision"]], None]
decision_sinks: list[DecisionSink] = []


def register_decision_sink(sink: DecisionSink) -> None:
    if sink not in decision_sinks:
        decision_sinks.append(sink)


def run_decision_sinks(system: SystemEntry, decisions: Sequence[Decision]) -> None:
    for sink in decision_sinks:
        sink(system, decisions)
