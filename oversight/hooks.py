"""Extension points the core calls and other apps fill in (core never imports them).

``decision sinks`` run inside the transaction that stores new decisions: the review queue
registers one that writes review items, so a decision and its review item commit together.
Each sink says which decisions it wants; a decision no sink wants is stored with one
autocommit statement (no transaction round trips) on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oversight.config import SystemEntry
    from oversight.models import Decision

DecisionSink = Callable[["SystemEntry", Sequence["Decision"]], None]
Wants = Callable[["Decision"], bool]
decision_sinks: list[tuple[DecisionSink, Wants]] = []


def register_decision_sink(sink: DecisionSink, wants: Wants) -> None:
    if all(s is not sink for s, _ in decision_sinks):
        decision_sinks.append((sink, wants))


def wanted(decision: Decision) -> bool:
    return any(w(decision) for _, w in decision_sinks)


def run_decision_sinks(system: SystemEntry, decisions: Sequence[Decision]) -> None:
    for sink, wants in decision_sinks:
        chosen = [d for d in decisions if wants(d)]
        if chosen:
            sink(system, chosen)
