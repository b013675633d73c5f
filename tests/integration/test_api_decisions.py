"""Decisions through the public API (API.md, "Decisions"): levels, audit share, idempotency,
outcomes, and kill switches that take effect on the very next decision."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from oversight import actions, bulk, config, decisions, hooks
from oversight.models import AuditEvent, Decision, KillSwitch, Outcome
from oversight.schemas import DecisionIn
from reviewqueue import actions as review_actions
from reviewqueue.actions import review_items_for
from reviewqueue.models import ReviewItem
from tests.asgiclient import ApiClient
from tests.conftest import api_session, decision_body, second_admin

DECISIONS = "/api/v1/systems/{}/decisions"
BATCH = "/api/v1/systems/{}/decisions/batch"



def send(client: ApiClient, url: str, data: Any, method: str = "post", **extra: Any) -> Any:
    body = data if isinstance(data, bytes) else json.dumps(data)
    return getattr(client, method)(url, body, content_type="application/json", **extra)


def decide(world: Any, slug: str, body: dict[str, Any]) -> dict[str, Any]:
    r = send(world.client_for(slug), DECISIONS.format(slug), body)
    assert r.status_code == 201, r.content
    return r.json()


def admin_session(world: Any) -> ApiClient:
    return api_session(world.admin)


def voting_body(confidence: float = 0.9) -> dict[str, Any]:
    return decision_body(
        confidence,
        prediction={
            "output": {"items": ["blend"]},
            "confidence": confidence,
            "model": "ensemble",
            "votes": [
                {"model": "old-v1", "output": {"items": ["stale"]}, "confidence": 0.99},
                {"model": "collab-v3", "output": {"items": ["t1", "t9"]}, "confidence": confidence},
            ],
        },
    )


def decision_row(public_id: str) -> Decision:
    return Decision.objects.get(id=public_id.removeprefix("dec_"))


# --- one decision per level -------------------------------------------------------------------


def test_level_1_waits_for_a_person_with_no_output(world):
    body = decide(world, "crit", decision_body(0.99))
    assert body["system"] == "crit"
    assert body["id"].startswith("dec_")
    assert (body["status"], body["route"], body["output"]) == ("pending_review", "human", None)
    assert body["confidence"] == 0.99
    assert body["reasons"] == ["level 1 (critical): a person approves every decision"]
    row = decision_row(body["id"])
    item = ReviewItem.objects.get(decision=row)
    assert (item.kind, item.status, item.system_id) == ("gate", "open", world.critical.id)
    assert item.due_at == row.created_at + timedelta(seconds=world.critical.review_sla_s)
    assert row.released_at is None


@pytest.mark.parametrize(
    ("confidence", "status", "route", "reason"),
    [
        (0.59, "pending_review", "human", "confidence 0.59 < threshold 0.60: a person decides"),
        (0.5999, "pending_review", "human", "confidence 0.5999 < threshold 0.6000: a person decides"),
        (0.6, "released", "auto", "confidence 0.60 ≥ threshold 0.60"),
        (0.62, "released", "auto", "confidence 0.62 ≥ threshold 0.60"),
    ],
)
def test_level_2_threshold_boundary(world, confidence, status, route, reason):
    body = decide(world, "sup", decision_body(confidence))
    assert (body["status"], body["route"], body["reasons"]) == (status, route, [reason])
    released = status == "released"
    assert body["output"] == ({"items": ["t1", "t9"]} if released else None)
    row = decision_row(body["id"])
    assert row.status == status
    assert (row.released_at is not None) is released
    assert ReviewItem.objects.filter(decision=row, kind="gate").exists() is not released


def test_level_2_without_confidence_goes_to_a_person(world):
    body = decide(world, "sup", decision_body(None))
    assert (body["status"], body["reasons"]) == ("pending_review", ["no confidence given: a person decides"])


def test_level_3_releases_even_low_confidence(world):
    body = decide(world, "auto", decision_body(0.05))
    assert (body["status"], body["route"], body["output"]) == ("released", "auto", {"items": ["t1", "t9"]})
    assert body["reasons"] == ["level 3 (autonomous): released"]
    assert not ReviewItem.objects.exists()


def test_no_prediction_and_no_hosted_model_answers_the_fallback(world):
    body = decide(world, "auto", {"subject": "u-9"})
    assert (body["status"], body["route"], body["output"]) == ("fallback", "fallback", {"label": "hold"})


def test_answer_matches_the_public_shape_and_is_stored(world):
    body = decide(world, "sup", decision_body(0.62))
    assert set(body) >= {"id", "system", "status", "route", "output", "confidence", "reasons", "created_at"}
    row = decision_row(body["id"])
    assert (row.subject, row.context, row.features) == ("user-1", {"hour": 23}, {"tempo": 171.0})
    assert row.prediction["output"] == {"items": ["t1", "t9"]}
    assert row.model == "collab-v3"
    assert row.policy_version == world.supervised.policy_version
    assert body["occurred_at"] == body["created_at"]


def test_occurred_at_is_kept_for_backfill(world):
    body = decide(world, "auto", decision_body(0.9, occurred_at="2026-03-15T23:47:00+01:00"))
    row = decision_row(body["id"])
    assert row.occurred_at == datetime(2026, 3, 15, 22, 47, tzinfo=UTC)
    assert row.created_at > row.occurred_at
    assert body["occurred_at"].startswith("2026-03-15T2")


@pytest.mark.parametrize("slug", ["sup", "auto"])
def test_audit_share_1_queues_every_released_decision_for_audit(world, slug, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.update_system(None, slug, {"audit_sample_rate": 1.0}, "audit everything")
    body = decide(world, slug, decision_body(0.95))
    assert body["status"] == "released"
    assert "sampled for after-the-fact audit (share 1)" in body["reasons"]
    item = ReviewItem.objects.get(decision__id=body["id"].removeprefix("dec_"))
    assert (item.kind, item.status) == ("audit", "open")
    assert decision_row(body["id"]).audit is True


@pytest.mark.parametrize("slug", ["sup", "auto"])
def test_audit_share_0_queues_nothing(world, slug):
    for _ in range(20):
        body = decide(world, slug, decision_body(0.95))
        assert not any("audit" in r for r in body["reasons"])
    assert not ReviewItem.objects.exists()
    assert not Decision.objects.filter(audit=True).exists()


def clashing_review_item(system: Any, decisions: Any) -> list[Any]:
    """A row source whose row collides with the review item's primary key: the statement fails."""
    item = review_items_for(system, decisions)[0]
    return [item]


