"""The claim-next statement, compiled by the ORM once per filter shape and process.

``actions.claim_next`` picks the next free item and leases it in one statement: the list's order
and filters as the ORM writes them (``triage.ORDER``, ``triage.apply``, skipped ids, "not already
judged by this person"), locked with ``FOR UPDATE SKIP LOCKED``, under an ``UPDATE … RETURNING``.
Building and compiling that queryset costs about 2 ms of Python per claim, more than the database
spends on the claim, and on a 2-core machine it decides the tail: with 32 operators holding an
item about a second each, p99 was 13–15 ms with it and 6.5–7 ms without it (``make
bench-review`` measures both, ``CACHE`` on and off, in one run).

So the statement is compiled with stand-ins for what changes from claim to claim: the clock
(``NOW``; every datetime parameter is the clock or an offset from it, as the lease and the
"older than" filter are) and the person (``PERSON``). ``bind`` puts the real ones in. The filters'
own values and the skipped ids are part of the cache key: a new filter compiles once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce

from reviewqueue import triage
from reviewqueue.models import ReviewItem

CACHE = True  # off: compile on every claim (the benchmark's comparison)
NOW = datetime(2000, 1, 1, tzinfo=UTC)
PERSON = -1_000_000_007  # no user has a negative id

# A table name from the model; the pick is the ORM's compiled SQL, its values are parameters.
_CLAIM_SQL = (
    "WITH picked AS ({picked}) "  # noqa: S608
    f"UPDATE {ReviewItem._meta.db_table} AS item "
    "SET status = %s, claimed_by_id = %s, claimed_at = %s, lease_expires_at = %s FROM picked "
    "WHERE item.id = picked.id RETURNING item.*, picked.status AS was_status, "
    "picked.claimed_by_id AS was_claimed_by, picked.lease_expires_at AS was_until"
)


def claimable(now: datetime) -> Q:
    return Q(status=ReviewItem.Status.OPEN) | Q(status=ReviewItem.Status.CLAIMED, lease_expires_at__lt=now)


def seen_by(user_id: int) -> Exists:
    """Items of a decision this person already holds or judged through another item: a second
    opinion must come from someone else (and the first from someone other than the second)."""
    return Exists(ReviewItem.objects.filter(decision_id=OuterRef("decision_id"))
                  .filter(Q(claimed_by_id=user_id) | Q(resolved_by_id=user_id)).exclude(id=OuterRef("id")))


def _queryset(filters: triage.Filters, system_id: int | None, skip: frozenset[Any], now: datetime,
              user_id: int) -> QuerySet[ReviewItem]:
    """The items this person may take next, in the list's order."""
    qs = ReviewItem.objects.filter(claimable(now))
    if system_id is not None:
        qs = qs.filter(system_id=system_id)
    qs = triage.apply(qs, filters.rest, now)
    if skip:
        qs = qs.exclude(id__in=list(skip))
    # The exclusion checked row by row as the walk reaches them (one probe of the decision_id index
    # each), not as an anti join: for LIMIT 1 the planner spreads the join's one-off cost over the
    # whole queue and reads every item this person ever held or judged (a sequential scan: 100 ms
    # at 1,000,000 items). Wrapped, NOT EXISTS is not turned into a join.
    return qs.alias(seen=Coalesce(seen_by(user_id), False)).filter(seen=False).order_by(*triage.ORDER)


def peek(filters: triage.Filters, system_id: int | None, skip: frozenset[Any], now: datetime,
         user_id: int) -> Any | None:
    """The id of the item this person's next claim would take now, taking nothing (no lock, no
    lease): what the item page prefetches. Someone else may claim it first; the claim then decides."""
    return _queryset(filters, system_id, skip, now, user_id).values_list("id", flat=True).first()


def _compile(filters: triage.Filters, system_id: int | None, skip: frozenset[Any], now: datetime,
             user_id: int) -> tuple[str, list[Any]]:
    """The statement and its parameters (the lease's four last); inside the claim's transaction."""
    picked = (_queryset(filters, system_id, skip, now, user_id).select_for_update(skip_locked=True, of=("self",))
              .values("id", "status", "claimed_by_id", "lease_expires_at")[:1])
    sql, params = picked.query.sql_with_params()
    return _CLAIM_SQL.format(picked=sql), list(params)


@functools.lru_cache(maxsize=256)
def _cached(filters: triage.Filters, system_id: int | None, skip: frozenset[Any]) -> tuple[str, tuple[Any, ...]]:
    sql, params = _compile(filters, system_id, skip, NOW, PERSON)
    return sql, tuple(params)


def bind(params: Sequence[Any], now: datetime, user_id: int) -> list[Any]:
    return [now + (p - NOW) if isinstance(p, datetime) else user_id if type(p) is int and p == PERSON else p
            for p in params]


def statement(filters: triage.Filters, system_id: int | None, skip: frozenset[Any], now: datetime,
              user_id: int) -> tuple[str, list[Any]]:
    """The claim statement for these filters, and its parameters but the lease's."""
    if not CACHE:
        return _compile(filters, system_id, skip, now, user_id)
    sql, params = _cached(filters, system_id, skip)
    return sql, bind(params, now, user_id)
