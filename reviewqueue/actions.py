"""Review queue writes: enqueue (inside the decision's transaction), claim, resolve, release.

Claims take the next free item with ``SELECT … FOR UPDATE SKIP LOCKED`` and a lease, so two
people never get the same item; resolution is a compare-and-set on (status, claimant, live lease).

A lease follows the person: the open item page renews it (``heartbeat``) and gives it back when
it closes (``release``). A lapsed lease frees the item at once (``claim_statement.claimable``); the beat job
(``expire_due``) puts lapsed claims back to ``open`` so lists show them free. Every claim, give-back
and lease expiry is audited (``lease.claim``, ``lease.give_back``, ``lease.expire``), as every
resolution is (``review.<action>``). Each write takes an optional ``now``: tests inject the clock.

Over ~400 lines on purpose: every write to a review item (claim, lease, resolution, give-back,
expiry) is here, so the item's locking rules are read and changed in one place.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import DurationField, ExpressionWrapper, F
from django.utils import timezone
from uuid_utils.compat import uuid7

from oversight import audit, events, transitions, webhooks
from oversight.config import SystemEntry
from oversight.errors import ActionError
from oversight.models import AISystem, Decision, Outcome
from reviewqueue import claim_statement, triage
from reviewqueue.models import ReviewItem

LEASE_S = 300
EXPIRED_BY = "oversight"  # who expired a decision: no person did


def needs_review(d: Decision) -> bool:
    return d.status == Decision.Status.PENDING_REVIEW or d.audit


def second_opinion(decision_id: uuid.UUID, share: float) -> bool:
    """Whether a decision's item also goes to a second operator: a fixed draw from its id (the random
    low bits of a UUIDv7), so the choice is the same on every replay of the decision."""
    return share > 0 and (decision_id.int & 0xFFFFFFFF) / 2**32 < share


def review_items_for(system: SystemEntry, decisions: Sequence[Decision]) -> list[ReviewItem]:
    """Decision rows: one review item per decision a person must see, stored in the decision's
    transaction, and a second-opinion item for the system's ``double_review_rate`` share of them."""
    sla = timedelta(seconds=system.review_sla_s)
    items: list[ReviewItem] = []
    for d in decisions:
        if not needs_review(d):
            continue
        kinds = [ReviewItem.Kind.GATE if d.status == Decision.Status.PENDING_REVIEW else ReviewItem.Kind.AUDIT]
        if second_opinion(d.id, system.double_review_rate):
            kinds.append(ReviewItem.Kind.SECOND)
        items.extend(
            ReviewItem(
                id=uuid7(),
                decision_id=d.id,
                system_id=d.system_id,
                kind=kind,
                status=ReviewItem.Status.OPEN,
                due_at=d.created_at + sla,
                created_at=d.created_at,
                level=system.policy.level,
                confidence=d.confidence,
            )
            for kind in kinds
        )
    return items


SEEN_MESSAGE = ("you already gave your view on this decision through its other review item: a second "
                "opinion must come from another operator")


@transaction.atomic(durable=True)
def claim_next(
    user: User, system_slug: str | None = None, lease_s: int = LEASE_S, now: datetime | None = None,
    skip: Collection[Any] = (), filters: triage.Filters | None = None,
) -> ReviewItem | None:
    """Lease the next free item matching ``filters`` (the list's, ``triage.Filters``; ``system_slug``,
    as the API sends it, sets their system), other than the ids in ``skip`` (passed over)."""
    now = now or timezone.now()
    f = filters or triage.Filters()
    if system_slug:
        f = replace(f, system=system_slug)
    system_id = None
    if f.system:
        system_id = triage.system_id(f.system)
        if system_id is None:
            raise ActionError("not_found", f"no system {f.system!r}", "system")
    # The pick and the lease in one statement (one round trip; ``claim_statement``): the list's order
    # and filters, the lease as an UPDATE of the row it locked, which returns the item as it is now
    # and what it was (a lapsed lease is audited as such).
    sql, params = claim_statement.statement(f, system_id, frozenset(skip), now, user.pk)
    found = list(ReviewItem.objects.raw(
        sql, [*params, ReviewItem.Status.CLAIMED, user.pk, now, now + timedelta(seconds=lease_s)]))
    if not found:
        return None
    item = found[0]
    was_status, was_holder, was_until = (getattr(item, f"was_{k}") for k in ("status", "claimed_by", "until"))
    if was_status == ReviewItem.Status.CLAIMED:
        _audit_expiry(item, was_holder, was_until)
    _audit(user, "lease.claim", item)
    return item