def test_a_decision_and_its_review_item_commit_together(tworld, monkeypatch):
    """A failure after the review item is written leaves neither: one statement, one transaction."""
    clash = (clashing_review_item, lambda d: True)
    monkeypatch.setattr(hooks, "decision_rows", [*hooks.decision_rows, clash])
    monkeypatch.setattr(review_actions, "uuid7", lambda: uuid.UUID(int=7))  # both review items get the same id
    client = tworld.client_for("crit")
    r = send(client, DECISIONS.format("crit"), decision_body(0.9))
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal"
    assert not Decision.objects.exists()
    assert not ReviewItem.objects.exists()
    monkeypatch.undo()
    body = decide(tworld, "crit", decision_body(0.9))
    assert ReviewItem.objects.get().decision_id == decision_row(body["id"]).id


# --- batches --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slug", "statuses"),
    [
        ("crit", ["pending_review", "pending_review", "pending_review"]),
        ("sup", ["released", "pending_review", "released"]),
        ("auto", ["released", "released", "released"]),
    ],
)
def test_batch_per_level_answers_in_order(world, slug, statuses):
    items = [decision_body(0.9, subject="a"), decision_body(0.1, subject="b"), decision_body(0.6, subject="c")]
    r = send(world.client_for(slug), BATCH.format(slug), {"items": items})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["status"] for x in results] == statuses
    assert all(x["replayed"] is False for x in results)
    rows = {d.public_id: d for d in Decision.objects.filter(system__slug=slug)}
    assert len(rows) == 3
    assert [rows[x["id"]].subject for x in results] == ["a", "b", "c"]
    assert ReviewItem.objects.filter(kind="gate").count() == statuses.count("pending_review")


