"""The claim-next statement is compiled once per filter shape with stand-ins for the clock and the
person (``reviewqueue.claim_statement``); a claim must behave exactly as if it were compiled for
that claim: same SQL, same parameters, for every filter of the list, and a second person or a
later clock never inherits the first one's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from reviewqueue import actions, claim_statement, triage
from reviewqueue.models import ReviewItem
from tests.conftest import World
from tests.integration.test_review_api import new_operator
from tests.integration.test_review_filters_next import DRIFT, make_item

FILTERS = [
    triage.Filters(),
    triage.Filters(kind="audit"),
    triage.Filters(level=1),
    triage.Filters(reason="drift"),
    triage.Filters(older_than_min=90),
    triage.Filters(search="listener-7"),
    triage.Filters(search="dec_" + "ab" * 16),
    triage.Filters(kind="gate", level=2, reason="PSI", older_than_min=5, search="x"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f.params()) or "none")
@pytest.mark.parametrize("skip", [frozenset(), frozenset({uuid.UUID(int=7), uuid.UUID(int=9)})], ids=["", "skip"])
def test_the_cached_statement_is_the_one_compiled_for_this_claim(world: World, filters, skip):
    clocks = [datetime(2026, 3, 1, 23, 30, 0, 123456, tzinfo=UTC), datetime(2026, 12, 4, 9, 0, tzinfo=UTC)]
    for now, user in zip(clocks, (world.operator, world.admin), strict=True):
        with transaction.atomic():
            fresh = claim_statement._compile(filters, world.critical.id, skip, now, user.pk)
            cached = claim_statement.statement(filters, world.critical.id, skip, now, user.pk)
        assert cached == fresh
        assert now in fresh[1]  # the clock and the person are parameters
        assert user.pk in fresh[1]


@pytest.mark.django_db(transaction=True)
def test_a_second_person_is_kept_from_the_decision_they_judged_even_with_a_warm_statement(world: World):
    """Second opinions: the person who holds one item of a decision never gets its other item,
    whoever warmed the cached statement for the same filters."""
    other = new_operator("second-claimer")
    item = make_item(world.supervised, "listener-9", [DRIFT])
    ReviewItem.objects.create(decision_id=item.decision_id, system=world.supervised, kind=ReviewItem.Kind.SECOND,
                              due_at=item.due_at, created_at=item.created_at, level=item.level,
                              confidence=item.confidence)
    f = triage.Filters(system=world.supervised.slug)
    first = actions.claim_next(world.operator, filters=f)
    assert first is not None
    assert actions.claim_next(world.operator, filters=f) is None  # the same decision's other item
    second = actions.claim_next(other, filters=f)
    assert second is not None
    assert second.id != first.id
    assert second.decision_id == first.decision_id


@pytest.mark.django_db(transaction=True)
def test_an_injected_clock_reaches_the_lease_and_the_age_filter(world: World):
    item = make_item(world.supervised, "listener-3", [DRIFT], age=timedelta(minutes=30))
    f = triage.Filters(system=world.supervised.slug, older_than_min=60)
    now = item.created_at + timedelta(minutes=10)
    assert actions.claim_next(world.operator, filters=f, now=now) is None  # 10 minutes old then
    later = item.created_at + timedelta(minutes=61)
    got = actions.claim_next(world.operator, filters=f, now=later)
    assert got is not None
    assert got.id == item.id
    assert got.lease_expires_at == later + timedelta(seconds=actions.LEASE_S)
    # Its lease lapses on that clock: another operator takes it, and the lapse is recorded.
    other = new_operator("after-lapse")
    again = actions.claim_next(other, filters=f, now=later + timedelta(seconds=actions.LEASE_S + 1))
    assert again is not None
    assert again.id == item.id
    assert again.claimed_by_id == other.pk
