"""The review queue through the API (API.md, "Review"): claim, resolve, release."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from oversight import actions
from oversight.models import AuditEvent, Decision
from reviewqueue.models import ReviewItem
from tests.asgiclient import ApiClient
from tests.conftest import decision_body


def send(client: ApiClient, url: str, data: Any = None) -> Any:
    body = b"" if data is None else json.dumps(data).encode()
    return client.post(url, body, content_type="application/json")


def token_client(user: Any) -> ApiClient:
    """A person's script: a personal token carries their role and needs no CSRF token."""
    _, secret = actions.create_personal_token(user, "script")
    return ApiClient(HTTP_AUTHORIZATION=f"Token {secret}")


def new_operator(name: str) -> Any:
    user = get_user_model().objects.create_user(name, password="x")
    user.groups.add(Group.objects.get(name="operator"))
    return user


def submit(world: Any, slug: str, body: dict[str, Any]) -> dict[str, Any]:
    r = world.client_for(slug).post(f"/api/v1/systems/{slug}/decisions", json.dumps(body),
                                    content_type="application/json")
    assert r.status_code == 201, r.content
    return r.json()


def claim(client: ApiClient, system: str | None = None) -> Any:
    return send(client, "/api/v1/review/claim", {} if system is None else {"system": system})


def resolve(client: ApiClient, item: str, **payload: Any) -> Any:
    return send(client, f"/api/v1/review/{item}/resolve", payload)


def seen_by_client(world: Any, slug: str, decision_id: str) -> dict[str, Any]:
    r = world.client_for(slug).get(f"/api/v1/decisions/{decision_id}")
    assert r.status_code == 200
    return r.json()


# --- claiming -------------------------------------------------------------------------------


def test_empty_queue_answers_204(world):
    r = claim(token_client(world.operator))
    assert r.status_code == 204
    assert r.content == b""


def test_claim_returns_the_oldest_due_item_leased_to_the_caller(world):
    first = submit(world, "crit", decision_body(0.9, subject="first"))
    submit(world, "crit", decision_body(0.9, subject="second"))
    op = token_client(world.operator)
    before = timezone.now()
    r = claim(op)
    assert r.status_code == 200
    item = r.json()
    assert item["id"].startswith("rev_")
    assert (item["kind"], item["status"], item["system"], item["claimed_by"]) == ("gate", "claimed", "crit", "operator")
    assert item["decision"]["id"] == first["id"]
    assert item["decision"]["subject"] == "first"
    assert item["decision"]["prediction"]["output"] == {"items": ["t1", "t9"]}
    assert item["decision"]["output"] is None
    row = ReviewItem.objects.get(id=item["id"].removeprefix("rev_"))
    assert row.claimed_by_id == world.operator.id
    assert before + timedelta(seconds=290) < row.lease_expires_at <= timezone.now() + timedelta(seconds=300)