def test_an_empty_batch_is_refused(world):
    r = send(world.client_for("sup"), BATCH.format("sup"), {"items": []})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "items")


def test_batch_of_1000_is_accepted(world):
    items = [decision_body(0.9, subject=f"u{i}") for i in range(1000)]
    r = send(world.client_for("auto"), BATCH.format("auto"), {"items": items})
    assert r.status_code == 200
    assert len(r.json()["results"]) == 1000
    assert Decision.objects.count() == 1000


# --- idempotency ----------------------------------------------------------------------------


def test_same_key_same_body_replays_the_stored_decision(world):
    client = world.client_for("sup")
    body = decision_body(0.62, idempotency_key="req-8f2c")
    first = send(client, DECISIONS.format("sup"), body)
    again = send(client, DECISIONS.format("sup"), body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["output"] == first.json()["output"]
    assert Decision.objects.count() == 1


def test_replay_answers_what_was_decided_then_even_after_a_kill_switch(world, django_capture_on_commit_callbacks):
    client = world.client_for("auto")
    body = decision_body(0.9, idempotency_key="k-1")
    first = send(client, DECISIONS.format("auto"), body).json()
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "system", True, "drift", "auto")
    again = send(client, DECISIONS.format("auto"), body)
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["route"]) == (first["id"], "auto")
    fresh = send(client, DECISIONS.format("auto"), decision_body(0.9, idempotency_key="k-2"))
    assert fresh.json()["route"] == "killed"


def test_same_key_different_body_is_a_conflict(world):
    client = world.client_for("sup")
    first = send(client, DECISIONS.format("sup"), decision_body(0.62, idempotency_key="req-1"))
    r = send(client, DECISIONS.format("sup"), decision_body(0.10, idempotency_key="req-1"))
    assert r.status_code == 409
    error = r.json()["error"]
    assert set(r.json()) == {"error"}
    assert (error["code"], error["field"]) == ("idempotency_conflict", "idempotency_key")
    assert "'req-1'" in error["message"]
    assert "already used with a different body" in error["message"]
    assert Decision.objects.count() == 1
    assert decision_row(first.json()["id"]).confidence == 0.62


def test_keys_are_per_system(world):
    body = decision_body(0.9, idempotency_key="shared")
    a = send(world.client_for("sup"), DECISIONS.format("sup"), body)
    b = send(world.client_for("auto"), DECISIONS.format("auto"), body)
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


def test_replay_inside_a_batch(world):
    client = world.client_for("sup")
    earlier = send(client, DECISIONS.format("sup"), decision_body(0.9, idempotency_key="old")).json()
    items = [
        decision_body(0.9, idempotency_key="new"),
        decision_body(0.9, idempotency_key="new"),  # repeated in the same batch: same decision
        decision_body(0.9, idempotency_key="old"),  # replay of an earlier single request
        decision_body(0.2, idempotency_key="old"),  # same key, different body
        decision_body(0.9),  # no key: always new
    ]
    results = send(client, BATCH.format("sup"), {"items": items}).json()["results"]
    assert results[0]["id"] == results[1]["id"]
    assert (results[0]["replayed"], results[1]["replayed"]) == (False, True)
    assert (results[2]["id"], results[2]["replayed"]) == (earlier["id"], True)
    assert results[3] == {"error": {"code": "idempotency_conflict", "message": results[3]["error"]["message"],
                                    "field": "idempotency_key"}}
    assert "'old'" in results[3]["error"]["message"]
    assert results[4]["replayed"] is False
    assert Decision.objects.count() == 3  # old, new, and the keyless one


def test_batch_replayed_as_a_whole_stores_nothing_new(world):
    client = world.client_for("auto")
    payload = {"items": [decision_body(0.9, idempotency_key=f"b-{i}") for i in range(5)]}
    first = send(client, BATCH.format("auto"), payload).json()["results"]
    again = send(client, BATCH.format("auto"), payload).json()["results"]
    assert [x["id"] for x in again] == [x["id"] for x in first]
    assert all(x["replayed"] for x in again)
    assert Decision.objects.count() == 5


