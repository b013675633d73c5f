"""Edges of the contract: JSON errors for unknown paths and methods, approvals while stopped, policy files."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from oversight import actions
from oversight.models import AISystem
from reviewqueue import actions as review
from tests.asgiclient import ApiClient
from tests.conftest import decision_body


def test_unknown_api_path_and_wrong_method_answer_json(world):
    r = ApiClient().get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = world.client_for("sup").get("/api/v1/systems/sup/decisions")
    assert r.status_code == 405
    body = r.json()["error"]
    assert body["code"] == "method_not_allowed"
    assert "POST" in body["message"]


def _queued(world):
    r = world.client_for("crit").post("/api/v1/systems/crit/decisions", decision_body(0.99),
                                      content_type="application/json")
    assert r.json()["status"] == "pending_review"
    return review.claim_next(world.operator)


def test_approval_is_refused_while_the_system_is_stopped_but_modify_works(world, django_capture_on_commit_callbacks):
    item = _queued(world)
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "system", True, "bad model push", "crit")
    with pytest.raises(actions.ActionError, match="system kill switch engaged"):
        review.resolve(world.operator, item.id, "approve")
    done = review.resolve(world.operator, item.id, "modify", "human choice", {"decision": "refer"}, output_given=True)
    assert done.decision.status == "released"
    assert done.decision.output == {"decision": "refer"}


def test_approval_through_the_api_while_stopped_is_a_409(world, django_capture_on_commit_callbacks):
    item = _queued(world)
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "global", True, "lockdown")
    _, token = actions.create_personal_token(world.operator)
    r = ApiClient(HTTP_AUTHORIZATION=f"Token {token}").post(
        f"/api/v1/review/{item.public_id}/resolve", {"action": "approve"}, content_type="application/json"
    )
    assert r.status_code == 409
    assert "kill switch" in r.json()["error"]["message"]


def test_policy_file_with_a_misspelt_field_is_refused_whole(world, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("- slug: new-one\n  level: 1\n- slug: sup\n  confidence_treshold: 0.7\n")
    with pytest.raises(CommandError, match="confidence_treshold"):
        call_command("apply_policies", str(f))
    assert not AISystem.objects.filter(slug="new-one").exists()


def test_context_keys_keep_their_whitespace(world):
    body = decision_body(0.9, context={" padded key ": " value "})
    r = world.client_for("sup").post("/api/v1/systems/sup/decisions", body, content_type="application/json")
    assert r.status_code == 201
    from oversight.models import Decision

    assert Decision.objects.get().context == {" padded key ": " value "}


def test_a_large_batch_is_stored_whole_with_its_review_items_and_replays(world):
    """Large batches take the COPY path: rows must match what the ORM writes, review items included."""
    from oversight.models import Decision
    from reviewqueue.models import ReviewItem

    items = []
    for i in range(300):
        body = decision_body(0.9 if i % 3 else 0.1, idempotency_key=f"k-{i}", subject=f"s-{i}")
        if i == 7:
            body.pop("prediction")  # no prediction: the fallback, with a NULL prediction column
        items.append(body)
    client = world.client_for("sup")
    r = client.post("/api/v1/systems/sup/decisions/batch", {"items": items}, content_type="application/json")
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["status"] for x in results[:4]] == ["pending_review", "released", "released", "pending_review"]
    assert results[7]["status"] == "fallback"
    assert results[7]["output"] == {"items": ["safe"]}
    assert Decision.objects.count() == 300
    queued = Decision.objects.filter(status="pending_review")
    assert ReviewItem.objects.filter(kind="gate").count() == queued.count() == 100
    stored = Decision.objects.get(idempotency_key="k-7")
    assert stored.prediction is None
    assert stored.context == {"hour": 23}
    assert Decision.objects.get(idempotency_key="k-0").output is None
    # the same batch again: every item replays, nothing new is stored
    again = client.post("/api/v1/systems/sup/decisions/batch", {"items": items}, content_type="application/json")
    assert all(x["replayed"] for x in again.json()["results"])
    assert [x["id"] for x in again.json()["results"]] == [x["id"] for x in results]
    assert Decision.objects.count() == 300
    # a single decision replays a key first stored by a batch
    single = client.post("/api/v1/systems/sup/decisions", items[5], content_type="application/json")
    assert single.status_code == 200
    assert single.json()["id"] == results[5]["id"]


def test_a_large_batch_with_a_key_repeated_inside_it_stores_it_once(world):
    from oversight.models import Decision

    items = [decision_body(0.9, idempotency_key=f"k-{i}") for i in range(60)]
    items.append(decision_body(0.9, idempotency_key="k-0"))  # same body: replays item 0
    items.append(decision_body(0.2, idempotency_key="k-1"))  # other body: a conflict
    r = world.client_for("sup").post(
        "/api/v1/systems/sup/decisions/batch", {"items": items}, content_type="application/json"
    )
    results = r.json()["results"]
    assert results[60]["id"] == results[0]["id"]
    assert results[60]["replayed"] is True
    assert results[61]["error"]["code"] == "idempotency_conflict"
    assert Decision.objects.count() == 60
