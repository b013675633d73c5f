"""Overriding a released decision (API.md, "Review"): ``POST /api/v1/decisions/{id}/override`` and the
decision's page. Within the system's override window a person replaces what the client gets;
past it, or on a decision that is not released, nothing changes and the answer says why (409)."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.utils import timezone

from oversight import actions, overrides
from oversight.errors import ActionError
from oversight.models import AISystem, AuditEvent, Decision, Outcome
from reviewqueue.models import ReviewItem
from tests.asgiclient import ApiClient
from tests.conftest import World, api_session, decision_body

NEW_OUTPUT = {"items": ["calm-1", "calm-2"]}
FALLBACK = {"items": ["safe"]}  # the "sup" system's fallback (tests/conftest.py)
MODEL_OUTPUT = {"items": ["t1", "t9"]}  # what decision_body's model said


# --- helpers --------------------------------------------------------------------------------


def released(world: World, subject: str = "listener-42", slug: str = "sup") -> dict[str, Any]:
    """A level-2 decision the gate released (confidence 0.9 over the 0.6 threshold)."""
    r = world.client_for(slug).post(f"/api/v1/systems/{slug}/decisions",
                                    json.dumps(decision_body(0.9, subject=subject)), content_type="application/json")
    assert r.status_code == 201, r.content
    made = r.json()
    assert (made["status"], made["output"]) == ("released", MODEL_OUTPUT)
    return made


def pending(world: World) -> dict[str, Any]:
    """A level-1 decision waiting for a person."""
    r = world.client_for("crit").post("/api/v1/systems/crit/decisions", json.dumps(decision_body(0.9)),
                                      content_type="application/json")
    assert r.status_code == 201, r.content
    assert r.json()["status"] == "pending_review"
    return r.json()


def override(client: ApiClient, decision_id: str, body: dict[str, Any] | None = None) -> Any:
    payload = {"output": NEW_OUTPUT, "note": "too loud for the hour"} if body is None else body
    return client.post(f"/api/v1/decisions/{decision_id}/override", json.dumps(payload).encode(),
                       content_type="application/json")


def seen_by_client(world: World, decision_id: str, slug: str = "sup") -> dict[str, Any]:
    r = world.client_for(slug).get(f"/api/v1/decisions/{decision_id}")
    assert r.status_code == 200, r.content
    return r.json()


def uid(decision_id: str) -> str:
    return decision_id.removeprefix("dec_")


def error(r: Any) -> dict[str, Any]:
    return r.json()["error"]


def assert_unchanged(world: World, decision: dict[str, Any]) -> None:
    now = seen_by_client(world, decision["id"], decision["system"])
    assert (now["status"], now["output"]) == (decision["status"], decision["output"])
    assert not AuditEvent.objects.filter(action="decision.override", target=decision["id"]).exists()


def close_window(decision_id: str, window_s: int = 60, ago_s: int = 61) -> None:
    """Make the override window short and the decision's release older than it."""
    d = Decision.objects.select_related("system").get(id=uid(decision_id))
    AISystem.objects.filter(id=d.system_id).update(override_window_s=window_s)
    Decision.objects.filter(id=d.id).update(released_at=timezone.now() - timedelta(seconds=ago_s))


def new_operator(name: str) -> Any:
    user = get_user_model().objects.create_user(name, password="x")
    user.groups.add(Group.objects.get(name="operator"))
    return user


def csrf_post(c: Client, path: str, data: dict[str, Any]) -> Any:
    """A form post as the page's form sends it: with the token from the CSRF cookie."""
    if "csrftoken" not in c.cookies:
        c.get("/decisions/")
    return c.post(path, {**data, "csrfmiddlewaretoken": c.cookies["csrftoken"].value})


def page_text(r: Any) -> str:
    return r.content.decode()


def messages_of(r: Any) -> list[str]:
    return [str(m) for m in r.context["messages"]] if r.context else []