# --- reading a decision ---------------------------------------------------------------------


def test_get_decision_for_its_own_client(world):
    made = decide(world, "sup", decision_body(0.62))
    r = world.client_for("sup").get(f"/api/v1/decisions/{made['id']}")
    assert r.status_code == 200
    got = r.json()
    for field in ("id", "system", "status", "route", "output", "confidence", "reasons"):
        assert got[field] == made[field]
    assert got["review"] is None


def test_get_decision_of_another_system_is_not_found(world):
    made = decide(world, "sup", decision_body(0.62))
    r = world.client_for("auto").get(f"/api/v1/decisions/{made['id']}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("bad", ["dec_" + "0" * 32, "dec_nothex", "12345", "dec_"])
def test_get_unknown_decision_is_not_found(world, bad):
    r = world.client_for("sup").get(f"/api/v1/decisions/{bad}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


# --- outcomes -------------------------------------------------------------------------------


def test_outcome_with_a_label(world):
    made = decide(world, "auto", decision_body(0.9))
    r = send(world.client_for("auto"), f"/api/v1/decisions/{made['id']}/outcome",
             {"label": {"clicked": "t9"}, "observed_at": "2026-03-16T08:00:00Z"})
    assert r.status_code == 201
    assert r.json()["decision"] == made["id"]
    assert r.json()["label"] == {"clicked": "t9"}
    outcome = Outcome.objects.get()
    assert outcome.decision_id == decision_row(made["id"]).id
    assert outcome.observed_at == datetime(2026, 3, 16, 8, tzinfo=UTC)
    assert outcome.reward is None


@pytest.mark.parametrize("reward", [0, 0.0, 0.25, 1, 1.0])
def test_outcome_with_a_reward(world, reward):
    made = decide(world, "auto", decision_body(0.9))
    r = send(world.client_for("auto"), f"/api/v1/decisions/{made['id']}/outcome", {"reward": reward})
    assert r.status_code == 201
    assert r.json()["reward"] == float(reward)
    assert Outcome.objects.get().reward == float(reward)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "label"),
        ({"label": None, "reward": None}, "label"),
        ({"observed_at": "2026-03-16T08:00:00Z"}, "label"),
        ({"reward": 1.5}, "reward"),
        ({"reward": -0.1}, "reward"),
        ({"reward": "high"}, "reward"),
        ({"reward": True}, "reward"),
        ({"label": 1, "observed_at": "2026-03-16T08:00:00"}, "observed_at"),
    ],
)
def test_invalid_outcomes_are_refused(world, payload, field):
    made = decide(world, "auto", decision_body(0.9))
    r = send(world.client_for("auto"), f"/api/v1/decisions/{made['id']}/outcome", payload)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid"
    assert r.json()["error"]["field"] == field
    assert not Outcome.objects.exists()


def test_outcome_for_another_systems_decision_is_not_found(world):
    made = decide(world, "auto", decision_body(0.9))
    r = send(world.client_for("sup"), f"/api/v1/decisions/{made['id']}/outcome", {"label": 1})
    assert r.status_code == 404
    assert not Outcome.objects.exists()


# --- kill switches take effect on the very next decision ------------------------------------


def flip(client: ApiClient, **payload: Any) -> Any:
    r = send(client, "/api/v1/killswitches", payload)
    assert r.status_code == 200, r.content
    return r.json()


