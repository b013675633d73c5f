"""Review queue writes: enqueue (inside the decision's transaction), claim, resolve, release.

Claims take the next free item with ``SELECT … FOR UPDATE SKIP LOCKED`` and a lease, so two
people never get the same item; resolution is a compare-and-set on (status, claimant).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import DurationField, ExpressionWrapper, F, Q
from django.utils import timezone
from uuid_utils.compat import uuid7

from oversight import audit, events, transitions
from oversight.config import SystemEntry
from oversight.errors import ActionError
from oversight.models import AISystem, Decision, Outcome
from reviewqueue import triage
from reviewqueue.models import ReviewItem

LEASE_S = 300
EXPIRED_BY = "oversight"  # who expired a decision: no person did


def needs_review(d: Decision) -> bool:
    return d.status == Decision.Status.PENDING_REVIEW or d.audit


def review_items_for(system: SystemEntry, decisions: Sequence[Decision]) -> list[ReviewItem]:
    """Decision rows: one review item per decision a person must see, stored in the decision's transaction."""
    chosen = [d for d in decisions if needs_review(d)]
    sla = timedelta(seconds=system.review_sla_s)
    return [
        ReviewItem(
            id=uuid7(),
            decision_id=d.id,
            system_id=d.system_id,
            kind=ReviewItem.Kind.GATE if d.status == Decision.Status.PENDING_REVIEW else ReviewItem.Kind.AUDIT,
            status=ReviewItem.Status.OPEN,
            due_at=d.created_at + sla,
            created_at=d.created_at,
            level=system.policy.level,
            confidence=d.confidence,
        )
        for d in chosen
    ]


def _claimable(now: Any) -> Q:
    return Q(status=ReviewItem.Status.OPEN) | Q(status=ReviewItem.Status.CLAIMED, lease_expires_at__lt=now)


@transaction.atomic(durable=True)
def claim_next(user: User, system_slug: str | None = None, lease_s: int = LEASE_S) -> ReviewItem | None:
    now = timezone.now()
    qs = ReviewItem.objects.filter(_claimable(now))
    if system_slug:
        if not AISystem.objects.filter(slug=system_slug).exists():
            raise ActionError("not_found", f"no system {system_slug!r}", "system")
        qs = qs.filter(system__slug=system_slug)
    item = qs.select_for_update(skip_locked=True, of=("self",)).order_by(*triage.ORDER).first()
    if item is None:
        return None
    item.status = ReviewItem.Status.CLAIMED
    item.claimed_by = user
    item.lease_expires_at = now + timedelta(seconds=lease_s)
    item.save(update_fields=["status", "claimed_by", "lease_expires_at"])
    return item


@transaction.atomic(durable=True)
def claim_item(user: User, item_id: Any, lease_s: int = LEASE_S) -> ReviewItem:
    """Claim one named item (the operator opened it): free, lease expired, or already ours."""
    now = timezone.now()
    updated = (
        ReviewItem.objects.filter(id=item_id)
        .filter(_claimable(now) | Q(status=ReviewItem.Status.CLAIMED, claimed_by=user))
        .update(status=ReviewItem.Status.CLAIMED, claimed_by=user, lease_expires_at=now + timedelta(seconds=lease_s))
    )
    item = ReviewItem.objects.select_related("claimed_by", "resolved_by").filter(id=item_id).first()
    if item is None:
        raise ActionError("not_found", "no such review item")
    if updated != 1:
        _raise_taken(item)
    return item


def _raise_taken(item: ReviewItem) -> None:
    if item.status == ReviewItem.Status.RESOLVED:
        who = item.resolved_by.get_username() if item.resolved_by else "someone"
        if item.action == ReviewItem.Action.EXPIRE:
            raise ActionError("conflict", "nobody resolved it in time: it expired and the system's fallback answered")
        raise ActionError("conflict", f"already resolved ({item.action}) by {who}")
    who = item.claimed_by.get_username() if item.claimed_by else "someone"
    raise ActionError("conflict", f"claimed by {who}; wait for their lease to end or pick another item")


EXPIRE_CHUNK = 500


def expire_due(now: datetime | None = None) -> int:
    """Give the fallback to every pending decision older than its system's ``review_expiry_s``.

    Items an operator holds right now (a claim being worked) are skipped and expire on a later run
    once their lease is over; each chunk is one transaction. Returns how many expired."""
    now = now or timezone.now()
    total = 0
    while True:
        n = _expire_chunk(now)
        total += n
        if n < EXPIRE_CHUNK:
            return total