def peek_next(user: User, filters: triage.Filters | None = None, skip: Collection[Any] = (),
              now: datetime | None = None) -> uuid.UUID | None:
    """The item ``claim_next`` would hand this person now, taking nothing: the item page prefetches
    it. Someone else may claim it first; the claim after the person's action decides."""
    f = filters or triage.Filters()
    system_id = triage.system_id(f.system) if f.system else None
    if f.system and system_id is None:
        return None
    found: uuid.UUID | None = claim_statement.peek(f, system_id, frozenset(skip), now or timezone.now(), user.pk)
    return found


@transaction.atomic(durable=True)
def claim_item(user: User, item_id: Any, lease_s: int = LEASE_S, now: datetime | None = None) -> ReviewItem:
    """Claim one named item (the operator opened it): free, lease lapsed, or already ours.

    Ours with a live lease: the lease is renewed (the page's heartbeat), and nothing is audited.
    Ours with a lapsed lease that nobody took since: claimed again, the lapse audited."""
    now = now or timezone.now()
    row = ReviewItem.objects.select_for_update(of=("self",)).filter(id=item_id).first()
    if row is None:
        raise ActionError("not_found", "no such review item")
    ours_live = row.status == ReviewItem.Status.CLAIMED and row.claimed_by_id == user.pk and _live(row, now)
    free = row.status == ReviewItem.Status.OPEN or (row.status == ReviewItem.Status.CLAIMED and not _live(row, now))
    if not (ours_live or free):
        _raise_taken(_with_people(item_id))
    if not ours_live and ReviewItem.objects.filter(id=item_id).filter(claim_statement.seen_by(user.pk)).exists():
        raise ActionError("conflict", SEEN_MESSAGE)
    lapsed_holder = row.claimed_by_id if row.status == ReviewItem.Status.CLAIMED and not ours_live else None
    lapsed_at = row.lease_expires_at
    ReviewItem.objects.filter(id=item_id).update(
        status=ReviewItem.Status.CLAIMED, claimed_by=user, lease_expires_at=now + timedelta(seconds=lease_s),
        **({} if ours_live else {"claimed_at": now}))
    item = _with_people(item_id)
    if lapsed_holder is not None:
        _audit_expiry(item, lapsed_holder, lapsed_at)
    if not ours_live:
        _audit(user, "lease.claim", item)
    return item


def heartbeat(user: User, item_id: Any, lease_s: int = LEASE_S, now: datetime | None = None) -> ReviewItem:
    """The open item page says its person is still there: renew the lease, or take the item
    again if it lapsed and nobody else has it. Someone else's claim or a resolution is a conflict."""
    return claim_item(user, item_id, lease_s, now)


def _live(item: ReviewItem, now: datetime) -> bool:
    return item.lease_expires_at is not None and item.lease_expires_at >= now


def lease_live(item: ReviewItem, now: datetime | None = None) -> bool:
    """Whether ``item`` is held right now: claimed, and its lease not lapsed (lists show the rest as open)."""
    return item.status == ReviewItem.Status.CLAIMED and _live(item, now or timezone.now())


def claimable_by(item: ReviewItem, user: User, now: datetime | None = None) -> bool:
    """Whether this person may hold ``item`` now: theirs already, or free (open, or a lapsed lease)
    and not a decision they already gave their view on (second opinions)."""
    now = now or timezone.now()
    if item.status == ReviewItem.Status.RESOLVED:
        return False
    if item.status == ReviewItem.Status.CLAIMED and _live(item, now):
        return item.claimed_by_id == user.pk
    return not ReviewItem.objects.filter(id=item.id).filter(claim_statement.seen_by(user.pk)).exists()


