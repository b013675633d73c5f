"""Writes to circuit breakers: a transition the evaluation calls for, or a person's hand.

Each write owns its transaction: the breaker's row, its timeline event and the audit event, a
config-epoch bump (so the very next decision of every process sees it, as for kill switches),
and a live push on commit. The rules themselves are in ``oversight.breakers``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as Person
from django.db import transaction
from django.utils import timezone

from oversight import audit, breakers, config, events
from oversight.errors import ActionError
from oversight.models import AISystem, Breaker, BreakerEvent

User = Person | AnonymousUser | None
JOB = "breaker"  # the actor label of the evaluation job


def message(system: AISystem, b: Breaker, by: str) -> dict[str, Any]:
    """The live push (API.md's ``breaker`` message)."""
    return {
        "type": "breaker", "system": system.slug, "model": b.model, "state": b.state,
        "label": breakers.LABELS.get(b.state, b.state), "reason": b.reason, "manual": b.manual,
        "awaiting_person": b.awaiting_person, "by": by,
        "at": (b.changed_at or timezone.now()).isoformat(),
    }


def _write(system: AISystem, b: Breaker, to: str, reason: str, *, actor: User, manual: bool,
           awaiting_person: bool, finding: breakers.Finding | None, now: datetime,
           timeline: list[BreakerEvent]) -> Breaker:
    """Move one breaker (the row is saved by the caller) and audit it; its timeline event is
    appended to ``timeline`` for the caller to store with the others."""
    user = actor if actor is not None and actor.is_authenticated else None
    by = user.get_username() if user is not None else JOB
    before = b.state
    b.state, b.reason, b.manual, b.awaiting_person = to, reason, manual, awaiting_person
    b.changed_at, b.changed_by = now, user
    timeline.append(BreakerEvent(
        system=system, model=b.model, from_state=before, to_state=to, reason=reason,
        metric=finding.metric if finding else "", value=finding.value if finding else None,
        threshold=finding.threshold if finding else None, actor_label=by, at=now,
    ))
    target = f"breaker:{system.slug}" + (f"/{b.model}" if b.model else "")
    audit.record(user, f"breaker.{to}", system=system, target=target, reason=reason, actor_label=by,
                 data={"from": before, "to": to, "model": b.model, "manual": manual,
                       "metric": finding.metric if finding else "",
                       "value": finding.value if finding else None,
                       "threshold": finding.threshold if finding else None})
    return b


_FIELDS = ["state", "reason", "manual", "awaiting_person", "changed_at", "changed_by"]


def _changed(moved: list[tuple[AISystem, Breaker]], timeline: list[BreakerEvent]) -> None:
    """Once per transaction that moved breakers: their rows, their timeline events in one statement,
    the gate's epoch, the live pushes (all at once), and every page's banner."""
    for _, b in moved:  # a few rows: plain UPDATEs beat bulk_update's CASE expressions here
        b.save(update_fields=_FIELDS)
    BreakerEvent.objects.bulk_create(timeline)
    config.bump_epoch()
    pushes = [([events.OVERVIEW_GROUP, events.system_group(s.slug)],
               message(s, b, b.changed_by.get_username() if b.changed_by else JOB)) for s, b in moved]
    events.send_all_on_commit(pushes)
    events.send_status_on_commit()


@transaction.atomic(durable=True)
def apply(changes: list[tuple[int, breakers.Change, str]] | list[tuple[int, str, breakers.Change, str]],
          now: datetime | None = None) -> list[Breaker]:
    """Store what one evaluation tick decided — ``(system id, [model,] change, state it was read
    in)``; no model: the system's own breaker — in one transaction (one epoch bump, one banner
    push). A breaker a person moved meanwhile is left alone. Returns the breakers that changed."""
    if not changes:
        return []
    now = now or timezone.now()
    keyed = [(c[0], "", c[1], c[2]) if len(c) == 3 else c for c in changes]
    ids = {sid for sid, _, _, _ in keyed}
    systems = AISystem.objects.in_bulk(ids)
    Breaker.objects.bulk_create([Breaker(system_id=sid, model=m) for sid, m, _, _ in keyed if sid in systems],
                                ignore_conflicts=True)
    rows = {(b.system_id, b.model): b for b in Breaker.objects.select_for_update().filter(system_id__in=ids)}
    done: list[tuple[AISystem, Breaker]] = []
    timeline: list[BreakerEvent] = []
    for sid, model, change, expected in keyed:
        b = rows.get((sid, model))
        if b is None or b.state != expected:
            continue
        done.append((systems[sid], _write(systems[sid], b, change.to, change.reason, actor=None, manual=False,
                                          awaiting_person=change.awaiting_person, finding=change.finding, now=now,
                                          timeline=timeline)))
    if done:
        _changed(done, timeline)
    return [b for _, b in done]


@transaction.atomic(durable=True)
def set_by_hand(actor: User, slug: str, state: str, reason: str, model: str = "") -> Breaker:
    """An admin opens or closes a breaker (the system's, or one model's) with a reason. A breaker
    opened by hand stays open until a person closes it."""
    reason, model = reason.strip(), model.strip()
    if state not in (breakers.OPEN, breakers.CLOSED):
        raise ActionError("invalid", "state must be 'open' or 'closed'", "state")
    if not reason:
        raise ActionError("invalid", f"say why: a reason is required to {'open' if state == 'open' else 'close'} "
                                     "a breaker by hand", "reason")
    system = AISystem.objects.filter(slug=slug).first()
    if system is None:
        raise ActionError("not_found", f"no system {slug!r}", "system")
    b, _ = Breaker.objects.select_for_update().get_or_create(system=system, model=model)
    if b.state == state and (state == breakers.CLOSED or b.manual):
        raise ActionError("conflict", f"the breaker is already {breakers.LABELS[state]}", "state")
    timeline: list[BreakerEvent] = []
    b = _write(system, b, state, reason, actor=actor, manual=state == breakers.OPEN, awaiting_person=False,
               finding=None, now=timezone.now(), timeline=timeline)
    _changed([(system, b)], timeline)
    return b


def timeline(system: AISystem, limit: int = 200) -> list[BreakerEvent]:
    """The system's breaker transitions, newest first."""
    return list(BreakerEvent.objects.filter(system=system)[:limit])