# --- the API --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_override_within_the_window_changes_what_the_client_gets(world: World, role: str) -> None:
    made = released(world)
    person = getattr(world, role)
    r = override(api_session(person), made["id"])
    assert r.status_code == 200, r.content
    answer = r.json()
    assert (answer["id"], answer["status"], answer["output"]) == (made["id"], "overridden", NEW_OUTPUT)

    now = seen_by_client(world, made["id"])
    assert now["status"] == "overridden"
    assert now["output"] == NEW_OUTPUT
    assert now["route"] == made["route"]  # how it was decided stays on record
    assert (now["review"]["action"], now["review"]["by"], now["review"]["note"]) == (
        "override", role, "too loud for the hour")
    assert now["reasons"][:len(made["reasons"])] == made["reasons"]
    assert now["reasons"][-1] == f"audit: overridden by {role}: too loud for the hour"
    assert now == answer  # the override's answer is what GET shows from now on

    event = AuditEvent.objects.get(action="decision.override")
    assert (event.actor_id, event.target, event.reason, event.system_id) == (
        person.pk, made["id"], "too loud for the hour", world.supervised.pk)
    assert event.data["fallback"] is False
    # The person's output is a human outcome of the decision (accuracy and bandits learn from it).
    human = Outcome.objects.get(decision_id=uid(made["id"]), source=Outcome.Source.HUMAN)
    assert human.label == NEW_OUTPUT
    # No callback URL on "sup": no webhook is queued.
    assert not Decision.objects.get(id=uid(made["id"])).webhook_deliveries.exists()


def test_output_left_out_gives_the_systems_fallback(world: World) -> None:
    made = released(world)
    r = override(api_session(world.operator), made["id"], {"note": "recommendations look wrong tonight"})
    assert r.status_code == 200, r.content
    now = seen_by_client(world, made["id"])
    assert (now["status"], now["output"]) == ("overridden", FALLBACK)
    assert AuditEvent.objects.get(action="decision.override").data["fallback"] is True


def test_output_null_gives_the_fallback_and_the_audit_log_says_so(world: World) -> None:
    """``"output": null`` cannot be an output (the decision's output is null only while it waits for a
    person): it gives the fallback, as leaving it out does, and the audit log records a fallback."""
    made = released(world)
    r = override(api_session(world.operator), made["id"], {"output": None, "note": "stop it"})
    assert r.status_code == 200, r.content
    assert seen_by_client(world, made["id"])["output"] == FALLBACK
    assert AuditEvent.objects.get(action="decision.override").data["fallback"] is True


def test_override_without_a_note(world: World) -> None:
    made = released(world)
    r = override(api_session(world.operator), made["id"], {"output": ["just", "a", "list"]})
    assert r.status_code == 200, r.content
    now = seen_by_client(world, made["id"])
    assert (now["status"], now["output"]) == ("overridden", ["just", "a", "list"])
    assert now["reasons"][-1] == "audit: overridden by operator"


def test_past_the_window_is_a_conflict(world: World) -> None:
    made = released(world)
    close_window(made["id"], window_s=60, ago_s=61)
    r = override(api_session(world.operator), made["id"])
    assert r.status_code == 409, r.content
    assert error(r)["code"] == "conflict"
    assert "override window (60 s after release) closed" in error(r)["message"]
    assert_unchanged(world, made)


def test_the_window_is_measured_from_release(world: World) -> None:
    """With an injected clock: the last moment of the window is allowed, the next one is not."""
    made = released(world)
    d = Decision.objects.select_related("system").get(id=uid(made["id"]))
    assert d.released_at is not None
    closes = d.released_at + timedelta(seconds=d.system.override_window_s)
    assert overrides.window_closes_at(d) == closes
    with pytest.raises(ActionError) as refused:
        overrides.override(world.operator, d.id, NEW_OUTPUT, output_given=True,
                           now=closes + timedelta(microseconds=1))
    assert refused.value.code == "conflict"
    assert "window" in refused.value.message
    assert_unchanged(world, made)

    done = overrides.override(world.operator, d.id, NEW_OUTPUT, output_given=True, note="just in time", now=closes)
    assert (done.status, done.output) == ("overridden", NEW_OUTPUT)


