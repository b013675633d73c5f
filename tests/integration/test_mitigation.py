"""Feedback-loop mitigation: a share of decisions from a non-model source while the loop alert is
open — by itself (policy "auto") or after an admin's click — audited, and ended again."""

from __future__ import annotations

from django.utils import timezone

from dashboards import breaker_job
from dashboards.models import Alert
from oversight import gate, mitigation
from oversight.models import AISystem, AuditEvent, LoopMitigation
from tests.conftest import api_session, decision_body

URL = "/api/v1/systems/{}/mitigation"


def test_apply_serves_the_share_from_the_fallback():
    released = gate.Verdict("released", "auto", {"items": ["t1"]}, 0.9, "m", ["confidence 0.90 ≥ threshold 0.60"],
                            audit=True)
    assert mitigation.apply(None, released, 0.0, {"items": ["top"]}) is released
    assert mitigation.apply((0.15, 0.5), released, 0.15, {"items": ["top"]}) is released
    v = mitigation.apply((0.15, 0.5), released, 0.149, {"items": ["top"]})
    assert (v.status, v.route, v.output, v.audit) == ("fallback", "fallback", {"items": ["top"]}, False)
    assert v.reasons[-2:] == ["feedback-loop mitigation: in the 15% share served from a non-model source",
                              "answered with the system's fallback output"]


def test_an_admin_starts_and_ends_a_mitigation_by_click(world, django_capture_on_commit_callbacks):
    admin = api_session(world.admin)
    r = admin.post(URL.format("sup"), {"active": True}, content_type="application/json")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "reason")
    assert api_session(world.operator).post(URL.format("sup"), {"active": True, "reason": "x"},
                                            content_type="application/json").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        r = admin.patch("/api/v1/systems/sup", {"loop_mitigation": {"exploration_share": 1.0}, "reason": "demo"},
                        content_type="application/json")
        assert r.status_code == 200
        r = admin.post(URL.format("sup"), {"active": True, "reason": "recommendations narrowing"},
                       content_type="application/json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["active"], body["exploration_share"], body["model_weight"], body["started_by"]) == (
        True, 1.0, 0.5, "admin")
    d = world.client_for("sup").post("/api/v1/systems/sup/decisions", decision_body(0.9),
                                     content_type="application/json").json()
    assert (d["route"], d["output"]) == ("fallback", {"items": ["safe"]})
    again = admin.post(URL.format("sup"), {"active": True, "reason": "again"}, content_type="application/json")
    assert again.status_code == 409
    with django_capture_on_commit_callbacks(execute=True):
        r = admin.post(URL.format("sup"), {"active": False, "reason": "diversity is back"},
                       content_type="application/json")
    assert r.json()["active"] is False
    d = world.client_for("sup").post("/api/v1/systems/sup/decisions", decision_body(0.9),
                                     content_type="application/json").json()
    assert d["route"] == "auto"
    assert list(AuditEvent.objects.filter(action__startswith="mitigation.").order_by("id").values_list(
        "action", "actor_label", "reason")) == [("mitigation.start", "admin", "recommendations narrowing"),
                                               ("mitigation.end", "admin", "diversity is back")]
    assert world.client_for("sup").get(URL.format("sup")).json()["history"][0]["end_reason"] == "diversity is back"


def test_an_auto_policy_mitigates_while_the_alert_is_open(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        api_session(world.admin).patch("/api/v1/systems/auto", {"loop_mitigation": {"mode": "auto"}, "reason": "x"},
                                       content_type="application/json")
    alert = Alert.objects.create(system=world.autonomous, kind="feedback_loop", subject="correlation",
                                 message="correlation rose by 0.4", opened_at=timezone.now())
    AISystem.objects.filter(slug="auto").update(breaker={"feedback_loop": False})  # the breaker stays out of it
    with django_capture_on_commit_callbacks(execute=True):
        out = breaker_job.run_all()
    assert out["mitigations"] == [{"system_id": world.autonomous.id, "action": "start"}]
    m = LoopMitigation.objects.get()
    assert (m.auto, m.started_by, m.reason) == (
        True, "feedback-loop monitor", "feedback-loop alert open: correlation rose by 0.4")
    assert breaker_job.run_all()["mitigations"] == []  # nothing twice
    alert.state = Alert.State.RESOLVED
    alert.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert breaker_job.run_all()["mitigations"] == [{"system_id": world.autonomous.id, "action": "end"}]
    m.refresh_from_db()
    assert m.ended_at is not None
    assert m.end_reason == "the feedback-loop alert was resolved"


def test_a_click_policy_waits_for_a_person_and_off_refuses(world, django_capture_on_commit_callbacks):
    Alert.objects.create(system=world.supervised, kind="feedback_loop", subject="correlation",
                         message="correlation rose", opened_at=timezone.now())
    assert breaker_job.run_all()["mitigations"] == []  # default mode "click": a person decides
    with django_capture_on_commit_callbacks(execute=True):
        api_session(world.admin).patch("/api/v1/systems/sup", {"loop_mitigation": {"mode": "off"}, "reason": "x"},
                                       content_type="application/json")
    r = api_session(world.admin).post(URL.format("sup"), {"active": True, "reason": "try"},
                                      content_type="application/json")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
    assert "mitigation is off" in r.json()["error"]["message"]


def test_the_feedback_loops_card_starts_and_ends_it_for_admins(world, django_capture_on_commit_callbacks):
    from django.test import Client

    url = "/monitor/sup/mitigation/"
    operator = world.person(world.operator)
    assert "Mitigate by hand" not in operator.get("/monitor/sup/").content.decode()
    assert operator.post(url, {"mitigation-active": "start", "mitigation-reason": "x"}).status_code == 403
    admin = Client()
    admin.force_login(world.admin)
    r = admin.post(url, {"mitigation-active": "start", "mitigation-reason": ""})
    assert r.status_code == 422
    assert "Say why: a reason is required to start or end a mitigation." in r.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        r = admin.post(url, {"mitigation-active": "start", "mitigation-reason": "narrowing <fast>"})
    assert (r.status_code, r["Location"]) == (302, "/monitor/sup/#loops-card")
    state = admin.get("/monitor/sup/data.json").json()["mitigation"]
    assert (state["active"], state["started_by"], state["reason"]) == (True, "admin", "narrowing <fast>")
    r = admin.post(url, {"mitigation-active": "start", "mitigation-reason": "again"})
    assert r.status_code == 422
    assert "already active" in r.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(url, {"mitigation-active": "end", "mitigation-reason": "back to normal"})
    assert admin.get("/monitor/sup/data.json").json()["mitigation"]["active"] is False
