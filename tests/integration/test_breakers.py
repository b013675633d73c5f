"""Circuit breakers end to end: stored monitoring figures trip a breaker, the very next decision
falls back, it recovers through half-open; people open and close breakers by hand; Redis away."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dashboards import breaker_job
from dashboards.models import Alert, MetricPoint
from dashboards.tasks import run_monitoring
from oversight import actions, breaker_actions, config
from oversight.models import AuditEvent, Breaker, BreakerEvent, KillSwitch, ReleaseRequest
from tests.asgiclient import ApiClient
from tests.conftest import api_session, decision_body, second_admin

URL = "/api/v1/systems/{}/decisions"


def decide(client: ApiClient, slug: str, confidence: float = 0.9) -> dict:
    r = client.post(URL.format(slug), decision_body(confidence), content_type="application/json")
    assert r.status_code == 201, r.content
    return r.json()


def figures(system, start, **values: float) -> None:
    for name, value in values.items():
        MetricPoint.objects.update_or_create(system=system, name=name.replace("__", "."), t=start,
                                             defaults={"value": value})


def hour_start(t):
    return t.replace(minute=0, second=0, microsecond=0)


def test_a_bad_window_opens_the_breaker_and_the_next_decision_falls_back(world, django_capture_on_commit_callbacks):
    client = world.client_for("sup")
    assert decide(client, "sup")["route"] == "auto"  # the gate's config is cached now
    now = timezone.now()
    figures(world.supervised, hour_start(now), perf__outcomes=120, perf__accuracy=0.61)

    with django_capture_on_commit_callbacks(execute=True):
        result = breaker_job.run_all(now)
    assert [(c["from"], c["to"]) for c in result["changes"]] == [("closed", "open")]

    d = decide(client, "sup")
    assert (d["status"], d["route"], d["output"]) == ("fallback", "breaker_open", {"items": ["safe"]})
    assert d["reasons"][0].startswith("circuit breaker open: accuracy 0.61 below 0.85 (window from ")
    assert decide(world.client_for("auto"), "auto")["route"] == "auto"  # other systems go on

    event = BreakerEvent.objects.get()
    assert (event.from_state, event.to_state, event.metric, event.value, event.threshold, event.actor_label) == (
        "closed", "open", "perf.accuracy", 0.61, 0.85, "breaker")
    audit = AuditEvent.objects.get(action="breaker.open")
    assert (audit.actor_label, audit.target, audit.system_id) == ("breaker", "breaker:sup", world.supervised.id)

    shown = world.client_for("sup").get("/api/v1/systems/sup").json()
    assert [(b["model"], b["state"]) for b in shown["breakers"]] == [("", "open")]

    # A tick with nothing new changes nothing and writes nothing.
    assert breaker_job.run_all(now + timedelta(seconds=10))["changes"] == []
    assert BreakerEvent.objects.count() == 1


def test_the_breaker_recovers_through_half_open(world, django_capture_on_commit_callbacks):
    world.supervised.breaker = {"cooldown_s": 60, "canary_share": 0.5}
    world.supervised.save()
    t0 = hour_start(timezone.now()) - timedelta(hours=3)
    figures(world.supervised, t0, perf__outcomes=100, perf__accuracy=0.5)
    with django_capture_on_commit_callbacks(execute=True):
        assert breaker_job.run_all(t0 + timedelta(minutes=30))["changes"][0]["to"] == "open"
        assert breaker_job.run_all(t0 + timedelta(minutes=30, seconds=59))["changes"] == []
        assert breaker_job.run_all(t0 + timedelta(minutes=31))["changes"][0]["to"] == "half_open"

    routes = {decide(world.client_for("sup"), "sup")["route"] for _ in range(40)}
    assert routes == {"auto", "breaker_open"}  # half the traffic is the canary, the rest the fallback

    figures(world.supervised, t0 + timedelta(hours=1), perf__outcomes=100, perf__accuracy=0.95)
    with django_capture_on_commit_callbacks(execute=True):
        assert breaker_job.run_all(t0 + timedelta(hours=1, minutes=50))["changes"][0]["to"] == "closed"
    assert {decide(world.client_for("sup"), "sup")["route"] for _ in range(10)} == {"auto"}
    assert list(BreakerEvent.objects.order_by("at").values_list("to_state", flat=True)) == [
        "open", "half_open", "closed"]


def test_a_level_1_breaker_waits_for_a_person_to_close_it(world, django_capture_on_commit_callbacks):
    world.critical.breaker = {"cooldown_s": 0}
    world.critical.save()
    t0 = hour_start(timezone.now()) - timedelta(hours=3)
    figures(world.critical, t0, perf__outcomes=100, perf__accuracy=0.3)
    with django_capture_on_commit_callbacks(execute=True):
        breaker_job.run_all(t0 + timedelta(minutes=10))
        breaker_job.run_all(t0 + timedelta(minutes=11))  # cool-down 0: half-open at once
        figures(world.critical, t0 + timedelta(hours=1), perf__outcomes=100, perf__accuracy=0.99)
        breaker_job.run_all(t0 + timedelta(hours=1, minutes=30))
        breaker_job.run_all(t0 + timedelta(hours=1, minutes=40))
    b = Breaker.objects.get(system=world.critical)
    assert (b.state, b.awaiting_person) == ("half_open", True)
    admin = api_session(world.admin)
    with django_capture_on_commit_callbacks(execute=True):
        r = admin.post("/api/v1/systems/crit/breakers", {"state": "closed", "reason": "figures are back"},
                       content_type="application/json")
    assert r.status_code == 200, r.content
    assert (r.json()["state"], r.json()["changed_by"]) == ("closed", "admin")


def test_an_open_feedback_loop_alert_trips_the_breaker(world, django_capture_on_commit_callbacks):
    Alert.objects.create(system=world.autonomous, kind="feedback_loop", subject="correlation",
                         message="prediction-outcome correlation rose by 0.4", opened_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        breaker_job.run_all()
    d = decide(world.client_for("auto"), "auto")
    assert d["route"] == "breaker_open"
    assert d["reasons"][0] == ("circuit breaker open: feedback-loop alert open: "
                               "prediction-outcome correlation rose by 0.4")


def test_drifted_features_trip_the_breaker(world, django_capture_on_commit_callbacks):
    from dashboards.models import DriftResult

    start = hour_start(timezone.now())
    for i, drifted in enumerate([True, True, False]):
        DriftResult.objects.create(system=world.supervised, window_start=start, window_end=start + timedelta(hours=1),
                                   feature=f"f{i}", method="psi", statistic=0.3, threshold=0.2, drifted=drifted,
                                   primary=True, rows=500)
    with django_capture_on_commit_callbacks(execute=True):
        change = breaker_job.run_all()["changes"][0]
    assert change["reason"].startswith("share of drifted features 0.667 above 0.5")


def test_admins_open_and_close_breakers_by_hand_with_a_reason(world, django_capture_on_commit_callbacks):
    admin = api_session(world.admin)
    url = "/api/v1/systems/sup/breakers"
    assert decide(world.client_for("sup"), "sup")["route"] == "auto"
    r = admin.post(url, {"state": "open", "reason": "  "}, content_type="application/json")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "reason")
    r = admin.post(url, {"state": "half_open", "reason": "x"}, content_type="application/json")
    assert r.status_code == 422
    r = admin.post("/api/v1/systems/nope/breakers", {"state": "open", "reason": "x"}, content_type="application/json")
    assert r.status_code == 404
    assert not Breaker.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="breaker.").exists()

    with django_capture_on_commit_callbacks(execute=True):
        r = admin.post(url, {"state": "open", "reason": "bad model push"}, content_type="application/json")
    assert (r.status_code, r.json()["state"], r.json()["manual"]) == (200, "open", True)
    assert decide(world.client_for("sup"), "sup")["route"] == "breaker_open"
    # opened by hand: the evaluation does not move it, however good the figures
    figures(world.supervised, hour_start(timezone.now()) + timedelta(hours=1), perf__outcomes=100, perf__accuracy=1)
    assert breaker_job.run_all(timezone.now() + timedelta(days=1))["changes"] == []
    r = admin.post(url, {"state": "open", "reason": "again"}, content_type="application/json")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")

    with django_capture_on_commit_callbacks(execute=True):
        r = admin.post(url, {"state": "closed", "reason": "rolled back"}, content_type="application/json")
    assert decide(world.client_for("sup"), "sup")["route"] == "auto"

    # one model's breaker: its votes are left out, the system goes on
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(url, {"state": "open", "model": "collab-v3", "reason": "stale features"},
                   content_type="application/json")
    d = decide(world.client_for("sup"), "sup")
    assert (d["route"], d["reasons"][0]) == ("breaker_open", "model collab-v3 is stopped: circuit breaker open "
                                                             "(stale features)")
    listed = admin.get(url).json()
    assert [(b["model"], b["state"]) for b in listed["breakers"]] == [("", "closed"), ("collab-v3", "open")]
    assert [e["to_state"] for e in listed["events"]] == ["open", "closed", "open"]
    assert listed["policy"]["min_accuracy"] == 0.85
    actions = list(AuditEvent.objects.filter(action__startswith="breaker.").order_by("id").values_list(
        "action", "actor_label", "reason"))
    assert actions == [("breaker.open", "admin", "bad model push"), ("breaker.closed", "admin", "rolled back"),
                       ("breaker.open", "admin", "stale features")]


def test_a_breaker_is_honoured_with_redis_away(world, django_capture_on_commit_callbacks):
    import redis

    assert decide(world.client_for("sup"), "sup")["route"] == "auto"
    saved = config.redis_epoch._client
    config.redis_epoch._client = redis.Redis(host="127.0.0.1", port=1, **config.FAIL_FAST)
    try:
        breaker_actions.set_by_hand(world.admin, "sup", "open", "Redis is down and so is the model")
        assert decide(world.client_for("sup"), "sup")["route"] == "breaker_open"
    finally:
        config.redis_epoch._client = saved
        config.redis_epoch.down_until = 0.0


def test_the_policy_s_breaker_thresholds_are_checked(world):
    admin = api_session(world.admin)
    r = admin.patch("/api/v1/systems/sup", {"breaker": {"min_accuracy": 1.5}, "reason": "x"},
                    content_type="application/json")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "breaker.min_accuracy")
    r = admin.patch("/api/v1/systems/sup", {"breaker": {"min_acuracy": 0.9}, "reason": "x"},
                    content_type="application/json")
    assert r.status_code == 422
    r = admin.patch("/api/v1/systems/sup", {"breaker": {"min_accuracy": 0.9, "canary_share": 0.1}, "reason": "x"},
                    content_type="application/json")
    assert r.status_code == 200
    assert r.json()["breaker"] == {"min_accuracy": 0.9, "canary_share": 0.1}


@pytest.mark.django_db(transaction=True)
def test_a_monitoring_run_on_a_real_worker_trips_the_breaker(tworld, celery_worker_proc):
    """Outcomes that say the model is wrong → the worker's monitoring run → the next decision falls back."""
    client = tworld.client_for("auto")
    ids = [decide(client, "auto")["id"] for _ in range(40)]
    for i in ids:
        r = client.post(f"/api/v1/decisions/{i}/outcome", {"label": {"items": ["t2"]}},
                        content_type="application/json")
        assert r.status_code == 201, r.content
    result = run_monitoring.delay(tworld.autonomous.id).get(timeout=90)
    # the system's breaker opens, and so does the one model's (its own accuracy is 0 too)
    assert sorted((c["model"], c["to"]) for c in result["breakers"]["changes"]) == [("", "open"),
                                                                                     ("collab-v3", "open")]
    d = decide(client, "auto")
    assert d["route"] == "breaker_open"
    assert d["reasons"][0].startswith("circuit breaker open: accuracy 0 below 0.85")


