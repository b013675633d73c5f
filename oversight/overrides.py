"""Overriding a released decision (level 2): a person replaces its output after it left.

Allowed within the system's ``override_window_s`` after release, for a decision that is
``released`` (not pending, rejected, already overridden or answered by a fallback). One
transaction: the decision changes (``transitions.override``), the person's output is recorded as a
human outcome, the audit log gets ``decision.override``, the review queue closes the decision's open
audit items (``hooks.decision_overridden``) and the client's webhook is queued in the outbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from oversight import audit, events, hooks, transitions, webhooks
from oversight.errors import ActionError
from oversight.models import Decision, Outcome

Status = transitions.Status


def window_closes_at(d: Decision) -> datetime | None:
    """When overriding ``d`` stops being allowed (None: it was never released)."""
    start = d.released_at or (d.created_at if d.status == Status.RELEASED else None)
    if start is None:
        return None
    return start + timedelta(seconds=d.system.override_window_s)


def refusal(d: Decision, now: datetime | None = None) -> str:
    """Why ``d`` cannot be overridden now, in words ("" when it can): the page and the action ask this."""
    now = now or timezone.now()
    if d.status != Status.RELEASED:
        return f"only a released decision can be overridden; this one is {d.status.replace('_', ' ')}"
    closes = window_closes_at(d)
    if closes is not None and now > closes:
        return (f"the override window ({d.system.override_window_s} s after release) closed at "
                f"{closes.astimezone(timezone.get_current_timezone()):%Y-%m-%d %H:%M:%S %Z}")
    return ""


@transaction.atomic(durable=True)
def override(user: User, decision_id: Any, output: Any, *, output_given: bool, note: str = "",
             now: datetime | None = None) -> Decision:
    """Replace a released decision's output (the system's fallback when no output is given)."""
    now = now or timezone.now()
    try:
        d = transitions.lock(decision_id)
    except Decision.DoesNotExist:
        raise ActionError("not_found", "no such decision") from None
    why = refusal(d, now)
    if why:
        raise ActionError("conflict", why, "output" if "window" in why else None)
    note = note.strip()
    # ``None`` (JSON null) is no output: the transition gives the fallback for it, so say so below.
    fallback = not output_given or output is None
    who = user.get_username()
    review = {"action": "override", "note": note, "by": who, "at": now.isoformat(), "kind": "override"}
    transitions.override(d, None if fallback else output, by=who, note=note, review=review)
    Outcome.objects.create(decision=d, source=Outcome.Source.HUMAN, label=d.output, observed_at=now)
    hooks.decision_overridden(d, user, now)
    audit.record(user, "decision.override", system=d.system, target=d.public_id, reason=note,
                 data={"fallback": fallback})
    webhooks.enqueue(d, webhooks.OVERRIDDEN)
    events.send_on_commit([events.system_group(d.system.slug)],
                          {"type": "review", "decision": d.public_id, "action": "override"})
    return d