def test_system_kill_switch_through_an_admin_session(world, django_capture_on_commit_callbacks):
    assert decide(world, "auto", decision_body(0.9))["route"] == "auto"  # the gate config is now cached
    admin = admin_session(world)
    with django_capture_on_commit_callbacks(execute=True):
        state = flip(admin, scope="system", system="auto", engaged=True, reason="drift on tempo")
    assert state["engaged"] is True
    assert (state["scope"], state["system"], state["changed_by"]) == ("system", "auto", "admin")

    killed = decide(world, "auto", decision_body(0.9))
    assert (killed["status"], killed["route"], killed["output"]) == ("fallback", "killed", {"label": "hold"})
    assert killed["reasons"] == ["system kill switch engaged: drift on tempo",
                                 "answered with the system's fallback output"]
    assert decide(world, "sup", decision_body(0.9))["route"] == "auto"  # other systems go on

    shown = world.client_for("auto").get("/api/v1/systems/auto").json()
    assert (shown["killed"], shown["kill_reason"]) == (True, "drift on tempo")

    with django_capture_on_commit_callbacks(execute=True):
        flip(admin, scope="system", system="auto", engaged=False, reason="fixed")
    restored = decide(world, "auto", decision_body(0.9))
    assert (restored["status"], restored["route"]) == ("released", "auto")
    events = list(AuditEvent.objects.filter(action__startswith="killswitch.").order_by("id"))
    assert [(e.action, e.actor_id, e.reason, e.target) for e in events] == [
        ("killswitch.engage", world.admin.id, "drift on tempo", "system:auto"),
        ("killswitch.release", world.admin.id, "fixed", "system:auto"),
    ]


def test_global_kill_switch_through_an_admin_personal_token(world, django_capture_on_commit_callbacks):
    for slug in ("crit", "sup", "auto"):
        decide(world, slug, decision_body(0.9))
    _, token = actions.create_personal_token(world.admin, "ops script")
    script = ApiClient(HTTP_AUTHORIZATION=f"Token {token}")
    with django_capture_on_commit_callbacks(execute=True):
        flip(script, scope="global", engaged=True, reason="incident 42")
    fallbacks = {"crit": {"decision": "refer"}, "sup": {"items": ["safe"]}, "auto": {"label": "hold"}}
    for slug, fallback in fallbacks.items():
        body = decide(world, slug, decision_body(0.99))
        assert (body["route"], body["output"]) == ("killed", fallback)
        assert body["reasons"][0] == "global kill switch engaged: incident 42"
    # a killed level-1 decision is answered with the fallback, not queued for a person
    assert ReviewItem.objects.filter(decision__route="killed").count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        asked = send(script, "/api/v1/killswitches", {"scope": "global", "engaged": False, "reason": "fixed"})
    assert (asked.status_code, asked.json()["status"]) == (202, "pending_approval")  # four eyes
    assert decide(world, "auto", decision_body(0.9))["route"] == "killed"  # still engaged
    with django_capture_on_commit_callbacks(execute=True):
        ok = send(api_session(second_admin()), f"/api/v1/killswitches/releases/{asked.json()['id']}/approve", None)
    assert (ok.status_code, ok.json()["engaged"]) == (200, False)
    assert decide(world, "auto", decision_body(0.9))["route"] == "auto"


def test_model_kill_switch_drops_the_models_votes(world, django_capture_on_commit_callbacks):
    before = decide(world, "sup", voting_body(0.9))
    assert before["output"] == {"items": ["blend"]}
    admin = admin_session(world)
    with django_capture_on_commit_callbacks(execute=True):
        flip(admin, scope="model", system="sup", model="old-v1", engaged=True, reason="stale weights")
    body = decide(world, "sup", voting_body(0.9))
    assert (body["status"], body["route"], body["output"]) == ("released", "auto", {"items": ["t1", "t9"]})
    assert body["reasons"] == [
        "model old-v1 left out: kill switch engaged (stale weights)",
        "answer taken from model collab-v3, the most confident vote left",
        "confidence 0.90 ≥ threshold 0.60",
    ]
    assert decision_row(body["id"]).model == "collab-v3"
    # a model kill switch is not a system kill switch
    shown = world.client_for("sup").get("/api/v1/systems/sup").json()
    assert shown["killed"] is False
    assert [(k["scope"], k["model"], k["engaged"]) for k in shown["killswitches"]] == [("model", "old-v1", True)]

    with django_capture_on_commit_callbacks(execute=True):
        flip(admin, scope="model", system="sup", model="collab-v3", engaged=True, reason="bias")
    none_left = decide(world, "sup", voting_body(0.9))
    assert (none_left["status"], none_left["route"], none_left["output"]) == ("fallback", "killed", {"items": ["safe"]})

    with django_capture_on_commit_callbacks(execute=True):
        flip(admin, scope="model", system="sup", model="old-v1", engaged=False, reason="fixed")
        flip(admin, scope="model", system="sup", model="collab-v3", engaged=False, reason="fixed")
    assert decide(world, "sup", voting_body(0.9))["output"] == {"items": ["blend"]}


