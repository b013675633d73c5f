"""Level-3 guardrails end to end: a decision outside them gets the fallback and a review item with the
reason; the rate per minute is counted across processes in Redis; bad guardrails are refused."""

from __future__ import annotations

import redis
from django.conf import settings

from oversight import actions, config, ratelimit
from reviewqueue import actions as review
from reviewqueue.models import ReviewItem
from tests.conftest import api_session, decision_body

URL = "/api/v1/systems/auto/decisions"


def guard(world, django_capture_on_commit_callbacks, rails):
    with django_capture_on_commit_callbacks(execute=True):
        actions.update_system(world.admin, "auto", {"guardrails": rails}, reason="guardrails")


def send(world, output):
    body = decision_body(0.9)
    body["prediction"]["output"] = output
    r = world.client_for("auto").post(URL, body, content_type="application/json")
    assert r.status_code == 201, r.content
    return r.json()


def test_an_output_outside_the_guardrails_gets_the_fallback_and_goes_to_a_person(
        world, django_capture_on_commit_callbacks):
    guard(world, django_capture_on_commit_callbacks, {"field": "label", "allowed": ["hold", "sell"]})
    assert send(world, {"label": "sell"})["status"] == "released"
    d = send(world, {"label": "buy everything"})
    assert (d["status"], d["route"], d["output"]) == ("fallback", "fallback", {"label": "hold"})
    assert d["reasons"][:2] == ["guardrail: output.label 'buy everything' is not one of the allowed values",
                                "answered with the system's fallback output; queued for a person"]
    item = ReviewItem.objects.get(decision__id=d["id"][4:])
    assert item.kind == "audit"
    # The operator sees what the model wanted to send, and may release their own output instead.
    claimed = review.claim_next(world.operator)
    assert claimed.id == item.id
    done = review.resolve(world.operator, item.id, "modify", "checked: sell is right", {"label": "sell"},
                          output_given=True)
    assert (done.decision.status, done.decision.output) == ("overridden", {"label": "sell"})
    shown = world.client_for("auto").get(f"/api/v1/decisions/{d['id']}").json()
    assert (shown["status"], shown["output"]) == ("overridden", {"label": "sell"})


def test_the_rate_per_minute_is_counted_in_redis(world, django_capture_on_commit_callbacks):
    r = redis.Redis.from_url(settings.REDIS_URL)
    for key in r.scan_iter(match=f"{settings.REDIS_PREFIX}:rate:*"):
        r.delete(key)
    guard(world, django_capture_on_commit_callbacks, {"rate_per_minute": 2})
    entry = config.cache.current().systems_by_slug["auto"]
    minute = 1_800_000_000.0  # a fixed clock minute: the count is per minute, shared by every process
    assert ratelimit.over(entry, 1, now=minute) == [False]
    assert ratelimit.over(entry, 3, now=minute + 1) == [False, True, True]
    assert ratelimit.over(entry, 1, now=minute + 60) == [False]  # the next minute starts afresh
    # Through the API: at most 2 a minute leave on the model's word, the rest get the fallback.
    answers = [send(world, {"label": "sell"}) for _ in range(5)]
    assert sum(a["status"] == "released" for a in answers) <= 4  # 2 per minute, at most two minutes
    held = [a for a in answers if a["status"] == "fallback"]
    assert held
    assert held[0]["reasons"][0] == "guardrail: more than 2 decisions this minute"
    batch = world.client_for("auto").post(URL + "/batch", {"items": [decision_body(0.9) for _ in range(5)]},
                                          content_type="application/json").json()["results"]
    assert sum(x["status"] == "released" for x in batch) <= 2


def test_guardrails_that_cannot_work_are_refused_with_the_field(world):
    admin = api_session(world.admin)
    r = admin.patch("/api/v1/systems/auto", {"guardrails": {"min": 10, "max": 1}, "reason": "x"},
                    content_type="application/json")
    assert r.status_code == 422
    assert (r.json()["error"]["field"], r.json()["error"]["message"]) == (
        "guardrails", "guardrails: min (10) must not be above max (1)")
    r = admin.patch("/api/v1/systems/auto", {"guardrails": {"field": "amount", "max": 500, "rate_per_minute": 60},
                                             "reason": "bounded"}, content_type="application/json")
    assert r.status_code == 200
    assert r.json()["guardrails"] == {"field": "amount", "max": 500.0, "rate_per_minute": 60}
    page = world.person(world.admin).get("/systems/auto/").content.decode()
    assert "Guardrails for level 3 (JSON)" in page


def test_guardrails_do_not_touch_a_level_2_system(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.update_system(world.admin, "sup", {"guardrails": {"field": "items", "allowed": ["x"]}},
                              reason="ready for level 3 later")
    body = decision_body(0.9)
    d = world.client_for("sup").post("/api/v1/systems/sup/decisions", body, content_type="application/json").json()
    assert d["status"] == "released"


def test_a_persons_output_must_keep_to_the_guardrails_too(world, django_capture_on_commit_callbacks):
    """Modify (and override) check what a person writes against the system's guardrails: a 422 on
    the output field, the item still theirs, nothing changed."""
    guard(world, django_capture_on_commit_callbacks, {"field": "label", "allowed": ["hold", "sell"]})
    d = send(world, {"label": "buy everything"})
    item = review.claim_next(world.operator)
    op = api_session(world.operator)
    r = op.post(f"/api/v1/review/{item.public_id}/resolve",
                {"action": "modify", "output": {"label": "buy more"}, "note": "n"}, content_type="application/json")
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "invalid", "field": "output", "message":
                                 "the output breaks the system's guardrail: output.label 'buy more' is not one of "
                                 "the allowed values"}
    item.refresh_from_db()
    assert (item.status, item.claimed_by_id) == ("claimed", world.operator.id)
    shown = world.client_for("auto").get(f"/api/v1/decisions/{d['id']}").json()
    assert (shown["status"], shown["output"]) == ("fallback", {"label": "hold"})
    ok = op.post(f"/api/v1/review/{item.public_id}/resolve",
                 {"action": "modify", "output": {"label": "sell"}, "note": "n"}, content_type="application/json")
    assert ok.status_code == 200