def test_the_system_page_shows_the_breaker_and_admins_move_it_there(world, django_capture_on_commit_callbacks):
    page = "/monitor/sup/"
    operator = world.person(world.operator)
    assert operator.get(page).status_code == 200
    assert 'id="breaker"' in operator.get(page).content.decode()
    assert "Open or close it by hand" not in operator.get(page).content.decode()  # admins only
    r = operator.post(page + "breaker/", {"breaker-state": "open", "breaker-reason": "x"})
    assert r.status_code == 403
    assert world.person(world.nobody).get(page).status_code == 403

    from django.test import Client

    admin = Client()
    admin.force_login(world.admin)
    html = admin.get(page).content.decode()
    assert "Open or close it by hand" in html
    r = admin.post(page + "breaker/", {"breaker-state": "open", "breaker-model": "collab-v3", "breaker-reason": ""})
    assert r.status_code == 422
    body = r.content.decode()
    assert "Say why: a reason is required to move a breaker by hand." in body
    assert 'value="collab-v3"' in body  # what was typed stays
    with django_capture_on_commit_callbacks(execute=True):
        r = admin.post(page + "breaker/", {"breaker-state": "open", "breaker-reason": "<b>bad push</b>"})
    assert (r.status_code, r["Location"]) == (302, "/monitor/sup/#breaker")
    state = admin.get("/monitor/sup/data.json").json()["breakers"]
    assert [(s["model"], s["state"], s["by"]) for s in state["states"]] == [("", "open", "admin")]
    assert [(e["from"], e["to"], e["reason"]) for e in state["events"]] == [("closed", "open", "<b>bad push</b>")]
    html = admin.get(page).content.decode()
    assert "\\u003Cb\\u003Ebad push" in html  # in the page's JSON (json_script), escaped
    assert "<b>bad push" not in html