def test_model_kill_switch_stops_a_single_model_prediction(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "model", True, "bias found", "auto", "collab-v3")
    body = decide(world, "auto", decision_body(0.9))
    assert (body["route"], body["output"]) == ("killed", {"label": "hold"})
    assert body["reasons"][0] == "model collab-v3 is stopped: kill switch engaged (bias found)"
    other_model = decide(world, "auto", decision_body(0.9, prediction={"output": 1, "model": "other", "confidence": 1}))
    assert other_model["route"] == "auto"


def test_kill_switch_is_effective_when_redis_lost_the_epoch(world):
    """No Redis copy of the epoch (flushed or restarted): the decision's INSERT checks PostgreSQL's
    epoch itself, and the next reader of the configuration as of now repairs the Redis copy."""
    assert decide(world, "auto", decision_body(0.9))["route"] == "auto"
    # The change commits with the test's transaction, so its on-commit Redis update never runs here;
    # only PostgreSQL knows, exactly as when Redis missed the update.
    actions.set_killswitch(world.admin, "system", True, "drift", "auto")
    redis.Redis.from_url(settings.REDIS_URL).delete(settings.REDIS_PREFIX + config.EPOCH_KEY_SUFFIX)
    assert decide(world, "auto", decision_body(0.9))["route"] == "killed"
    # ...and Redis gets its copy back from PostgreSQL when the configuration is next read as of now
    assert admin_session(world).get("/api/v1/systems").status_code == 200
    stored = redis.Redis.from_url(settings.REDIS_URL).get(settings.REDIS_PREFIX + config.EPOCH_KEY_SUFFIX)
    assert stored is not None
    assert int(stored) == config.db_epoch()


def test_a_decision_gated_under_an_outdated_snapshot_is_not_stored(world):
    """``submit_one(as_of=…)``: the INSERT itself checks that no change was committed after the
    snapshot the decision was gated under; if one was, nothing is stored and the answer says so."""
    held = config.cache.current()
    actions.set_killswitch(world.admin, "system", True, "drift", "auto")  # a newer epoch in PostgreSQL
    payload = DecisionIn.model_validate(decision_body(0.9, idempotency_key="gated-twice"))
    outdated = decisions.submit_one(held.systems_by_slug["auto"], payload, as_of=held.epoch)
    assert (outdated.stale, outdated.decision, outdated.error) == (True, None, None)
    assert not Decision.objects.exists()

    now = config.cache.from_database()
    assert now.epoch > held.epoch
    stored = decisions.submit_one(now.systems_by_slug["auto"], payload, as_of=now.epoch)
    assert not stored.stale
    assert stored.decision is not None
    assert (stored.decision.route, stored.decision.output) == ("killed", {"label": "hold"})
    assert Decision.objects.get().idempotency_key == "gated-twice"
    # The same body again under the same snapshot: a replay, not an outdated one.
    again = decisions.submit_one(now.systems_by_slug["auto"], payload, as_of=now.epoch)
    assert (again.stale, again.replayed) == (False, True)


def test_a_checked_insert_refuses_a_too_long_value_instead_of_cutting_it(world):
    """The epoch-checked INSERT (``INSERT … SELECT``) types its values; text is typed without a length,
    so a value longer than its column is refused as a plain INSERT would refuse it, never cut."""
    from django.db import DataError, transaction

    held = config.cache.current()
    entry = held.systems_by_slug["auto"]
    d = decisions.build(entry, DecisionIn.model_validate(decision_body(0.9)), timezone.now())
    d.subject = "s" * 201  # the column is varchar(200)
    with pytest.raises(DataError), transaction.atomic():
        bulk.insert_one(d, "", (), config.EPOCH_AT_MOST, [held.epoch])
    assert not Decision.objects.exists()


