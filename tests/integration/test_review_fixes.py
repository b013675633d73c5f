"""Fixes from review: a missed Redis raise, a stopped model behind votes, odd ids, chunked bodies."""

from __future__ import annotations

import httpx
import redis
from django.conf import settings

from oversight import actions, config, gate
from tests.conftest import decision_body, free_port


def test_a_change_whose_redis_raise_failed_still_reaches_other_processes_within_a_second(
    world, django_capture_on_commit_callbacks
):
    clock = [1000.0]
    other = config._Cache(clock=lambda: clock[0])  # another web process, with its own snapshot and a clock we move
    assert other.current().systems_by_slug["sup"].kills.system_reason is None
    saved = config.redis_epoch._client
    config.redis_epoch._client = redis.Redis(host="127.0.0.1", port=free_port(), **config.FAIL_FAST)
    try:
        with django_capture_on_commit_callbacks(execute=True):  # the raise to Redis runs, and fails
            actions.set_killswitch(world.admin, "system", True, "raise will fail", "sup")
    finally:
        config.redis_epoch._client = saved
        config.redis_epoch.down_until = 0.0  # Redis answers again
    stale_in_redis = int(redis.Redis.from_url(settings.REDIS_URL).get(settings.REDIS_PREFIX + config.EPOCH_KEY_SUFFIX))
    assert stale_in_redis < config.db_epoch()
    assert other.current().systems_by_slug["sup"].kills.system_reason is None  # Redis still says nothing moved
    clock[0] += config.DB_CHECK_EVERY_S  # a second later
    assert other.current().systems_by_slug["sup"].kills.system_reason == "raise will fail"
    repaired = int(redis.Redis.from_url(settings.REDIS_URL).get(settings.REDIS_PREFIX + config.EPOCH_KEY_SUFFIX))
    assert repaired == config.db_epoch()


def test_a_stopped_model_cannot_answer_through_other_models_votes():
    kills = gate.KillState(models={"bad": "drift"})
    prediction = gate.Prediction("from-bad", 0.9, "bad", (gate.Vote("ok", "from-ok", 0.7),))
    verdict = gate.decide(gate.Policy(3, 0.5, 0.0, {"safe": True}), kills, prediction, 0.5)
    assert verdict.output == "from-ok"
    assert verdict.model == "ok"
    assert any("model bad left out" in r for r in verdict.reasons)
    alone = gate.Prediction("from-bad", 0.9, "bad", (gate.Vote("bad", "from-bad", 0.9),))
    assert gate.decide(gate.Policy(3, 0.5, 0.0, {"safe": True}), kills, alone, 0.5).route == "killed"


def test_model_names_are_compared_as_stored(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "model", True, "bad push", "sup", "collab-v3")
    body = decision_body(0.9)
    body["prediction"]["model"] = " collab-v3 "
    r = world.client_for("sup").post("/api/v1/systems/sup/decisions", body, content_type="application/json")
    assert r.json()["route"] == "killed"


def test_non_numeric_ids_in_forms_are_404_not_500(world):
    admin = world.api_person(world.admin)
    admin.cookies["csrftoken"] = "x" * 32
    r = admin.post("/systems/sup/", {"op": "revoke_key", "key": "abc", "csrfmiddlewaretoken": "x" * 32})
    assert r.status_code == 404
    r = admin.post("/tokens/", {"op": "revoke", "token": "1 OR 1", "csrfmiddlewaretoken": "x" * 32})
    assert r.status_code == 404


def test_a_chunked_body_without_length_is_refused(tworld, live_server_url):
    def chunks():
        yield b'{"prediction": {"output": 1, '
        yield b'"confidence": 0.9}}'

    r = httpx.post(
        f"{live_server_url}/api/v1/systems/sup/decisions",
        content=chunks(),
        headers={"Authorization": f"Bearer {tworld.keys['sup']}", "Content-Type": "application/json"},
    )
    assert r.status_code == 411
    assert r.json()["error"]["code"] == "length_required"