def test_due_time_orders_the_queue_not_arrival(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.update_system(None, "crit", {"review_sla_s": 60}, "faster")  # crit items are due first
    relaxed = submit(world, "sup", decision_body(0.1))  # sup: 900 s to review
    urgent = submit(world, "crit", decision_body(0.9))
    op = token_client(world.operator)
    assert claim(op).json()["decision"]["id"] == urgent["id"]
    assert claim(op).json()["decision"]["id"] == relaxed["id"]
    assert claim(op).status_code == 204


def test_claim_can_be_limited_to_one_system(world):
    submit(world, "crit", decision_body(0.9))
    sup = submit(world, "sup", decision_body(0.1))
    op = token_client(world.operator)
    assert claim(op, "sup").json()["decision"]["id"] == sup["id"]
    assert claim(op, "sup").status_code == 204
    assert claim(op, "auto").status_code == 204
    r = claim(op, "nope")
    assert (r.status_code, r.json()["error"]["field"]) == (404, "system")


def test_claim_without_a_body(world):
    submit(world, "crit", decision_body(0.9))
    assert send(token_client(world.operator), "/api/v1/review/claim").status_code == 200


def test_two_operators_never_receive_the_same_item(world):
    for i in range(3):
        submit(world, "crit", decision_body(0.9, subject=f"s{i}"))
    a, b = token_client(world.operator), token_client(new_operator("operator2"))
    got = [claim(a).json()["id"], claim(b).json()["id"], claim(a).json()["id"]]
    assert len(set(got)) == 3
    assert claim(b).status_code == 204
    assert claim(a).status_code == 204  # nobody's own claims come back to them either


def test_an_expired_lease_frees_the_item(world):
    submit(world, "crit", decision_body(0.9))
    a, b = token_client(world.operator), token_client(new_operator("operator2"))
    item = claim(a).json()["id"]
    assert claim(b).status_code == 204
    expired = timezone.now() - timedelta(seconds=1)
    ReviewItem.objects.filter(id=item.removeprefix("rev_")).update(lease_expires_at=expired)
    taken = claim(b).json()
    assert (taken["id"], taken["claimed_by"]) == (item, "operator2")
    r = resolve(a, item, action="approve")
    assert r.status_code == 409
    assert "operator2" in r.json()["error"]["message"]


def test_concurrent_claims_hand_out_each_item_once(tworld):
    """Several operators, each in a thread with its own database connection, claim at the same time."""
    for i in range(24):
        submit(tworld, "crit", decision_body(0.9, subject=f"s{i}"))
    clients = [token_client(tworld.operator)] + [token_client(new_operator(f"op{i}")) for i in range(5)]
    start = threading.Barrier(len(clients))
    claimed: list[list[str]] = [[] for _ in clients]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait(timeout=10)
            while True:
                r = claim(clients[n])
                if r.status_code == 204:
                    return
                assert r.status_code == 200, r.content
                claimed[n].append(r.json()["id"])
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    every = [i for ids in claimed for i in ids]
    assert len(every) == 24
    assert len(set(every)) == 24
    assert sum(1 for ids in claimed if ids) > 1  # the work really was shared
    owners = {f"rev_{i.id.hex}": i.claimed_by.get_username() for i in ReviewItem.objects.select_related("claimed_by")}
    usernames = ["operator"] + [f"op{i}" for i in range(5)]
    for n, ids in enumerate(claimed):
        assert all(owners[i] == usernames[n] for i in ids)


# --- resolving gate items -------------------------------------------------------------------


def test_approve_releases_the_prediction_and_the_client_sees_the_review(world):
    made = submit(world, "crit", decision_body(0.9))
    assert seen_by_client(world, "crit", made["id"])["output"] is None
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    r = resolve(op, item, action="approve", note="looks right")
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["action"], r.json()["note"]) == ("resolved", "approve", "looks right")
    now = seen_by_client(world, "crit", made["id"])
    assert (now["status"], now["route"], now["output"]) == ("released", "human", {"items": ["t1", "t9"]})
    assert now["reasons"][-1] == "approved by operator: looks right"
    assert {k: now["review"][k] for k in ("action", "note", "by", "kind")} == {
        "action": "approve", "note": "looks right", "by": "operator", "kind": "gate"}
    assert Decision.objects.get().released_at is not None
    event = AuditEvent.objects.get(action="review.approve")
    assert (event.actor_id, event.target, event.reason) == (world.operator.id, made["id"], "looks right")


def test_reject_answers_the_fallback(world):
    made = submit(world, "sup", decision_body(0.2))
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    assert resolve(op, item, action="reject", note="wrong genre").status_code == 200
    now = seen_by_client(world, "sup", made["id"])
    assert (now["status"], now["output"]) == ("rejected", {"items": ["safe"]})
    assert now["reasons"][-1] == "rejected by operator: wrong genre"
    assert now["review"]["action"] == "reject"
    assert Decision.objects.get().released_at is None