@transaction.atomic(durable=True)
def _expire_chunk(now: datetime) -> int:
    due = (
        ReviewItem.objects.filter(_claimable(now), kind=ReviewItem.Kind.GATE, system__review_expiry_s__gt=0,
                                  decision__status=Decision.Status.PENDING_REVIEW)
        .alias(expires_at=F("created_at") + ExpressionWrapper(
            F("system__review_expiry_s") * timedelta(seconds=1), output_field=DurationField()))
        .filter(expires_at__lt=now)
        .select_for_update(skip_locked=True, of=("self",))
        .select_related("system")
        .order_by("created_at")[:EXPIRE_CHUNK]
    )
    items = list(due)
    expired = []
    for item in items:
        decision = transitions.lock(item.decision_id)
        if decision.status != Decision.Status.PENDING_REVIEW:
            continue  # changed since it was selected: leave it, do not fail the chunk
        waited = item.system.review_expiry_s
        review = {"action": ReviewItem.Action.EXPIRE, "note": "", "by": EXPIRED_BY, "at": now.isoformat(),
                  "kind": item.kind}
        transitions.expire(decision, waited_s=waited, now=now, review=review)
        item.status, item.action, item.resolved_at = ReviewItem.Status.RESOLVED, ReviewItem.Action.EXPIRE, now
        item.claimed_by, item.lease_expires_at = None, None
        item.save(update_fields=["status", "action", "resolved_at", "claimed_by", "lease_expires_at"])
        audit.record(None, "review.expire", system=item.system, target=decision.public_id,
                     reason=f"no person resolved it within {waited} s",
                     data={"item": item.public_id, "kind": item.kind})
        expired.append(item)
    for slug in {item.system.slug for item in expired}:
        events.send_on_commit([events.system_group(slug)], {"type": "review", "action": "expire",
                                                            "count": sum(i.system.slug == slug for i in expired)})
    return len(expired)


def blocked_actions(item: ReviewItem) -> dict[str, str]:
    """The actions on ``item`` the rules refuse right now, each with why: the page disables them;
    ``resolve`` meets the same rule in ``transitions.approve``.

    Approving a queued (gate) decision releases the model's output, so it is refused while the
    system is stopped or every model behind the decision is (``transitions.approved_output``, the
    one rule, asked here); reject and modify always work, and confirming an after-the-fact audit
    releases nothing new."""
    if item.status == ReviewItem.Status.RESOLVED:
        return {}
    return _refused(item.kind, item.decision)


def _refused(kind: str, decision: Decision) -> dict[str, str]:
    if kind != ReviewItem.Kind.GATE:
        return {}
    try:
        transitions.approved_output(decision)
    except ActionError as exc:
        return {ReviewItem.Action.APPROVE: exc.message}
    return {}


def resolve(
    user: User, item_id: Any, action: str, note: str = "", output: Any = None, output_given: bool = False
) -> ReviewItem:
    if action not in ReviewItem.Action.values:
        raise ActionError("invalid", "action must be approve, reject or modify", "action")
    if action == ReviewItem.Action.MODIFY and not output_given:
        raise ActionError("invalid", "modify needs the output to release instead", "output")
    return _resolve(user, item_id, action, note.strip(), output)


@transaction.atomic(durable=True)
def _resolve(user: User, item_id: Any, action: str, note: str, output: Any) -> ReviewItem:
    now = timezone.now()
    updated = ReviewItem.objects.filter(id=item_id, status=ReviewItem.Status.CLAIMED, claimed_by=user).update(
        status=ReviewItem.Status.RESOLVED,
        resolved_by=user,
        resolved_at=now,
        action=action,
        note=note,
        output=output if action == ReviewItem.Action.MODIFY else None,
        lease_expires_at=None,
    )
    item = (
        ReviewItem.objects.select_related("decision", "system", "claimed_by", "resolved_by").filter(id=item_id).first()
    )
    if item is None:
        raise ActionError("not_found", "no such review item")
    if updated != 1:
        if item.status == ReviewItem.Status.RESOLVED or item.claimed_by_id not in (None, user.pk):
            _raise_taken(item)
        raise ActionError("conflict", "claim this item before resolving it")
    decision = transitions.lock(item.decision_id)  # approving asks transitions.approved_output, as the page does
    system = item.system
    who = user.get_username()
    review = {"action": action, "note": note, "by": who, "at": now.isoformat(), "kind": item.kind}
    if item.kind == ReviewItem.Kind.GATE:
        if action == ReviewItem.Action.APPROVE:
            transitions.approve(decision, by=who, note=note, now=now, review=review)
        elif action == ReviewItem.Action.MODIFY:
            transitions.release_with(decision, output, by=who, note=note, now=now, review=review)
        else:
            transitions.reject(decision, by=who, note=note, review=review)
    elif action == ReviewItem.Action.APPROVE:
        transitions.confirm(decision, by=who, note=note, review=review)
    else:
        transitions.override(decision, output if action == ReviewItem.Action.MODIFY else None, by=who, note=note,
                             review=review)
    # A person's resolution is an outcome too (marked human): what they released, kept or wrote.
    Outcome.objects.create(decision=decision, source=Outcome.Source.HUMAN, label=decision.output, observed_at=now)
    audit.record(user, f"review.{action}", system=system, target=decision.public_id, reason=note,
                 data={"item": item.public_id, "kind": item.kind})
    events.send_on_commit(
        [events.system_group(system.slug)],
        {"type": "review", "item": item.public_id, "decision": decision.public_id, "action": action},
    )
    item.decision = decision
    return item


@transaction.atomic(durable=True)
def release(user: User, item_id: Any) -> ReviewItem:
    updated = ReviewItem.objects.filter(id=item_id, status=ReviewItem.Status.CLAIMED, claimed_by=user).update(
        status=ReviewItem.Status.OPEN, claimed_by=None, lease_expires_at=None
    )
    item = ReviewItem.objects.select_related("claimed_by", "resolved_by").filter(id=item_id).first()
    if item is None:
        raise ActionError("not_found", "no such review item")
    if updated != 1:
        if item.status == ReviewItem.Status.OPEN:
            raise ActionError("conflict", "this item is not claimed")
        _raise_taken(item)
    return item