def test_a_pending_decision_cannot_be_overridden(world: World) -> None:
    made = pending(world)
    r = override(api_session(world.operator), made["id"])
    assert r.status_code == 409
    assert error(r)["message"] == "only a released decision can be overridden; this one is pending review"
    assert_unchanged(world, made)
    assert ReviewItem.objects.get(decision_id=uid(made["id"])).status == ReviewItem.Status.OPEN


def test_a_rejected_decision_cannot_be_overridden(world: World) -> None:
    made = pending(world)
    op = api_session(world.operator)
    item = op.post("/api/v1/review/claim", b"{}", content_type="application/json").json()["id"]
    r = op.post(f"/api/v1/review/{item}/resolve", json.dumps({"action": "reject"}).encode(),
                content_type="application/json")
    assert r.status_code == 200
    rejected = seen_by_client(world, made["id"], "crit")
    assert rejected["status"] == "rejected"
    r = override(op, made["id"])
    assert r.status_code == 409
    assert "this one is rejected" in error(r)["message"]
    assert_unchanged(world, rejected)


def test_an_overridden_decision_cannot_be_overridden_again(world: World) -> None:
    made = released(world)
    assert override(api_session(world.operator), made["id"]).status_code == 200
    r = override(api_session(world.admin), made["id"], {"output": {"items": ["second"]}, "note": "mine instead"})
    assert r.status_code == 409
    assert "this one is overridden" in error(r)["message"]
    now = seen_by_client(world, made["id"])
    assert (now["output"], now["review"]["by"]) == (NEW_OUTPUT, "operator")
    assert AuditEvent.objects.filter(action="decision.override").count() == 1
    assert Outcome.objects.filter(decision_id=uid(made["id"]), source=Outcome.Source.HUMAN).count() == 1


@pytest.mark.parametrize("decision_id", ["dec_" + "0" * 32, "dec_nope", "rev_" + "1" * 32])
def test_unknown_decision_is_404(world: World, decision_id: str) -> None:
    r = override(api_session(world.operator), decision_id)
    assert r.status_code == 404
    assert error(r)["code"] == "not_found"


def test_a_note_over_5000_characters_is_refused(world: World) -> None:
    made = released(world)
    r = override(api_session(world.operator), made["id"], {"output": NEW_OUTPUT, "note": "x" * 5001})
    assert r.status_code == 422, r.content
    assert error(r)["field"] == "note"
    assert "5000" in error(r)["message"]
    assert_unchanged(world, made)
    # 5000 is allowed.
    r = override(api_session(world.operator), made["id"], {"output": NEW_OUTPUT, "note": "x" * 5000})
    assert r.status_code == 200


@pytest.mark.parametrize("who", ["editor", "nobody"])
def test_people_without_a_reviewing_role_are_refused(world: World, who: str) -> None:
    made = released(world)
    r = override(api_session(getattr(world, who)), made["id"])
    assert r.status_code == 403
    assert error(r)["code"] == "forbidden"
    assert_unchanged(world, made)


def test_a_client_key_cannot_override_its_own_decision(world: World) -> None:
    made = released(world)
    r = override(world.client_for("sup"), made["id"])
    assert r.status_code == 403
    assert_unchanged(world, made)


def test_anonymous_is_401(world: World) -> None:
    made = released(world)
    r = override(ApiClient(), made["id"])
    assert r.status_code == 401
    assert_unchanged(world, made)


