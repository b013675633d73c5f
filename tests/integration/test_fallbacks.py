"""A system's own fallback through the API: a rule on one context field, or withhold for a person."""

from __future__ import annotations

from oversight import actions
from reviewqueue.models import ReviewItem
from tests.conftest import api_session, decision_body


def test_a_killed_system_answers_by_its_fallback_rule(world, django_capture_on_commit_callbacks):
    admin = api_session(world.admin)
    r = admin.patch("/api/v1/systems/sup", {"fallback_rule": {"kind": "rule", "by": "context.activity",
                                                              "outputs": {"sleep": {"items": ["calm-1"]}}},
                                            "reason": "calm music at night"}, content_type="application/json")
    assert r.status_code == 200, r.content
    assert r.json()["fallback_rule"] == {"kind": "rule", "by": "context.activity",
                                         "outputs": {"sleep": {"items": ["calm-1"]}}}
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "system", True, "skip rate doubled", "sup")
    client = world.client_for("sup")
    night = client.post("/api/v1/systems/sup/decisions", decision_body(0.9, context={"activity": "sleep"}),
                        content_type="application/json").json()
    assert (night["route"], night["output"]) == ("killed", {"items": ["calm-1"]})
    day = client.post("/api/v1/systems/sup/decisions", decision_body(0.9, context={"activity": "gym"}),
                      content_type="application/json").json()
    assert day["output"] == {"items": ["safe"]}  # no output of its own, no default: the fixed fallback


def test_withhold_queues_every_fallback_for_a_person(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.update_system(world.admin, "auto", {"fallback_rule": {"kind": "withhold"}}, reason="hold, ask")
        actions.set_killswitch(world.admin, "system", True, "bad push", "auto")
    d = world.client_for("auto").post("/api/v1/systems/auto/decisions", decision_body(0.9),
                                      content_type="application/json").json()
    assert (d["status"], d["route"], d["output"]) == ("pending_review", "killed", None)
    assert d["reasons"][-1] == "withheld: this system's fallback is to wait for a person"
    assert ReviewItem.objects.get(decision__id=d["id"][4:]).kind == "gate"


def test_a_fallback_rule_that_cannot_work_is_a_422_on_the_api_and_the_page(world):
    r = api_session(world.admin).patch("/api/v1/systems/sup", {"fallback_rule": {"kind": "rule"}, "reason": "x"},
                                       content_type="application/json")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "fallback_rule")
    page = world.person(world.admin)
    token = page.get("/systems/sup/").cookies["csrftoken"].value
    resp = page.post("/systems/sup/", {"fallback_rule": '{"kind": "rule"}', "reason": "x", "level": "2",
                                       "csrfmiddlewaretoken": token})
    assert resp.status_code == 422
    assert "When the model cannot answer" in resp.content.decode()
    assert 'a rule needs &quot;by&quot;' in resp.content.decode()