def test_modify_releases_the_new_output(world):
    made = submit(world, "crit", decision_body(0.9))
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    r = resolve(op, item, action="modify", output={"items": ["t3"]}, note="better")
    assert r.status_code == 200
    now = seen_by_client(world, "crit", made["id"])
    assert (now["status"], now["output"]) == ("released", {"items": ["t3"]})
    assert now["reasons"][-1] == "modified and released by operator: better"
    assert ReviewItem.objects.get().output == {"items": ["t3"]}


def test_modify_may_release_null_but_needs_an_output(world):
    submit(world, "crit", decision_body(0.9))
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    r = resolve(op, item, action="modify", note="no output given")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "output")
    assert ReviewItem.objects.get().status == "claimed"
    assert resolve(op, item, action="modify", output=None).status_code == 200
    assert Decision.objects.get().output is None
    assert Decision.objects.get().status == "released"


@pytest.mark.parametrize("payload", [{"action": "shrug"}, {}, {"action": "approve", "note": 5},
                                     {"action": "modify", "output": {"items": ["t\u0000"]}},
                                     {"action": "approve", "note": "n" * 5001}])
def test_invalid_resolutions_change_nothing(world, payload):
    submit(world, "crit", decision_body(0.9))
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    r = resolve(op, item, **payload)
    assert r.status_code == 422
    assert ReviewItem.objects.get().status == "claimed"
    assert Decision.objects.get().status == "pending_review"


def test_approve_leaves_out_a_model_stopped_since_the_decision(world, django_capture_on_commit_callbacks):
    body = decision_body(0.9, prediction={
        "output": {"items": ["blend"]}, "confidence": 0.9, "model": "ensemble",
        "votes": [{"model": "old-v1", "output": {"items": ["stale"]}, "confidence": 0.95},
                  {"model": "collab-v3", "output": {"items": ["t1"]}, "confidence": 0.8}],
    })
    made = submit(world, "crit", body)
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "model", True, "stale weights", "crit", "old-v1")
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    assert resolve(op, item, action="approve").status_code == 200
    assert seen_by_client(world, "crit", made["id"])["output"] == {"items": ["t1"]}


def test_approve_of_a_decision_queued_with_a_model_stopped_releases_the_live_vote(
    world, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "model", True, "stale weights", "sup", "old-v1")
    made = submit(world, "sup", decision_body(0.9, prediction={
        "output": {"items": ["blend"]}, "confidence": 0.9, "model": "ensemble",
        "votes": [{"model": "old-v1", "output": {"items": ["stale"]}, "confidence": 0.95},
                  {"model": "collab-v3", "output": {"items": ["t1"]}, "confidence": 0.3}],
    }))
    assert made["status"] == "pending_review"  # the live vote is below the threshold
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    assert resolve(op, item, action="approve").status_code == 200
    assert seen_by_client(world, "sup", made["id"])["output"] == {"items": ["t1"]}


def test_approve_is_refused_when_every_model_is_stopped_now(world, django_capture_on_commit_callbacks):
    made = submit(world, "crit", decision_body(0.9))
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "model", True, "bias", "crit", "collab-v3")
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    r = resolve(op, item, action="approve")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
    assert "kill switch" in r.json()["error"]["message"]
    assert seen_by_client(world, "crit", made["id"])["status"] == "pending_review"
    assert ReviewItem.objects.get().status == "claimed"
    assert resolve(op, item, action="reject").status_code == 200
    assert seen_by_client(world, "crit", made["id"])["output"] == {"decision": "refer"}


# --- conflicts ------------------------------------------------------------------------------


def test_resolve_by_someone_else_is_a_conflict(world):
    made = submit(world, "crit", decision_body(0.9))
    a, b = token_client(world.operator), token_client(new_operator("operator2"))
    item = claim(a).json()["id"]
    r = resolve(b, item, action="reject")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    assert "claimed by operator" in r.json()["error"]["message"]
    assert seen_by_client(world, "crit", made["id"])["status"] == "pending_review"