def as_claimed(item: ReviewItem, user: User, lease_s: int = LEASE_S, now: datetime | None = None) -> ReviewItem:
    """``item`` as it will be once this person claims it (in memory, not saved): the prefetched page
    shows it so. Their own live claim stays as it is."""
    now = now or timezone.now()
    if not (item.status == ReviewItem.Status.CLAIMED and item.claimed_by_id == user.pk and _live(item, now)):
        item.status, item.claimed_by, item.claimed_at = ReviewItem.Status.CLAIMED, user, now
        item.lease_expires_at = now + timedelta(seconds=lease_s)
    return item


def _with_people(item_id: Any) -> ReviewItem:
    item = ReviewItem.objects.select_related("claimed_by", "resolved_by").filter(id=item_id).first()
    if item is None:
        raise ActionError("not_found", "no such review item")
    return item


def _decision_public_id(item: ReviewItem) -> str:
    return f"dec_{item.decision_id.hex}"


def _audit(user: User | None, action: str, item: ReviewItem, reason: str = "", **data: Any) -> None:
    """One lease event, on the item's decision and system (recorded last: it takes the chain lock)."""
    audit.record(user, action, system=AISystem(pk=item.system_id), target=_decision_public_id(item), reason=reason,
                 data={"item": item.public_id, "kind": item.kind, **data})


def _audit_expiry(item: ReviewItem, holder_id: int | None, lapsed_at: datetime | None) -> None:
    holder = (User.objects.filter(pk=holder_id).values_list("username", flat=True).first() if holder_id else None
              ) or "someone"
    _audit(None, "lease.expire", item, reason=f"{holder}'s lease ran out",
           held_by=holder, lapsed_at=lapsed_at.isoformat() if lapsed_at else None)


def _raise_taken(item: ReviewItem) -> None:
    if item.status == ReviewItem.Status.RESOLVED:
        who = item.resolved_by.get_username() if item.resolved_by else "someone"
        if item.action == ReviewItem.Action.EXPIRE:
            raise ActionError("conflict", "nobody resolved it in time: it expired and the system's fallback answered")
        raise ActionError("conflict", f"already resolved ({item.action}) by {who}")
    who = item.claimed_by.get_username() if item.claimed_by else "someone"
    raise ActionError("conflict", f"claimed by {who}; the item is theirs now: wait for their lease to end or pick "
                                  "another item")


EXPIRE_CHUNK = 500


def expire_due(now: datetime | None = None) -> int:
    """Give the fallback to every pending decision older than its system's ``review_expiry_s``.

    Items an operator holds right now (a claim being worked) are skipped and expire on a later run
    once their lease is over; each chunk is one transaction. Returns how many expired."""
    now = now or timezone.now()
    expire_leases(now)
    total = 0
    while True:
        n = _expire_chunk(now)
        total += n
        if n < EXPIRE_CHUNK:
            return total


def expire_leases(now: datetime | None = None) -> int:
    """Put every claim whose lease lapsed back to ``open``, each lapse audited; returns how many.

    A lapsed item is claimable already (``claim_statement.claimable``); this makes lists show it free too."""
    now = now or timezone.now()
    total = 0
    while True:
        n = _expire_leases_chunk(now)
        total += n
        if n < EXPIRE_CHUNK:
            return total


@transaction.atomic(durable=True)
def _expire_leases_chunk(now: datetime) -> int:
    lapsed = list(
        ReviewItem.objects.filter(status=ReviewItem.Status.CLAIMED, lease_expires_at__lt=now)
        .select_for_update(skip_locked=True, of=("self",)).order_by("lease_expires_at")[:EXPIRE_CHUNK]
    )
    if not lapsed:
        return 0
    ReviewItem.objects.filter(id__in=[i.id for i in lapsed]).update(
        status=ReviewItem.Status.OPEN, claimed_by=None, lease_expires_at=None)
    for item in lapsed:
        _audit_expiry(item, item.claimed_by_id, item.lease_expires_at)
    return len(lapsed)


@transaction.atomic(durable=True)
def _expire_chunk(now: datetime) -> int:
    due = (
        ReviewItem.objects.filter(claim_statement.claimable(now), kind=ReviewItem.Kind.GATE,
                                  system__review_expiry_s__gt=0, decision__status=Decision.Status.PENDING_REVIEW)
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
    user: User, item_id: Any, action: str, note: str = "", output: Any = None, output_given: bool = False,
    now: datetime | None = None,
) -> ReviewItem:
    if action not in ReviewItem.Action.values:
        raise ActionError("invalid", "action must be approve, reject or modify", "action")
    if action == ReviewItem.Action.MODIFY and not output_given:
        raise ActionError("invalid", "modify needs the output to release instead", "output")
    return _resolve(user, item_id, action, note.strip(), output, now or timezone.now())


