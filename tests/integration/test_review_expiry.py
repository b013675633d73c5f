"""A pending decision nobody resolves within its system's ``review_expiry_s`` gets the fallback
(oversight.transitions.expire, run by reviewqueue.actions.expire_due on beat's schedule)."""

from __future__ import annotations

import json
from datetime import timedelta

from django.utils import timezone

from oversight import actions as core
from oversight.models import AuditEvent, Decision
from reviewqueue import actions
from reviewqueue.models import ReviewItem
from reviewqueue.tasks import expire_pending
from tests.conftest import decision_body
from tests.integration.test_review_api import claim, resolve, seen_by_client, submit, token_client


def expiring(world, seconds: int = 60) -> None:
    core.update_system(world.admin, "crit", {"review_expiry_s": seconds}, "expire unattended decisions")


def test_a_pending_decision_past_its_expiry_gets_the_fallback(world):
    expiring(world, 60)
    made = submit(world, "crit", decision_body(0.9))
    assert actions.expire_due(timezone.now() + timedelta(seconds=59)) == 0  # not yet
    assert seen_by_client(world, "crit", made["id"])["status"] == "pending_review"

    assert actions.expire_due(timezone.now() + timedelta(seconds=61)) == 1
    seen = seen_by_client(world, "crit", made["id"])
    assert (seen["status"], seen["output"]) == ("fallback", {"decision": "refer"})
    assert seen["reasons"][-1] == "no person resolved it within 60 s: the fallback answers"
    assert (seen["review"]["action"], seen["review"]["by"]) == ("expire", "oversight")
    item = ReviewItem.objects.get()
    assert (item.status, item.action) == ("resolved", "expire")
    assert AuditEvent.objects.filter(action="review.expire", target=made["id"]).count() == 1
    assert actions.expire_due(timezone.now() + timedelta(seconds=120)) == 0  # once only


def test_expiry_is_off_by_default_and_leaves_released_decisions_alone(world):
    waiting = submit(world, "crit", decision_body(0.9))  # level 1, expiry 0: waits for a person
    audited = submit(world, "sup", decision_body(0.95))  # released
    assert actions.expire_due(timezone.now() + timedelta(days=30)) == 0
    assert seen_by_client(world, "crit", waiting["id"])["status"] == "pending_review"
    assert seen_by_client(world, "sup", audited["id"])["status"] == "released"


def test_an_item_being_worked_waits_for_its_lease_then_expires_and_a_late_resolve_is_refused(world):
    expiring(world, 60)
    made = submit(world, "crit", decision_body(0.9))
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    later = timezone.now() + timedelta(seconds=120)  # past the expiry, inside the 300 s lease
    assert actions.expire_due(later) == 0
    assert actions.expire_due(later + timedelta(seconds=actions.LEASE_S)) == 1  # lease over
    r = resolve(op, item, action="approve")
    assert r.status_code == 409
    assert "expired" in r.json()["error"]["message"]
    assert Decision.objects.get().status == "fallback"
    assert seen_by_client(world, "crit", made["id"])["output"] == {"decision": "refer"}


def test_the_policy_field_is_part_of_the_api_and_validated(world):
    admin = token_client(world.admin)
    r = admin.patch("/api/v1/systems/crit", json.dumps({"review_expiry_s": 3600, "reason": "night shift"}),
                    content_type="application/json")
    assert r.status_code == 200, r.content
    assert r.json()["review_expiry_s"] == 3600
    r = admin.patch("/api/v1/systems/crit", json.dumps({"review_expiry_s": -1, "reason": "x"}),
                    content_type="application/json")
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "review_expiry_s"


def test_the_beat_task_expires_through_the_same_action(world):
    expiring(world, 1)
    submit(world, "crit", decision_body(0.9))
    ReviewItem.objects.update(created_at=timezone.now() - timedelta(seconds=5))
    assert expire_pending() == 1
    assert Decision.objects.get().status == "fallback"


def test_a_decision_no_longer_pending_is_left_alone_and_the_rest_still_expire(world):
    expiring(world, 60)
    first = submit(world, "crit", decision_body(0.9))
    second = submit(world, "crit", decision_body(0.8, subject="user-2"))
    Decision.objects.filter(subject="user-1").update(status="released")  # changed by other means (a shell fix)
    assert actions.expire_due(timezone.now() + timedelta(seconds=61)) == 1
    assert seen_by_client(world, "crit", first["id"])["status"] == "released"
    assert seen_by_client(world, "crit", second["id"])["status"] == "fallback"