def test_resolve_without_claiming_is_a_conflict(world):
    submit(world, "crit", decision_body(0.9))
    item = ReviewItem.objects.get().public_id
    r = resolve(token_client(world.operator), item, action="approve")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
    assert "claim this item" in r.json()["error"]["message"]


def test_resolve_twice_is_a_conflict(world):
    made = submit(world, "crit", decision_body(0.9))
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    assert resolve(op, item, action="approve").status_code == 200
    for who in (op, token_client(new_operator("operator2"))):
        r = resolve(who, item, action="reject")
        assert r.status_code == 409
        assert "already resolved (approve) by operator" in r.json()["error"]["message"]
    assert seen_by_client(world, "crit", made["id"])["status"] == "released"
    assert AuditEvent.objects.filter(action__startswith="review.").count() == 1


@pytest.mark.parametrize("item", ["rev_" + "0" * 32, "rev_zzz", "nonsense"])
def test_unknown_items_are_not_found(world, item):
    op = token_client(world.operator)
    assert resolve(op, item, action="approve").status_code == 404
    assert send(op, f"/api/v1/review/{item}/release").status_code == 404


# --- releasing a lease ----------------------------------------------------------------------


def test_release_makes_the_item_claimable_again(world):
    submit(world, "crit", decision_body(0.9))
    a, b = token_client(world.operator), token_client(new_operator("operator2"))
    item = claim(a).json()["id"]
    r = send(a, f"/api/v1/review/{item}/release")
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["claimed_by"]) == ("open", None)
    assert claim(b).json()["id"] == item
    assert send(a, f"/api/v1/review/{item}/release").status_code == 409  # not theirs any more


def test_release_of_an_unclaimed_item_is_a_conflict(world):
    submit(world, "crit", decision_body(0.9))
    item = ReviewItem.objects.get().public_id
    r = send(token_client(world.operator), f"/api/v1/review/{item}/release")
    assert r.status_code == 409
    assert r.json()["error"]["message"] == "this item is not claimed"


# --- audit items ----------------------------------------------------------------------------


@pytest.fixture
def audited(world: Any, django_capture_on_commit_callbacks: Any) -> dict[str, Any]:
    with django_capture_on_commit_callbacks(execute=True):
        actions.update_system(None, "auto", {"audit_sample_rate": 1.0}, "audit everything")
    made = submit(world, "auto", decision_body(0.9))
    assert made["status"] == "released"
    return made


def test_audit_item_approve_confirms_the_released_decision(world, audited):
    op = token_client(world.operator)
    item = claim(op).json()
    assert item["kind"] == "audit"
    assert resolve(op, item["id"], action="approve", note="fine").status_code == 200
    now = seen_by_client(world, "auto", audited["id"])
    assert (now["status"], now["output"]) == ("released", {"items": ["t1", "t9"]})
    assert now["reasons"][-1] == "audit: confirmed by operator: fine"
    assert (now["review"]["kind"], now["review"]["action"]) == ("audit", "approve")


def test_audit_item_reject_overrides_with_the_fallback(world, audited):
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    assert resolve(op, item, action="reject", note="harmful").status_code == 200
    now = seen_by_client(world, "auto", audited["id"])
    assert (now["status"], now["output"]) == ("overridden", {"label": "hold"})
    assert now["reasons"][-1] == "audit: overridden by operator: harmful"


def test_audit_item_modify_overrides_with_the_new_output(world, audited):
    op = token_client(world.operator)
    item = claim(op).json()["id"]
    assert resolve(op, item, action="modify", output={"label": "ok"}).status_code == 200
    now = seen_by_client(world, "auto", audited["id"])
    assert (now["status"], now["output"]) == ("overridden", {"label": "ok"})
    assert now["reasons"][-1] == "audit: overridden by operator"