def test_a_database_without_its_epoch_row_still_stores_decisions(world):
    """No epoch row (reads as 0, like ``config.db_epoch``): the checked INSERT stores, not a false 409."""
    from django.db import connection

    held = config.cache.current()
    with connection.cursor() as cur:
        cur.execute("DELETE FROM oversight_configepoch")
    payload = DecisionIn.model_validate(decision_body(0.9, idempotency_key="no-epoch-row"))
    result = decisions.submit_one(held.systems_by_slug["auto"], payload, as_of=held.epoch)
    assert (result.stale, result.error) == (False, None)
    assert Decision.objects.get().idempotency_key == "no-epoch-row"


def test_kill_switch_committed_for_real_reaches_the_next_decision(tworld):
    """Committed like in production: the on-commit epoch bump in Redis alone makes it visible."""
    client = tworld.client_for("sup")
    assert send(client, DECISIONS.format("sup"), decision_body(0.9)).json()["route"] == "auto"
    epoch_before = int(redis.Redis.from_url(settings.REDIS_URL).get(settings.REDIS_PREFIX + config.EPOCH_KEY_SUFFIX))
    flip(admin_session(tworld), scope="system", system="sup", engaged=True, reason="complaints")
    epoch_after = int(redis.Redis.from_url(settings.REDIS_URL).get(settings.REDIS_PREFIX + config.EPOCH_KEY_SUFFIX))
    assert epoch_after > epoch_before
    body = send(client, DECISIONS.format("sup"), decision_body(0.9)).json()
    assert (body["route"], body["output"]) == ("killed", {"items": ["safe"]})
    flip(admin_session(tworld), scope="system", system="sup", engaged=False, reason="fixed")
    assert send(client, DECISIONS.format("sup"), decision_body(0.9)).json()["route"] == "auto"
    assert KillSwitch.objects.get(scope="system").engaged is False


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"scope": "system", "system": "auto", "engaged": True, "reason": "  "}, 422, "reason"),
        ({"scope": "system", "engaged": True, "reason": "x"}, 422, "system"),
        ({"scope": "model", "system": "auto", "engaged": True, "reason": "x"}, 422, "model"),
        ({"scope": "system", "system": "nope", "engaged": True, "reason": "x"}, 404, "system"),
        ({"scope": "planet", "engaged": True, "reason": "x"}, 422, "scope"),
        ({"scope": "global", "reason": "x"}, 422, "engaged"),
    ],
)
def test_invalid_kill_switch_requests_change_nothing(world, payload, status, field):
    r = send(admin_session(world), "/api/v1/killswitches", payload)
    assert r.status_code == status
    assert r.json()["error"]["field"] == field
    assert not KillSwitch.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="killswitch.").exists()


def test_concurrent_retries_with_one_key_store_one_decision(tworld):
    """A client retrying from several workers at once: one row, every answer the same decision."""
    import threading

    from django.db import connection

    body = decision_body(0.2, idempotency_key="retry-storm")  # pending: a review item is written too
    clients = [tworld.client_for("sup") for _ in range(6)]
    start = threading.Barrier(len(clients))
    answers: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def work(client: ApiClient) -> None:
        try:
            start.wait(timeout=10)
            r = send(client, DECISIONS.format("sup"), body)
            answers.append((r.status_code, r.json()["id"]))
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(status for status, _ in answers) == [200, 200, 200, 200, 200, 201]
    assert len({public_id for _, public_id in answers}) == 1
    assert Decision.objects.count() == 1
    assert ReviewItem.objects.count() == 1


def test_releasing_a_switch_needs_a_reason_too(world, django_capture_on_commit_callbacks):
    """Releasing says why as engaging does (the audit log reads both); level 2, so no second admin."""
    admin = admin_session(world)
    with django_capture_on_commit_callbacks(execute=True):
        flip(admin, scope="system", system="sup", engaged=True, reason="bad push")
    r = send(admin, "/api/v1/killswitches", {"scope": "system", "system": "sup", "engaged": False, "reason": " "})
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "invalid", "field": "reason",
                                 "message": "say why: a reason is required to release a kill switch"}
    assert KillSwitch.objects.get().engaged is True