def test_an_open_audit_item_is_closed_by_the_override(world: World, django_capture_on_commit_callbacks: Any) -> None:
    """A decision sampled for after-the-fact audit: overriding it answers its audit item (claimed by
    another operator, even), so nobody confirms an output that is no longer given."""
    with django_capture_on_commit_callbacks(execute=True):
        actions.update_system(None, "sup", {"audit_sample_rate": 1.0}, "audit everything")
    made = released(world)
    other = new_operator("operator2")
    op2 = api_session(other)
    claimed = op2.post("/api/v1/review/claim", b"{}", content_type="application/json").json()
    assert (claimed["kind"], claimed["decision"]["id"]) == ("audit", made["id"])

    assert override(api_session(world.operator), made["id"]).status_code == 200
    item = ReviewItem.objects.get(decision_id=uid(made["id"]))
    assert item.status == ReviewItem.Status.RESOLVED
    assert (item.action, item.resolved_by_id, item.output, item.agrees) == (
        ReviewItem.Action.MODIFY, world.operator.pk, NEW_OUTPUT, False)
    # The operator who held it cannot confirm the old output any more.
    r = op2.post(f"/api/v1/review/{claimed['id']}/resolve", json.dumps({"action": "approve"}).encode(),
                 content_type="application/json")
    assert r.status_code == 409
    assert "already resolved" in error(r)["message"]
    assert seen_by_client(world, made["id"])["output"] == NEW_OUTPUT
    # Nothing else waits in the queue.
    assert op2.post("/api/v1/review/claim", b"{}", content_type="application/json").status_code == 204


def test_two_people_overriding_at_once_one_wins(tworld: World) -> None:
    """Each person in a thread with its own database connection: the decision's row lock lets one
    through; the other is told it is overridden already (409), and nothing is recorded twice."""
    made = released(tworld)
    people = [tworld.operator, tworld.admin]
    clients = [api_session(p) for p in people]
    start = threading.Barrier(len(clients))
    answers: list[Any] = [None] * len(clients)
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait(timeout=10)
            answers[n] = override(clients[n], made["id"], {"output": {"by": people[n].username}, "note": f"n{n}"})
        except BaseException as exc:  # noqa: BLE001 — reported by the main thread
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not failures, failures
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409], [a.content for a in answers]
    winner = next(n for n, a in enumerate(answers) if a.status_code == 200)
    loser = answers[1 - winner]
    assert "this one is overridden" in error(loser)["message"]
    now = seen_by_client(tworld, made["id"])
    assert (now["status"], now["output"]) == ("overridden", {"by": people[winner].username})
    assert now["review"]["by"] == people[winner].username
    assert AuditEvent.objects.filter(action="decision.override").count() == 1
    assert Outcome.objects.filter(decision_id=uid(made["id"]), source=Outcome.Source.HUMAN).count() == 1


# --- the decision's page --------------------------------------------------------------------


def test_page_override_redirects_and_shows_the_message(world: World) -> None:
    made = released(world)
    c = world.person(world.operator)
    page = c.get(f"/decisions/{made['id']}/")
    assert page.status_code == 200
    text = page_text(page)
    assert 'id="override-form"' in text
    assert 'id="override-refused"' not in text
    assert re.search(r'id="decision-status"[^>]*>released<', text)

    r = csrf_post(c, f"/decisions/{made['id']}/override/",
                  {"output": json.dumps(NEW_OUTPUT), "note": "too loud for the hour"})
    assert r.status_code == 302  # post/redirect/get: a reload does not post twice
    assert r["Location"] == f"/decisions/{made['id']}/"
    after = c.get(r["Location"])
    said = messages_of(after)
    assert len(said) == 1
    assert said[0].startswith(f"{made['id']}: overridden at ")
    text = page_text(after)
    assert re.search(r'id="decision-status"[^>]*>overridden<', text)
    assert "calm-1" in text
    assert 'id="override-refused"' in text  # done once: the form is gone
    assert 'id="override-form"' not in text

    now = seen_by_client(world, made["id"])
    assert (now["status"], now["output"], now["review"]["note"]) == ("overridden", NEW_OUTPUT, "too loud for the hour")
    event = AuditEvent.objects.get(action="decision.override")
    assert (event.actor_id, event.target, event.reason) == (world.operator.pk, made["id"], "too loud for the hour")


def test_page_fallback_box(world: World) -> None:
    made = released(world)
    c = world.person(world.admin)
    r = csrf_post(c, f"/decisions/{made['id']}/override/", {"output": "", "fallback": "on", "note": "hold"})
    assert r.status_code == 302
    assert seen_by_client(world, made["id"])["output"] == FALLBACK