@transaction.atomic(durable=True)
def _resolve(user: User, item_id: Any, action: str, note: str, output: Any, now: datetime) -> ReviewItem:
    # Only a live lease resolves: a person whose lease ran out claims the item again first (the
    # page does it on its next heartbeat if nobody else took the item meanwhile).
    updated = ReviewItem.objects.filter(
        id=item_id, status=ReviewItem.Status.CLAIMED, claimed_by=user, lease_expires_at__gte=now
    ).update(
        status=ReviewItem.Status.RESOLVED,
        resolved_by=user,
        resolved_at=now,
        action=action,
        note=note,
        output=output if action == ReviewItem.Action.MODIFY else None,
        lease_expires_at=None,
        agrees=action == ReviewItem.Action.APPROVE,
    )
    item = (
        ReviewItem.objects.select_related("decision", "system", "claimed_by", "resolved_by").filter(id=item_id).first()
    )
    if item is None:
        raise ActionError("not_found", "no such review item")
    if updated != 1:
        if item.status == ReviewItem.Status.RESOLVED or item.claimed_by_id not in (None, user.pk):
            _raise_taken(item)
        if item.claimed_by_id == user.pk:
            raise ActionError("conflict", "your lease ran out; claim it again (nobody else has taken it yet)")
        raise ActionError("conflict", "claim this item before resolving it (it is not yours, or your lease ran out)")
    system = item.system
    if item.kind == ReviewItem.Kind.SECOND:
        # A second opinion is recorded, not acted on: the decision follows its first item.
        audit.record(user, "review.second_opinion", system=system, target=_decision_public_id(item), reason=note,
                     data={"item": item.public_id, "kind": item.kind, "action": action})
        events.send_on_commit([events.system_group(system.slug)],
                              {"type": "review", "item": item.public_id, "action": action})
        return item
    decision = transitions.lock(item.decision_id)  # approving asks transitions.approved_output, as the page does
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
    if item.kind == ReviewItem.Kind.GATE:
        webhooks.enqueue(decision, webhooks.RESOLVED)
    elif decision.status == Decision.Status.OVERRIDDEN:
        webhooks.enqueue(decision, webhooks.OVERRIDDEN)
    audit.record(user, f"review.{action}", system=system, target=decision.public_id, reason=note,
                 data={"item": item.public_id, "kind": item.kind})
    events.send_on_commit(
        [events.system_group(system.slug)],
        {"type": "review", "item": item.public_id, "decision": decision.public_id, "action": action},
    )
    item.decision = decision
    return item


@transaction.atomic(durable=True)
def release(user: User, item_id: Any, now: datetime | None = None, why: str = "") -> ReviewItem:
    """Give an item back (the button, the G key, or the page closing): open for others at once."""
    updated = ReviewItem.objects.filter(id=item_id, status=ReviewItem.Status.CLAIMED, claimed_by=user).update(
        status=ReviewItem.Status.OPEN, claimed_by=None, lease_expires_at=None
    )
    item = _with_people(item_id)
    if updated != 1:
        if item.status == ReviewItem.Status.OPEN:
            raise ActionError("conflict", "this item is not claimed")
        _raise_taken(item)
    _audit(user, "lease.give_back", item, reason=why)
    return item


def close_audit_items(decision: Decision, person: Any, now: datetime) -> None:
    """A person overrode ``decision`` from its page (oversight.overrides): its open after-the-fact
    audit items are answered by that (a modification by them); second opinions stay open."""
    ReviewItem.objects.filter(
        decision_id=decision.id, kind=ReviewItem.Kind.AUDIT,
        status__in=[ReviewItem.Status.OPEN, ReviewItem.Status.CLAIMED],
    ).update(status=ReviewItem.Status.RESOLVED, action=ReviewItem.Action.MODIFY, resolved_by=person,
             resolved_at=now, lease_expires_at=None, output=decision.output, agrees=False,
             note="overridden from the decision's page")
