"""The readiness assessment end to end: recorded through the API and the system's page (roles from
both sides), audited, read by the gate on the very next decision (score 0–1: every decision waits for
a person), and level 3 refused below a score of 4 (API and page)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oversight import actions
from oversight.models import AISystem, AuditEvent, PolicyVersion, Readiness
from tests.asgiclient import ApiClient
from tests.conftest import World, api_session, decision_body
from tests.integration.test_pages import html, messages_of, post

URL = "/api/v1/systems/{}/readiness"
SAFE = {"feedback": "no", "blast_radius": "one_reversible", "drift": "months", "stop": "drilled", "shared": "no"}
SCORE_3 = {**SAFE, "feedback": "partly", "stop": "untested"}
SCORE_1 = {"feedback": "yes", "blast_radius": "one_reversible", "drift": "overnight", "stop": "untested",
           "shared": "some"}
HOLD = "readiness score 1 of 5: every decision waits for a person until the assessment is fixed"


def put(client: ApiClient, slug: str, answers: Any, note: str = "") -> Any:
    return client.put(URL.format(slug), json.dumps({"answers": answers, "note": note}), content_type="application/json")


def patch(client: ApiClient, slug: str, body: dict[str, Any]) -> Any:
    return client.patch(f"/api/v1/systems/{slug}", json.dumps(body), content_type="application/json")


def decide(world: World, slug: str, confidence: float = 0.9) -> dict[str, Any]:
    r = world.client_for(slug).post(f"/api/v1/systems/{slug}/decisions", json.dumps(decision_body(confidence)),
                                    content_type="application/json")
    assert r.status_code == 201, r.content
    return r.json()  # type: ignore[no-any-return]


def page_answers(answers: dict[str, str], note: str = "") -> dict[str, str]:
    return {"op": "readiness", **{f"readiness-{k}": v for k, v in answers.items()}, "readiness-note": note}


# --- the API ----------------------------------------------------------------------------------


def test_a_system_never_assessed_has_no_score(world):
    for client in (world.client_for("sup"), api_session(world.operator), api_session(world.editor)):
        r = client.get(URL.format("sup"))
        assert r.status_code == 200
        body = r.json()
        assert (body["score"], body["current"], body["history"], body["holds_decisions"]) == (None, None, [], False)
        assert [q["key"] for q in body["questions"]] == list(SAFE)
    assert world.client_for("sup").get(URL.format("auto")).status_code == 404  # another system's key


def test_an_admin_assesses_through_the_api_and_it_is_audited(world, django_capture_on_commit_callbacks):
    admin = api_session(world.admin)
    with django_capture_on_commit_callbacks(execute=True):
        r = put(admin, "sup", SCORE_3, "after the <b>Q3</b> review")
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["score"], body["max_score"], body["level_3_allowed"], body["holds_decisions"]) == (3, 5, False, False)
    assert body["missing"] == ["feedback", "stop"]
    assert (body["current"]["assessed_by"], body["current"]["note"]) == ("admin", "after the <b>Q3</b> review")
    row = Readiness.objects.get()
    assert (row.system_id, row.score, row.answers, row.assessed_by_id) == (world.supervised.id, 3, SCORE_3,
                                                                         world.admin.id)
    event = AuditEvent.objects.get(action="readiness.assess")
    assert (event.actor_label, event.system_id, event.target, event.reason) == (
        "admin", world.supervised.id, "sup", "after the <b>Q3</b> review")
    assert event.data == {"answers": SCORE_3, "score": 3, "previous_score": None}

    with django_capture_on_commit_callbacks(execute=True):
        assert put(admin, "sup", SAFE).json()["score"] == 5
    again = world.client_for("sup").get(URL.format("sup")).json()
    assert (again["score"], [h["score"] for h in again["history"]]) == (5, [5, 3])
    assert AuditEvent.objects.filter(action="readiness.assess").first().data["previous_score"] == 3  # type: ignore[union-attr]


@pytest.mark.parametrize("who", ["operator", "editor", "nobody"])
def test_only_admins_assess_through_the_api(world, who):
    r = put(api_session(getattr(world, who)), "sup", SAFE)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    r = put(world.client_for("sup"), "sup", SAFE)
    assert r.status_code == 403
    r = put(ApiClient(), "sup", SAFE)
    assert r.status_code == 401
    assert not Readiness.objects.exists()
    assert not AuditEvent.objects.filter(action="readiness.assess").exists()


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"answers": {**SAFE, "colour": "blue"}}, "answers.colour", "unknown question 'colour'"),
    ({"answers": {**SAFE, "drift": "yearly"}}, "answers.drift", "unknown answer 'yearly'"),
    ({"answers": {**SAFE, "stop": 3}}, "answers.stop", "unknown answer 3"),
    ({"answers": {k: v for k, v in SAFE.items() if k != "shared"}}, "answers.shared", "one of no, some, yes"),
    ({"note": "x"}, "answers", "this field is required"),
    ({"answers": ["no"]}, "answers", "valid dictionary"),
    ({"answers": SAFE, "note": "n" * 2001}, "note", "at most 2000 characters"),
])
def test_bad_input_is_a_422_naming_the_field(world, body, field, words):
    r = api_session(world.admin).put(URL.format("sup"), json.dumps(body), content_type="application/json")
    assert r.status_code == 422, r.content
    error = r.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", field)
    assert words in error["message"]
    assert not Readiness.objects.exists()


def test_an_unknown_system_is_a_404(world):
    assert put(api_session(world.admin), "nope", SAFE).status_code == 404
    assert api_session(world.admin).get(URL.format("nope")).status_code == 404


# --- level 3 needs a score of 4 ----------------------------------------------------------------


def test_level_3_is_refused_below_a_score_of_4_through_the_api(world, django_capture_on_commit_callbacks):
    admin = api_session(world.admin)
    r = patch(admin, "sup", {"level": 3, "reason": "ready?"})
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "invalid", "field": "level", "message": (
        "level 3 (autonomous) needs a readiness score of at least 4 of 5; record its readiness assessment first")}
    with django_capture_on_commit_callbacks(execute=True):
        put(admin, "sup", SCORE_3)
    r = patch(admin, "sup", {"level": 3})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "level")
    message = r.json()["error"]["message"]
    assert "this system scores 3 of 5" in message
    assert "its own training data (partly: some of its decisions come back as training data)" in message
    assert "stopping it within 60 s (there is a kill switch, but it was not tested)" in message
    assert AISystem.objects.get(slug="sup").level == 2
    assert not AuditEvent.objects.filter(action="policy.change").exists()

    with django_capture_on_commit_callbacks(execute=True):
        assert put(admin, "sup", {**SAFE, "drift": "weeks"}).json()["level_3_allowed"] is True
        r = patch(admin, "sup", {"level": 3, "reason": "assessed 4 of 5"})
    assert (r.status_code, r.json()["level"]) == (200, 3)

    # Now level 3: an assessment below 4 is refused until the level is lowered.
    r = put(admin, "sup", SCORE_3)
    assert (r.status_code, r.json()["error"]["field"]) == (422, "answers")
    assert "lower its level first" in r.json()["error"]["message"]
    assert Readiness.objects.filter(system__slug="sup").first().score == 4  # type: ignore[union-attr]
    with django_capture_on_commit_callbacks(execute=True):
        assert patch(admin, "sup", {"level": 2, "reason": "reassessing"}).status_code == 200
        assert put(admin, "sup", SCORE_3).status_code == 200


def test_a_new_system_cannot_start_at_level_3(world):
    r = api_session(world.admin).post("/api/v1/systems", json.dumps({"slug": "eager", "level": 3}),
                                      content_type="application/json")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "level")
    assert "a new system has none yet: create it at level 1 or 2" in r.json()["error"]["message"]
    assert not AISystem.objects.filter(slug="eager").exists()


def test_a_system_already_at_level_3_keeps_working_unassessed(world):
    # "auto" was made level 3 by code (no person): its other fields still change.
    r = patch(api_session(world.admin), "auto", {"audit_sample_rate": 0.2, "reason": "more audits"})
    assert (r.status_code, r.json()["level"]) == (200, 3)
    assert decide(world, "auto")["status"] == "released"


def test_policies_as_code_follow_the_level_3_rule(world):
    with pytest.raises(actions.ActionError, match="record its readiness assessment first"):
        actions.apply_policy(None, {"slug": "sup", "level": 3})
    with pytest.raises(actions.ActionError, match="a new system has none yet"):
        actions.apply_policy(None, {"slug": "fresh", "level": 3})


def test_level_3_is_refused_on_the_policy_page(world):
    c = world.person(world.admin)
    actions.assess_readiness(world.admin, "sup", SCORE_3)
    r = post(c, "/systems/sup/", {"op": "policy", "name": "Supervised", "level": "3", "confidence_threshold": "0.7",
                                  "reason": "go autonomous"})
    assert r.status_code == 422
    assert r.context["form"].errors["level"][0].startswith(
        "Level 3 (autonomous) needs a readiness score of at least 4 of 5; this system scores 3 of 5")
    page = html(r)
    assert '<option value="3" selected>' in page
    assert 'value="0.7"' in page
    assert AISystem.objects.get(slug="sup").level == 2
    assert PolicyVersion.objects.filter(system__slug="sup").count() == 1


# --- the gate ---------------------------------------------------------------------------------


def test_a_score_of_1_holds_the_very_next_decision_and_a_better_one_releases(world, django_capture_on_commit_callbacks):
    assert decide(world, "sup")["status"] == "released"  # the gate's config is cached now
    with django_capture_on_commit_callbacks(execute=True):
        assert put(api_session(world.admin), "sup", SCORE_1).json()["holds_decisions"] is True
    held = decide(world, "sup", 0.99)
    assert (held["status"], held["route"], held["output"]) == ("pending_review", "human", None)
    assert held["reasons"] == [HOLD]
    assert decide(world, "auto")["status"] == "released"  # other systems go on

    with django_capture_on_commit_callbacks(execute=True):
        actions.assess_readiness(world.admin, "sup", {**SCORE_1, "feedback": "no"}, "feedback loop cut")
    back = decide(world, "sup", 0.9)
    assert (back["status"], back["route"]) == ("released", "auto")
    assert back["reasons"] == ["confidence 0.90 ≥ threshold 0.60"]
    assert decide(world, "sup", 0.3)["route"] == "human"  # level 2 as before


# --- the page ---------------------------------------------------------------------------------


def test_an_admin_assesses_on_the_systems_page(world, django_capture_on_commit_callbacks):
    c = world.person(world.admin)
    page = html(c.get("/systems/sup/"))
    assert "Not assessed yet" in page
    assert page.count('type="radio"') == 15
    with django_capture_on_commit_callbacks(execute=True):
        r = post(c, "/systems/sup/", page_answers(SCORE_3, "<i>first</i> pass"))
    assert (r.status_code, r["Location"]) == (302, "/systems/sup/#readiness")
    r = c.get("/systems/sup/")
    assert "readiness assessment saved: score 3 of 5" in messages_of(r)
    page = html(r)
    assert "score 3 of 5" in page
    assert "assessed by admin" in page
    assert "&lt;i&gt;first&lt;/i&gt; pass" in page
    assert "<i>first</i>" not in page
    assert "Not safe yet: its own training data; stopping it within 60 s." in page
    assert 'value="partly" id="id_readiness-feedback_1" required checked' in page  # the answers in force
    assert Readiness.objects.get().assessed_by_id == world.admin.id
    assert AuditEvent.objects.filter(action="readiness.assess", actor=world.admin).count() == 1
    assert "readiness 3/5" in html(c.get("/monitor/sup/"))


def test_a_bad_page_assessment_keeps_the_answers_given(world):
    c = world.person(world.admin)
    data = page_answers({**SAFE, "drift": "yearly"})
    del data["readiness-shared"]
    r = post(c, "/systems/sup/", data)
    assert r.status_code == 422
    form = r.context["readiness_form"]
    assert set(form.errors) == {"drift", "shared"}
    assert form.errors["shared"] == ["Answer “Do its models share data and features with other systems?”"]
    page = html(r)
    assert 'value="drilled" id="id_readiness-stop_0" required checked' in page  # kept
    assert 'href="#id_readiness-drift"' in page
    assert not Readiness.objects.exists()


def test_lowering_a_level_3_systems_score_on_the_page_is_refused(world):
    actions.assess_readiness(world.admin, "sup", SAFE)
    actions.update_system(world.admin, "sup", {"level": 3}, "autonomous now")
    r = post(world.person(world.admin), "/systems/sup/", page_answers(SCORE_3))
    assert r.status_code == 422
    assert "lower its level first" in r.context["readiness_form"].non_field_errors()[0]
    assert Readiness.objects.count() == 1


@pytest.mark.parametrize("who", ["operator", "editor", "nobody"])
def test_only_admins_reach_the_assessment_on_the_page(world, who):
    c = world.person(getattr(world, who))
    assert c.get("/systems/sup/").status_code == 403
    assert post(c, "/systems/sup/", page_answers(SAFE)).status_code == 403
    assert not Readiness.objects.exists()