def test_page_invalid_json_keeps_what_was_typed_and_names_the_field(world: World) -> None:
    made = released(world)
    c = world.person(world.operator)
    typed = '{"items": ["calm-1",]}'
    r = csrf_post(c, f"/decisions/{made['id']}/override/", {"output": typed, "note": "keep this note, please"})
    assert r.status_code == 422
    form = r.context["form"]
    assert list(form.errors) == ["output"]
    assert "not valid JSON" in form.errors["output"][0]
    text = page_text(r)
    assert "Nothing was changed." in text
    assert '<a href="#output">' in text  # the error links to the box it is about
    assert "keep this note, please</textarea>" in text
    assert "{&quot;items&quot;: [&quot;calm-1&quot;,]}</textarea>" in text
    assert_unchanged(world, made)


def test_page_empty_output_without_the_fallback_box_is_refused(world: World) -> None:
    made = released(world)
    c = world.person(world.operator)
    r = csrf_post(c, f"/decisions/{made['id']}/override/", {"output": " ", "note": "n"})
    assert r.status_code == 422
    assert "tick the fallback box" in r.context["form"].errors["output"][0]
    assert_unchanged(world, made)


def test_page_note_over_5000_characters(world: World) -> None:
    made = released(world)
    c = world.person(world.operator)
    r = csrf_post(c, f"/decisions/{made['id']}/override/", {"output": "[1]", "note": "y" * 5001})
    assert r.status_code == 422
    assert list(r.context["form"].errors) == ["note"]
    assert 'maxlength="5000"' in page_text(r)
    assert_unchanged(world, made)


def test_page_past_the_window_says_so_and_refuses(world: World) -> None:
    made = released(world)
    close_window(made["id"])
    c = world.person(world.operator)
    text = page_text(c.get(f"/decisions/{made['id']}/"))
    assert 'id="override-refused"' in text
    assert "override window (60 s after release) closed" in text
    assert 'id="override-form"' not in text
    r = csrf_post(c, f"/decisions/{made['id']}/override/", {"output": "[1]", "note": "late"})
    assert r.status_code == 409
    assert "override window" in page_text(r)
    assert_unchanged(world, made)


def test_page_pending_decision_has_no_form(world: World) -> None:
    made = pending(world)
    c = world.person(world.operator)
    text = page_text(c.get(f"/decisions/{made['id']}/"))
    assert "Cannot be overridden: only a released decision can be overridden; this one is pending review." in text
    assert csrf_post(c, f"/decisions/{made['id']}/override/", {"fallback": "on"}).status_code == 409
    assert_unchanged(world, made)


def test_page_unknown_decision_is_404(world: World) -> None:
    c = world.person(world.operator)
    assert c.get("/decisions/dec_" + "0" * 32 + "/").status_code == 404
    assert csrf_post(c, "/decisions/dec_" + "0" * 32 + "/override/", {"fallback": "on"}).status_code == 404


def test_page_search_opens_a_decision_by_id(world: World) -> None:
    made = released(world, subject="listener-7")
    c = world.person(world.operator)
    r = c.get("/decisions/", {"q": made["id"]})
    assert (r.status_code, r["Location"]) == (302, f"/decisions/{made['id']}/")
    listed = page_text(c.get("/decisions/", {"q": "listener-7"}))
    assert made["id"] in listed


@pytest.mark.parametrize("who", ["editor", "nobody"])
def test_page_refuses_people_without_a_reviewing_role(world: World, who: str) -> None:
    made = released(world)
    c = world.person(getattr(world, who))
    for r in (c.get("/decisions/"), c.get(f"/decisions/{made['id']}/"),
              csrf_post(c, f"/decisions/{made['id']}/override/", {"output": "[1]"})):
        assert r.status_code == 403
        assert "This page needs the <strong>operator or admin</strong> role" in page_text(r)
    assert_unchanged(world, made)


def test_page_anonymous_is_sent_to_log_in(world: World) -> None:
    made = released(world)
    c = Client()
    for r in (c.get(f"/decisions/{made['id']}/"), c.post(f"/decisions/{made['id']}/override/", {"output": "[1]"})):
        assert r.status_code == 302
        assert r["Location"].startswith("/login/?next=")
    assert_unchanged(world, made)