# --- four eyes: releasing what stops a critical system takes two admins ---------------------------


def test_four_eyes_release_of_the_global_switch(world, django_capture_on_commit_callbacks):
    admin, other = api_session(world.admin), api_session(second_admin())
    url = "/api/v1/killswitches"
    with django_capture_on_commit_callbacks(execute=True):
        assert admin.post(url, {"scope": "global", "engaged": True, "reason": "incident 9"},
                          content_type="application/json").status_code == 200
    r = admin.post(url, {"scope": "global", "engaged": False}, content_type="application/json")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "reason")
    with django_capture_on_commit_callbacks(execute=True):
        r = admin.post(url, {"scope": "global", "engaged": False, "reason": "root cause fixed"},
                       content_type="application/json")
    assert r.status_code == 202
    asked = r.json()
    assert (asked["status"], asked["scope"], asked["requested_by"]) == ("pending_approval", "global", "admin")
    assert decide(world.client_for("auto"), "auto")["route"] == "killed"  # still engaged
    again = admin.post(url, {"scope": "global", "engaged": False, "reason": "again"}, content_type="application/json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "conflict")
    listed = api_session(world.operator).get(url + "/releases").json()
    assert [x["id"] for x in listed] == [asked["id"]]

    own = admin.post(f"{url}/releases/{asked['id']}/approve", content_type="application/json")
    assert (own.status_code, own.json()["error"]["message"]) == (
        403, "you asked for this release: a second admin must approve it")
    nope = other.post(f"{url}/releases/{asked['id']}/withdraw", content_type="application/json")
    assert (nope.status_code, nope.json()["error"]["message"]) == (
        403, "only admin, who asked, can withdraw this request")
    assert other.post(f"{url}/releases/rel_999999/approve", content_type="application/json").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        ok = other.post(f"{url}/releases/{asked['id']}/approve", content_type="application/json")
    assert (ok.status_code, ok.json()["engaged"], ok.json()["changed_by"]) == (200, False, "admin2")
    assert decide(world.client_for("auto"), "auto")["route"] == "auto"
    twice = other.post(f"{url}/releases/{asked['id']}/approve", content_type="application/json")
    assert (twice.status_code, twice.json()["error"]["message"]) == (
        409, f"release request {asked['id']} is already approved")


def test_a_release_can_be_withdrawn_and_level_2_switches_need_one_admin(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "system", True, "drift", "crit")
        r = actions.set_killswitch(world.admin, "system", False, "fixed", "crit")
        assert isinstance(r, ReleaseRequest)
        actions.withdraw_release(world.admin, r.public_id)
    assert KillSwitch.objects.get(system__slug="crit").engaged
    assert ReleaseRequest.objects.get().state == "withdrawn"
    # a level-2 system's switch: one admin releases it at once
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "system", True, "drift", "sup")
        done = actions.set_killswitch(world.admin, "system", False, "fixed", "sup")
    assert isinstance(done, KillSwitch)
    assert not done.engaged


