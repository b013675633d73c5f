"""/metrics: Prometheus text for people (session or personal token), 401 for everyone else."""

from __future__ import annotations

from django.test import Client

from oversight import actions


def test_metrics_need_a_person_with_a_role(world):
    assert Client().get("/metrics").status_code == 401
    assert world.client_for("sup").get("/metrics").status_code == 401
    assert Client(HTTP_AUTHORIZATION="Token ovt_wrong").get("/metrics").status_code == 401
    assert world.person(world.nobody).get("/metrics").status_code == 401


def test_metrics_show_levels_kill_switches_and_queue_depth(world):
    actions.set_killswitch(world.admin, "system", True, "drift", "sup")
    world.client_for("crit").post(
        "/api/v1/systems/crit/decisions",
        {"prediction": {"output": 1, "confidence": 0.99}},
        content_type="application/json",
    )
    _, token = actions.create_personal_token(world.operator, "prometheus")
    r = Client(HTTP_AUTHORIZATION=f"Token {token}").get("/metrics")
    assert r.status_code == 200
    text = r.content.decode()
    assert 'oversight_control_level{system="crit"} 1' in text
    assert 'oversight_killswitch_engaged{scope="system",system="sup"} 1' in text
    assert 'oversight_killswitch_engaged{scope="system",system="auto"} 0' in text
    assert 'oversight_killswitch_engaged{scope="global",system=""} 0' in text
    assert 'oversight_review_queue_depth{system="crit"} 1' in text
