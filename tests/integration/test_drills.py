"""Chaos drills end to end: an admin starts one through the API, the very next decision falls back
with the drill's reason and its failure stored, the performance job counts the failures, the breaker
opens on them alone, the drill ends by itself and leaves a report; the page's card; roles."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dashboards import breaker_job, drill_report, performance_job
from dashboards.models import MetricPoint
from dashboards.tasks import finish_drills
from oversight import config, decisions, drills
from oversight.models import AuditEvent, Decision, Drill
from oversight.schemas import DecisionIn
from tests.conftest import api_session, csrf_session, decision_body

START = "/api/v1/systems/{}/drills"


def decide(world, slug: str = "sup", confidence: float = 0.9) -> dict:
    r = world.client_for(slug).post(f"/api/v1/systems/{slug}/decisions", decision_body(confidence),
                                    content_type="application/json")
    assert r.status_code == 201, r.content
    return r.json()


def start(world, slug: str = "sup", **body) -> object:
    body = {"kind": "error", "minutes": 5, "reason": "game day", **body}
    return api_session(world.admin).post(START.format(slug), body, content_type="application/json")


def test_a_drill_makes_the_very_next_decision_fall_back(world, django_capture_on_commit_callbacks):
    assert decide(world)["route"] == "auto"  # the gate's config is cached now
    with django_capture_on_commit_callbacks(execute=True) as pushed:
        r = start(world, kind="garbage")
    assert r.status_code == 201, r.content
    drill = r.json()
    assert (drill["kind"], drill["share"], drill["running"], drill["started_by"]) == ("garbage", 1.0, True, "admin")
    assert drill["id"].startswith("drl_")
    assert len(pushed) >= 1

    d = decide(world)
    assert (d["status"], d["route"], d["output"]) == ("fallback", "fallback", {"items": ["safe"]})
    assert "drill: the model answered garbage" in d["reasons"]
    assert Decision.objects.get(id=d["id"].removeprefix("dec_")).failure == "garbage"
    assert decide(world, "auto")["route"] == "auto"  # other systems go on
    event = AuditEvent.objects.get(action="drill.start")
    assert (event.actor_label, event.target, event.reason, event.data["minutes"]) == (
        "admin", drill["id"], "game day", 5)


def test_a_share_of_half_gives_a_mix(world):
    assert start(world, kind="deadline", share=0.5).status_code == 201
    routes = [decide(world)["route"] for _ in range(40)]
    assert set(routes) == {"auto", "fallback"}
    failures = set(Decision.objects.filter(route="fallback").values_list("failure", flat=True))
    assert failures == {"deadline"}
    assert set(Decision.objects.filter(route="auto").values_list("failure", flat=True)) == {""}


@pytest.mark.parametrize(("body", "field"), [
    ({"minutes": 0}, "minutes"),
    ({"minutes": 120}, "minutes"),
    ({"minutes": 1.5}, "minutes"),
    ({"kind": "meteor"}, "kind"),
    ({"reason": "  "}, "reason"),
    ({"share": 0}, "share"),
    ({"share": 1.5}, "share"),
])
def test_bad_input_names_the_field(world, body, field):
    r = start(world, **body)
    assert r.status_code == 422, r.content
    assert r.json()["error"]["field"] == field
    assert not Drill.objects.exists()


def test_one_drill_per_system_and_unknown_systems(world):
    assert start(world).status_code == 201
    r = start(world, kind="deadline")
    assert (r.status_code, r.json()["error"]["field"]) == (409, "system")
    assert "stop it first" in r.json()["error"]["message"]
    assert start(world, "auto").status_code == 201  # another system may run its own
    assert start(world, "nope").status_code == 404


def test_stopping_early_ends_it_at_once(world, django_capture_on_commit_callbacks):
    drill = start(world).json()
    assert decide(world)["route"] == "fallback"
    admin = api_session(world.admin)
    with django_capture_on_commit_callbacks(execute=True):
        r = admin.post(f"/api/v1/drills/{drill['id']}/stop")
    assert r.status_code == 200, r.content
    assert (r.json()["running"], r.json()["ended_by"]) == (False, "admin")
    assert decide(world)["route"] == "auto"
    assert admin.post(f"/api/v1/drills/{drill['id']}/stop").status_code == 409
    assert admin.post("/api/v1/drills/drl_999999/stop").status_code == 404
    assert AuditEvent.objects.get(action="drill.end").data["early"] is True
    # the report follows on the next tick; a new drill may start once it is written
    finish_drills()
    shown = admin.get(START.format("sup")).json()["drills"]
    assert shown[0]["report"]["stopped_early"] is True
    assert shown[0]["report"]["failures"] == {"error": 1}
    assert start(world).status_code == 201


def test_a_drill_past_its_end_injects_nothing_even_before_the_snapshot_reloads(world):
    assert start(world).status_code == 201
    entry = config.cache.current().systems_by_slug["sup"]
    assert entry.drill is not None
    assert (entry.drill.kind, entry.drill.share) == ("error", 1.0)
    payload = DecisionIn.model_validate(decision_body())
    # The snapshot reloads only when the epoch moves: the gate compares the drill's end with now itself.
    assert decisions.build(entry, payload, entry.drill.ends_at - timedelta(seconds=1)).failure == "error"
    late = decisions.build(entry, payload, entry.drill.ends_at)
    assert (late.route, late.failure) == ("auto", "")


def test_the_error_rate_alone_trips_the_breaker_and_the_report_says_how_fast(world, django_capture_on_commit_callbacks):
    world.supervised.breaker = {"min_accuracy": None, "min_mean_reward": None, "max_drifted_share": None,
                                "feedback_loop": False}
    world.supervised.save()
    t0 = timezone.now()
    for _ in range(3):
        decide(world)  # before the drill: no failures
    with django_capture_on_commit_callbacks(execute=True):  # the epoch moves on commit
        assert start(world, minutes=1).status_code == 201
    for _ in range(7):
        decide(world)

    performance_job.run_system(world.supervised.id)
    window = MetricPoint.objects.filter(system=world.supervised, name="gate.error_rate").order_by("-t").first()
    assert window is not None
    assert window.value == pytest.approx(0.7)
    assert MetricPoint.objects.get(system=world.supervised, name="gate.deadline_miss_rate", t=window.t).value == 0

    with django_capture_on_commit_callbacks(execute=True):
        changes = breaker_job.run_all()["changes"]
    assert [(c["from"], c["to"]) for c in changes] == [("closed", "open")]
    assert changes[0]["reason"].startswith("error rate 0.7 above 0.05 (window from ")
    d = decide(world)
    assert (d["route"], Decision.objects.get(id=d["id"].removeprefix("dec_")).failure) == ("breaker_open", "")

    # The drill's minute is up: the tick ends it and writes the report (the clock injected).
    with django_capture_on_commit_callbacks(execute=True):
        done = finish_drills(now=t0 + timedelta(minutes=2))
    drill = Drill.objects.get()
    assert done["ended"] == [drill.public_id]
    assert (drill.ended_by, drill.ended_at) == ("drills", drill.ends_at)
    r = drill.report
    assert (r["decisions"], r["failures"], r["fallback"], r["stopped_early"]) == (8, {"error": 7}, 8, False)
    assert r["by_route"] == {"fallback": 7, "breaker_open": 1}
    assert r["breaker"]["opened_at"] is not None
    assert r["breaker"]["recovered"] is False
    assert 0 <= r["breaker"]["seconds_to_open"] < 60
    assert r["peaks"]["gate.error_rate"] == pytest.approx(0.7)
    assert any(s.startswith("The breaker opened ") and "error rate 0.7 above 0.05" in s for s in r["sentences"])
    assert AuditEvent.objects.get(action="drill.end").actor_label == "drills"
    assert config.cache.current().systems_by_slug["sup"].drill is None  # the epoch moved
    assert decide(world)["route"] == "breaker_open"  # the breaker, not the drill, holds the fallback now


def test_the_report_follows_the_breaker_until_it_recovers(world):
    drill = drills.start(world.admin, "sup", "error", 1, 1.0, "game day")
    decide(world)
    later = drill.ends_at + timedelta(seconds=5)
    finish_drills(now=later)
    drill.refresh_from_db()
    assert drill.report["final"] is False
    assert drill.report["breaker"]["opened_at"] is None
    assert "The breaker did not open (yet)." in drill.report["sentences"]
    finish_drills(now=drill.ends_at + drill_report.AFTERMATH + timedelta(seconds=1))
    drill.refresh_from_db()
    assert drill.report["final"] is True
    assert "The breaker did not open." in drill.report["sentences"]


def test_roles_both_sides(world):
    for who in (world.operator, world.editor, world.nobody):
        r = api_session(who).post(START.format("sup"), {"kind": "error", "minutes": 5, "reason": "x"},
                                  content_type="application/json")
        assert r.status_code == 403
    assert world.client_for("sup").post(START.format("sup"), {"kind": "error", "minutes": 5, "reason": "x"},
                                        content_type="application/json").status_code == 403
    drill = start(world).json()
    assert api_session(world.operator).post(f"/api/v1/drills/{drill['id']}/stop").status_code == 403
    assert api_session(world.operator).get(START.format("sup")).json()["drills"][0]["id"] == drill["id"]
    assert api_session(world.nobody).get(START.format("sup")).status_code == 403
    assert Drill.objects.get().ended_at is None


def test_the_page_card_starts_and_stops_a_drill(world):
    page = csrf_session(world.admin)
    html = page.get("/monitor/sup/").content.decode()
    assert "Chaos drill" in html
    assert "I understand the clients of this system get the fallback" in html
    url = "/monitor/sup/drill/"
    r = page.post(url, {"op": "start", "drill-kind": "error", "drill-share": "1", "drill-minutes": "5",
                        "drill-reason": "game day"})
    assert r.status_code == 422  # the confirmation is missing
    assert not Drill.objects.exists()
    r = page.post(url, {"op": "start", "drill-kind": "error", "drill-share": "1", "drill-minutes": "5",
                        "drill-reason": "game day", "drill-confirm": "on"})
    assert r.status_code == 302, r.content
    drill = Drill.objects.get()
    html = page.get("/monitor/sup/").content.decode()
    assert "until" in html
    assert "Stop the drill" in html
    r = page.post(url, {"op": "stop", "drill": drill.public_id})
    assert r.status_code == 302
    drill.refresh_from_db()
    assert drill.ended_at is not None
    assert drill.report is not None
    html = page.get("/monitor/sup/").content.decode()
    assert "stopped early by admin" in html
    operator = csrf_session(world.operator)
    assert "Start the drill" not in operator.get("/monitor/sup/").content.decode()
    assert operator.post(url, {"op": "stop", "drill": drill.public_id}).status_code == 403