def test_an_open_breaker_shows_in_every_banner_the_systems_list_and_the_status_push(
        world, django_capture_on_commit_callbacks):
    from oversight import events, stopstate

    with django_capture_on_commit_callbacks(execute=True):
        breaker_actions.set_by_hand(world.admin, "sup", "open", "skip rate <doubled>")
    page = world.person(world.operator).get("/review/").content.decode()
    assert "Supervised (sup): circuit breaker open</strong> — <q>skip rate &lt;doubled&gt;</q>" in page
    systems = world.person(world.admin).get("/systems/").content.decode()
    assert "circuit breaker open: skip rate &lt;doubled&gt;" in systems
    pushed = events.status_message(stopstate.current())
    sup = next(s for s in pushed["systems"] if s["slug"] == "sup")
    assert (sup["breaker"], sup["breaker_reason"]) == ("open", "skip rate <doubled>")
    overview = world.person(world.operator).get("/overview/data.json").json()
    assert next(s for s in overview["systems"] if s["slug"] == "sup")["breaker"] == "open"


def test_a_model_whose_own_accuracy_falls_is_left_out_by_its_breaker(world, django_capture_on_commit_callbacks):
    """Two models vote, the content model's answer is the one sent; the labels agree with it: the
    performance job measures each model's own accuracy, the tick opens the collaborative model's
    breaker (not the system's), and the next decision leaves its vote out."""
    from dashboards import performance_job

    client = world.client_for("auto")

    def voting(collab: list[str], content: list[str]) -> dict:
        body = decision_body(0.9)
        body["prediction"] = {"output": {"items": content}, "confidence": 0.9, "model": "content",
                              "votes": [{"model": "collab", "output": {"items": collab}, "confidence": 0.9},
                                        {"model": "content", "output": {"items": content}, "confidence": 0.8}]}
        return body

    for _ in range(40):
        d = client.post(URL.format("auto"), voting(["metal"], ["calm"]), content_type="application/json").json()
        r = client.post(f"/api/v1/decisions/{d['id']}/outcome", {"label": {"items": ["calm"]}},
                        content_type="application/json")
        assert r.status_code == 201
    performance_job.run_system(world.autonomous.id)
    names = set(MetricPoint.objects.filter(system=world.autonomous, name__startswith="model.")
                .values_list("name", flat=True))
    assert names == {"model.collab.accuracy", "model.collab.outcomes", "model.content.accuracy",
                     "model.content.outcomes"}
    with django_capture_on_commit_callbacks(execute=True):
        out = breaker_job.run_all()
    assert [(c["model"], c["to"]) for c in out["changes"]] == [("collab", "open")]
    d = client.post(URL.format("auto"), voting(["metal"], ["calm"]), content_type="application/json").json()
    assert (d["route"], d["output"]) == ("auto", {"items": ["calm"]})
    assert "model collab left out: circuit breaker open (accuracy 0 below 0.85" in " ".join(d["reasons"])
    assert Breaker.objects.get(system=world.autonomous, model="collab").state == "open"
    assert Breaker.objects.filter(system=world.autonomous, model="").count() == 0  # the system's own stays closed


def test_approving_a_release_while_another_admin_engages_again_never_deadlocks(tworld):
    """Both lock the switch first: one waits for the other; the switch ends engaged either way."""
    import functools
    import threading

    from django.db import connection

    second = second_admin()

    def run(fn, barrier, failures):
        try:
            barrier.wait()
            fn()
        except actions.ActionError:
            pass  # "already withdrawn": the engage came first
        except Exception as exc:  # a deadlock would land here
            failures.append(exc)
        finally:
            connection.close()

    for i in range(8):
        actions.set_killswitch(tworld.admin, "global", True, f"incident {i}")
        asked = actions.set_killswitch(tworld.admin, "global", False, "fixed")
        barrier, failures = threading.Barrier(2), []
        approve = functools.partial(actions.approve_release, second, asked.public_id)
        engage = functools.partial(actions.set_killswitch, tworld.admin, "global", True, "again")
        threads = [threading.Thread(target=run, args=(fn, barrier, failures)) for fn in (approve, engage)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert failures == []
        assert KillSwitch.objects.get(scope="global").engaged
        assert not ReleaseRequest.objects.filter(state="pending").exists()
