"""Every page, from both sides: who reaches it, who is turned away, what a form changes.

People are Django test clients that enforce CSRF like a browser would, so every form post
carries the token from the ``csrftoken`` cookie, as the pages' forms do.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from oversight import actions, credentials
from oversight.models import AISystem, ApiKey, AuditEvent, KillSwitch, PersonalToken, PolicyVersion, ReleaseRequest
from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body, second_admin

XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"

PROTECTED = [
    "/", "/review/", "/systems/", "/systems/crit/", "/tokens/", "/audit/", "/overview/data.json",
    "/monitor/crit/", "/monitor/crit/data.json",
    "/api/v1/docs",
]


def html(response: Any) -> str:
    return response.content.decode()


def csrf_token(c: Client) -> str:
    """The CSRF token a page's form would carry (any page that renders the layout sets the cookie)."""
    if "csrftoken" not in c.cookies:
        c.get("/")
    if "csrftoken" not in c.cookies:
        c.get("/login/")
    return c.cookies["csrftoken"].value


def post(c: Client, path: str, data: dict[str, Any] | None = None, **extra: Any) -> Any:
    return c.post(path, {**(data or {}), "csrfmiddlewaretoken": csrf_token(c)}, **extra)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def submit_level_1(world: World, subject: str = "applicant-1") -> dict[str, Any]:
    r = world.client_for("crit").post(
        "/api/v1/systems/crit/decisions", json.dumps(decision_body(0.7, subject=subject)),
        content_type="application/json",
    )
    assert r.status_code == 201, r.content
    assert r.json()["status"] == "pending_review"
    return r.json()


def item_id(decision: dict[str, Any]) -> str:
    return ReviewItem.objects.get(decision_id=decision["id"].removeprefix("dec_")).public_id


def assert_forbidden_page(response: Any, role: str) -> None:
    assert response.status_code == 403
    assert f"This page needs the <strong>{role}</strong> role" in html(response)



# --- anonymous ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", PROTECTED)
def test_anonymous_is_sent_to_the_login_page(world: World, path: str) -> None:
    r = Client().get(path)
    assert r.status_code == 302
    assert r["Location"] == f"/login/?next={path}"


def test_anonymous_review_item_and_kill_switch_post_go_to_login(world: World) -> None:
    decision = submit_level_1(world)
    r = Client().get(f"/review/{item_id(decision)}/")
    assert r.status_code == 302
    assert r["Location"].startswith("/login/")
    r = Client().post("/killswitch/", {"scope": "global", "engaged": "true", "reason": "x"})
    assert r.status_code == 302
    assert r["Location"].startswith("/login/")
    assert not KillSwitch.objects.filter(engaged=True).exists()


def test_login_page_health_and_readiness_are_public(world: World) -> None:
    c = Client()
    r = c.get("/login/")
    assert r.status_code == 200
    assert 'name="username"' in html(r)
    assert 'name="password"' in html(r)
    assert 'name="csrfmiddlewaretoken"' in html(r)
    r = c.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    r = c.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"postgresql": "ok", "redis": "ok"}


def test_logging_in_through_the_form(world: World) -> None:
    c = Client(enforce_csrf_checks=True)
    r = post(c, "/login/", {"username": "operator", "password": "wrong password"})
    assert r.status_code == 200
    assert "didn&#x27;t match" in html(r) or "didn't match" in html(r)
    assert "_auth_user_id" not in c.session
    r = post(c, "/login/", {"username": "operator", "password": world.password, "next": "/review/"})
    assert r.status_code == 302
    assert r["Location"] == "/review/"
    assert c.get("/review/").status_code == 200
    # Logging out ends the session: the pages send you back to the login form.
    r = post(c, "/logout/")
    assert r.status_code == 302
    assert r["Location"] == "/login/"
    assert c.get("/review/").status_code == 302


def test_login_never_redirects_off_site(world: World) -> None:
    c = Client(enforce_csrf_checks=True)
    r = post(c, "/login/", {"username": "admin", "password": world.password, "next": "https://evil.example/"})
    assert r.status_code == 302
    assert r["Location"] == "/"


# --- operator -----------------------------------------------------------------------------


def test_operator_reaches_the_review_pages(world: World) -> None:
    decision = submit_level_1(world, "applicant-42")
    c = world.person(world.operator)
    r = c.get("/review/")
    assert r.status_code == 200
    assert "applicant-42" in html(r)
    assert f'data-item="{item_id(decision)}"' in html(r)
    r = c.get(f"/review/{item_id(decision)}/")
    assert r.status_code == 200
    assert decision["id"] in html(r)
    assert c.get("/review/rev_00000000000000000000000000000000/").status_code == 404
    assert c.get("/review/not-an-id/").status_code == 404
    assert c.get("/").status_code == 200
    assert c.get("/overview/data.json").status_code == 200
    assert c.get("/tokens/").status_code == 200


def test_operator_claims_and_resolves_through_the_pages(world: World) -> None:
    decision = submit_level_1(world)
    item = item_id(decision)
    c = world.person(world.operator)
    r = post(c, f"/review/{item}/act/", {"op": "claim"})
    assert r.status_code == 302
    r = c.get(f"/review/{item}/")
    assert 'id="resolve-form"' in html(r)
    r = post(c, f"/review/{item}/act/", {"op": "approve", "note": "looks right"}, follow=True)
    assert r.status_code == 200
    assert f"{decision['id']}: approved" in messages_of(r)
    got = world.client_for("crit").get(f"/api/v1/decisions/{decision['id']}").json()
    assert got["status"] == "released"
    assert got["output"] == {"items": ["t1", "t9"]}
    assert got["review"]["note"] == "looks right"
    # Resolving twice is refused on the item's page, saying why, not with an error page.
    r = post(c, f"/review/{item}/act/", {"op": "reject", "note": "second thoughts"})
    assert r.status_code == 409
    assert r.context["form"].non_field_errors() == ["Already resolved (approve) by operator."]
    assert "Resolved: <strong>approve</strong>" in html(r)
    assert 'role="alert"' in html(r)
    assert world.client_for("crit").get(f"/api/v1/decisions/{decision['id']}").json()["status"] == "released"


def test_modify_with_bad_json_keeps_the_note_and_the_typed_output(world: World) -> None:
    decision = submit_level_1(world)
    item = item_id(decision)
    c = world.person(world.operator)
    post(c, f"/review/{item}/act/", {"op": "claim"})
    note = "limit too high for this income <b>really</b>"
    typed = '{"decision": "approve", "limit": 5000'
    r = post(c, f"/review/{item}/act/", {"op": "modify", "note": note, "output": typed, "then": "next"})
    assert r.status_code == 422
    form = r.context["form"]
    assert list(form.errors) == ["output"]
    (error,) = form.errors["output"]
    assert error.startswith("Output to release is not valid JSON: expecting ',' delimiter at line 1, column")
    page = html(r)
    # Both texts are back in their boxes, as typed (escaped), the error right under the output box.
    assert '<textarea name="note" cols="40" rows="2"' in page
    assert 'id="note">\nlimit too high for this income &lt;b&gt;really&lt;/b&gt;</textarea>' in page
    assert 'id="output">\n{&quot;decision&quot;: &quot;approve&quot;, &quot;limit&quot;: 5000</textarea>' in page
    output_box = page[page.index('id="output"'):]
    assert output_box.index('id="output_error"') < output_box.index("</details>")
    assert 'aria-describedby="output_error"' in page
    assert "<details id=\"modify\" open>" in page  # the modify box is open, so the error is seen
    assert 'name="then" value="next"' in page
    assert ReviewItem.objects.get(decision_id=decision["id"].removeprefix("dec_")).status == ReviewItem.Status.CLAIMED
    # Approving ignores what the output box holds: the note goes through.
    r = post(c, f"/review/{item}/act/", {"op": "approve", "note": note, "output": typed}, follow=True)
    assert f"{decision['id']}: approved" in messages_of(r)
    assert world.client_for("crit").get(f"/api/v1/decisions/{decision['id']}").json()["review"]["note"] == note


@pytest.mark.parametrize(("output", "text"), [
    ("", "Modify needs the output to release instead."),
    ("NaN", "Output to release is not valid JSON: NaN is not a valid JSON number; send a finite number or null"),
    ('"\\u0000"', "Output to release contains a NUL character"),
])
def test_modify_refusals_name_the_output_field(world: World, output: str, text: str) -> None:
    decision = submit_level_1(world)
    item = item_id(decision)
    c = world.person(world.operator)
    post(c, f"/review/{item}/act/", {"op": "claim"})
    r = post(c, f"/review/{item}/act/", {"op": "modify", "note": "kept", "output": output})
    assert r.status_code == 422
    assert r.context["form"].errors["output"][0].startswith(text), r.context["form"].errors
    assert r.context["form"]["note"].value() == "kept"


def test_a_modified_null_output_is_released(world: World) -> None:
    decision = submit_level_1(world)
    item = item_id(decision)
    c = world.person(world.operator)
    post(c, f"/review/{item}/act/", {"op": "claim"})
    r = post(c, f"/review/{item}/act/", {"op": "modify", "output": " null ", "note": "withhold"}, follow=True)
    assert f"{decision['id']}: modified and released" in messages_of(r)
    got = world.client_for("crit").get(f"/api/v1/decisions/{decision['id']}").json()
    assert (got["status"], got["output"]) == ("released", None)


def test_an_unknown_review_action_is_refused_in_words(world: World) -> None:
    decision = submit_level_1(world)
    item = item_id(decision)
    c = world.person(world.operator)
    post(c, f"/review/{item}/act/", {"op": "claim"})
    r = post(c, f"/review/{item}/act/", {"op": "delete", "note": "n"})
    assert r.status_code == 422
    assert r.context["form"].errors["op"] == ["Unknown action 'delete': approve, reject or modify."]
    assert "Unknown action &#x27;delete&#x27;" in html(r)


@pytest.mark.parametrize("path", ["/systems/", "/systems/crit/", "/audit/"])
def test_operator_is_not_allowed_on_admin_pages(world: World, path: str) -> None:
    assert_forbidden_page(world.person(world.operator).get(path), "admin")


@pytest.mark.parametrize("who", ["operator", "editor"])
def test_only_admins_flip_kill_switches(world: World, who: str) -> None:
    c = world.person(getattr(world, who))
    for data in (
        {"scope": "global", "engaged": "true", "reason": "let me"},
        {"scope": "system", "system": "crit", "engaged": "true", "reason": "let me"},
    ):
        assert_forbidden_page(post(c, "/killswitch/", data), "admin")
    assert not KillSwitch.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="killswitch.").exists()
    r = post(c, "/systems/", {"slug": "sneaky", "level": "3"})
    assert r.status_code == 403
    assert not AISystem.objects.filter(slug="sneaky").exists()
    r = post(c, "/systems/crit/", {"op": "create_key", "name": "mine"})
    assert r.status_code == 403
    assert ApiKey.objects.filter(system__slug="crit").count() == 1


def test_editor_cannot_review(world: World) -> None:
    decision = submit_level_1(world)
    c = world.person(world.editor)
    who = "operator or admin"
    assert_forbidden_page(c.get("/review/"), who)
    assert_forbidden_page(c.get(f"/review/{item_id(decision)}/"), who)
    assert_forbidden_page(post(c, "/review/next/"), who)
    assert_forbidden_page(post(c, f"/review/{item_id(decision)}/act/", {"op": "claim"}), who)
    assert_forbidden_page(c.get("/decisions/"), who)
    assert_forbidden_page(c.get(f"/decisions/{decision['id']}/"), who)
    assert_forbidden_page(post(c, f"/decisions/{decision['id']}/override/", {"fallback": "on"}), who)
    assert_forbidden_page(c.get("/review/quality/"), who)
    assert ReviewItem.objects.get().status == ReviewItem.Status.OPEN
    assert c.get("/").status_code == 200


def test_navigation_shows_only_what_the_role_may_open(world: World) -> None:
    operator = html(world.person(world.operator).get("/"))
    assert 'href="/review/"' in operator
    assert 'href="/systems/"' not in operator
    assert 'id="kill-dialog"' not in operator
    admin = html(world.person(world.admin).get("/"))
    assert 'href="/systems/"' in admin
    assert 'href="/audit/"' in admin
    assert 'id="kill-dialog"' in admin


def test_a_user_without_a_role_sees_nothing(world: World) -> None:
    c = world.person(world.nobody)
    for path in ("/", "/overview/data.json", "/tokens/"):
        r = c.get(path)
        assert r.status_code == 403, path
        assert "operator or editor or admin" in html(r)
    assert c.get("/review/").status_code == 403
    assert c.get("/systems/").status_code == 403


# --- admin --------------------------------------------------------------------------------


def test_admin_creates_a_system(world: World) -> None:
    c = world.person(world.admin)
    assert c.get("/systems/").status_code == 200
    r = post(c, "/systems/", {
        "slug": "fraud-score", "name": "Fraud scorer", "level": "1", "confidence_threshold": "0.7",
        "audit_sample_rate": "0", "override_window_s": "600", "review_sla_s": "300",
        "fallback": '{"decision": "deny"}', "reason": "new model in production",
    })
    assert r.status_code == 302
    assert r["Location"] == "/systems/fraud-score/"
    system = AISystem.objects.get(slug="fraud-score")
    assert (system.name, system.level, system.confidence_threshold) == ("Fraud scorer", 1, 0.7)
    assert system.fallback == {"decision": "deny"}
    assert system.policy_version == 1
    assert list(PolicyVersion.objects.filter(system=system).values_list("version", flat=True)) == [1]
    event = AuditEvent.objects.get(action="system.create", system=system)
    assert event.actor_id == world.admin.pk
    assert event.reason == "new model in production"
    r = c.get("/systems/fraud-score/")
    assert r.status_code == 200
    assert "policy v1" in html(r)
    assert "Fraud scorer" in html(c.get("/systems/"))


@pytest.mark.parametrize(("data", "field", "text"), [
    ({"slug": "crit"}, "slug", "A system with slug 'crit' already exists."),
    ({"slug": "Bad Slug!"}, "slug",
     "Slug must use lowercase letters, digits, - and _, starting with a letter or digit."),
    ({"slug": ""}, "slug", "Slug is required."),
    ({"slug": "x1", "fallback": "{not json"}, "fallback",
     "Fallback output is not valid JSON: expecting property name enclosed in double quotes at line 1, column 2."),
    ({"slug": "x1", "fallback": "null"}, "fallback", "Fallback output cannot be null"),
    ({"slug": "x1", "fallback": "[1, NaN]"}, "fallback",
     "Fallback output is not valid JSON: NaN is not a valid JSON number; send a finite number or null"),
    ({"slug": "x1", "fallback": '{"a": "\\u0000"}'}, "fallback", "Fallback output contains a NUL character"),
    ({"slug": "x1", "fallback": "[" * 70 + "]" * 70}, "fallback", "Fallback output is nested too deeply"),
    ({"slug": "x2", "confidence_threshold": "lots"}, "confidence_threshold", "Confidence threshold must be a number."),
    ({"slug": "x3", "confidence_threshold": "1.5"}, "confidence_threshold",
     "Confidence threshold must be between 0 and 1."),
    ({"slug": "x3", "audit_sample_rate": "-0.5"}, "audit_sample_rate", "Audit share must be between 0 and 1."),
    ({"slug": "x3", "audit_sample_rate": "nan"}, "audit_sample_rate", "Audit share must be a number."),
    ({"slug": "x4", "review_sla_s": "0"}, "review_sla_s", "Review SLA must be between 1 and 2592000 seconds."),
    ({"slug": "x4", "override_window_s": "1.5"}, "override_window_s",
     "Override window must be a whole number of seconds."),
    ({"slug": "x5", "level": "4"}, "level", "Level must be 1, 2 or 3."),
    ({"slug": "x6", "name": "n" * 201}, "name", "Name must be at most 200 characters long (it has 201)."),
    ({"slug": "x6", "reason": "r" * 2001}, "reason", "Reason must be at most 2000 characters long (it has 2001)."),
])
def test_invalid_system_forms_say_what_is_wrong(world: World, data: dict[str, str], field: str, text: str) -> None:
    c = world.person(world.admin)
    before = AISystem.objects.count()
    r = post(c, "/systems/", {"level": "2", **data})
    assert r.status_code == 422
    form = r.context["form"]
    assert list(form.errors) == [field]
    (error,) = form.errors[field]
    assert error.startswith(text), error
    page = html(r)
    assert 'role="alert"' in page
    # The sentence sits right under its field, which points to it.
    assert f'id="id_{field}_error"' in page
    assert f'aria-describedby="id_{field}_error"' in page
    assert AISystem.objects.count() == before


def test_a_system_form_with_one_bad_field_keeps_everything_typed(world: World) -> None:
    c = world.person(world.admin)
    typed = {
        "slug": "fraud-score", "name": "Fraud <scorer>", "level": "1", "confidence_threshold": "1.7",
        "audit_sample_rate": "0.25", "override_window_s": "600", "review_sla_s": "300",
        "fallback": '{"decision":  "deny"}', "reason": "new model in production",
    }
    r = post(c, "/systems/", typed)
    assert r.status_code == 422
    form = r.context["form"]
    assert form.errors == {"confidence_threshold": ["Confidence threshold must be between 0 and 1."]}
    for name, value in typed.items():
        assert str(form[name].value()) == value, name
    page = html(r)
    assert 'value="fraud-score"' in page
    assert 'value="Fraud &lt;scorer&gt;"' in page
    assert '<option value="1" selected>' in page
    assert 'value="1.7"' in page
    assert 'value="0.25"' in page
    assert 'value="600"' in page
    assert 'value="300"' in page
    assert 'value="{&quot;decision&quot;:  &quot;deny&quot;}"' in page  # exactly as typed
    assert 'value="new model in production"' in page
    assert not AISystem.objects.filter(slug="fraud-score").exists()
    # Fixing the one field creates it with everything else as typed.
    r = post(c, "/systems/", {**typed, "confidence_threshold": "0.7"})
    assert r.status_code == 302
    system = AISystem.objects.get(slug="fraud-score")
    assert (system.name, system.level, system.confidence_threshold, system.audit_sample_rate) == (
        "Fraud <scorer>", 1, 0.7, 0.25)
    assert (system.override_window_s, system.review_sla_s, system.fallback) == (600, 300, {"decision": "deny"})


def test_a_new_system_form_starts_from_the_api_defaults(world: World) -> None:
    form = world.person(world.admin).get("/systems/").context["form"]
    assert not form.is_bound
    assert {name: form[name].value() for name in (
        "level", "confidence_threshold", "audit_sample_rate", "override_window_s", "review_sla_s",
    )} == {"level": 2, "confidence_threshold": 0.8, "audit_sample_rate": 0.0, "override_window_s": 3600,
           "review_sla_s": 900}
    page = html(world.person(world.admin).get("/systems/"))
    assert 'name="fallback" value="{}"' in page


def test_every_form_input_has_a_label(world: World) -> None:
    decision = submit_level_1(world)
    item = item_id(decision)
    operator = world.person(world.operator)
    post(operator, f"/review/{item}/act/", {"op": "claim"})
    admin = world.person(world.admin)
    pages = [(admin, "/systems/"), (admin, "/systems/crit/"), (admin, "/tokens/"), (admin, "/audit/"),
             (operator, f"/review/{item}/"), (operator, "/review/")]
    for c, path in pages:
        page = html(c.get(path))
        inputs = re.findall(r"<(?:input|select|textarea)\b[^>]*>", page)
        for tag in inputs:
            if 'type="hidden"' in tag:
                continue
            found = re.search(r'\bid="([^"]+)"', tag)
            assert found, (path, tag)
            assert f'<label for="{found.group(1)}"' in page or f'for="{found.group(1)}"' in page, (path, tag)


def test_the_slug_pattern_in_the_page_matches_the_api_rule(world: World) -> None:
    """The browser checks the slug with the input's pattern; the server with SystemIn's. They agree."""
    from pydantic import ValidationError

    from oversight.forms import SLUG_HTML_PATTERN
    from oversight.schemas import SystemIn

    page = html(world.person(world.admin).get("/systems/"))
    assert f'pattern="{SLUG_HTML_PATTERN}"' in page
    assert "\\-]" in SLUG_HTML_PATTERN  # the class's "-" escaped: valid with the v flag Chromium uses
    for slug in ("nightly-recs", "a", "0_x", "a-b_c-9", "-lead", "_lead", "Upper", "sp ace", "dot.ted", "é", "a/b"):
        try:
            SystemIn(slug=slug)
            api_ok = True
        except ValidationError:
            api_ok = False
        assert (re.fullmatch(SLUG_HTML_PATTERN, slug) is not None) == api_ok, slug


def test_admin_changes_a_policy(world: World) -> None:
    c = world.person(world.admin)
    form = {
        "op": "policy", "name": "Supervised", "level": "1", "confidence_threshold": "0.75",
        "audit_sample_rate": "0", "override_window_s": "3600", "review_sla_s": "900",
        "fallback": '{"items": ["safe"]}', "reason": "too many bad releases",
    }
    r = post(c, "/systems/sup/", form, follow=True)
    assert r.status_code == 200
    assert "policy saved as version 2" in messages_of(r)
    system = AISystem.objects.get(slug="sup")
    assert (system.level, system.confidence_threshold, system.policy_version) == (1, 0.75, 2)
    assert sorted(PolicyVersion.objects.filter(system=system).values_list("version", flat=True)) == [1, 2]
    event = AuditEvent.objects.get(action="policy.change", system=system)
    assert event.reason == "too many bad releases"
    assert event.data["version"] == 2
    assert event.data["changes"]["level"] == {"from": 2, "to": 1}
    assert "policy v2" in html(r)
    # Saving the same policy again makes no new version.
    r = post(c, "/systems/sup/", form, follow=True)
    assert "nothing changed" in messages_of(r)
    assert AISystem.objects.get(slug="sup").policy_version == 2
    # A broken fallback is refused and changes nothing.
    r = post(c, "/systems/sup/", {**form, "level": "3", "fallback": "[unclosed"})
    assert r.status_code == 422
    assert r.context["form"].errors["fallback"][0].startswith("Fallback output is not valid JSON:")
    assert AISystem.objects.get(slug="sup").level == 1
    assert c.get("/systems/no-such-system/").status_code == 404


def test_a_policy_edit_with_one_bad_field_keeps_the_other_typed_values(world: World) -> None:
    c = world.person(world.admin)
    typed = {
        "op": "policy", "name": "Supervised v2", "level": "3", "confidence_threshold": "1.5",
        "audit_sample_rate": "0.1", "override_window_s": "120", "review_sla_s": "60",
        "fallback": '{"items": ["calm-1"]}', "reason": "tighten after incident 7",
    }
    r = post(c, "/systems/sup/", typed)
    assert r.status_code == 422
    form = r.context["form"]
    assert form.errors == {"confidence_threshold": ["Confidence threshold must be between 0 and 1."]}
    for name, value in typed.items():
        if name != "op":
            assert str(form[name].value()) == value, name
    page = html(r)
    assert '<option value="3" selected>' in page
    assert 'value="Supervised v2"' in page
    assert 'value="0.1"' in page
    assert 'value="120"' in page
    assert 'value="60"' in page
    assert 'value="1.5"' in page
    assert 'value="{&quot;items&quot;: [&quot;calm-1&quot;]}"' in page
    assert 'value="tighten after incident 7"' in page
    error = '<ul class="errorlist" id="id_confidence_threshold_error"><li>Confidence threshold must be between 0 and 1.'
    assert error in page
    assert "confidence_threshold:" not in page  # sentences, not field names
    system = AISystem.objects.get(slug="sup")
    assert (system.policy_version, system.level, system.confidence_threshold) == (1, 2, 0.6)
    assert not AuditEvent.objects.filter(action="policy.change").exists()


@pytest.mark.parametrize(("data", "field", "text"), [
    ({"fallback": "null"}, "fallback", "Fallback output cannot be null"),
    ({"review_sla_s": "-5"}, "review_sla_s", "Review SLA must be between 1 and 2592000 seconds."),
    ({"reason": "r" * 2001}, "reason", "Reason for the change must be at most 2000 characters long"),
    ({"level": "0"}, "level", "Level must be 1, 2 or 3."),
])
def test_invalid_policy_edits_name_the_field(world: World, data: dict[str, str], field: str, text: str) -> None:
    r = post(world.person(world.admin), "/systems/sup/", {"op": "policy", "level": "2", **data})
    assert r.status_code == 422
    assert list(r.context["form"].errors) == [field]
    assert r.context["form"].errors[field][0].startswith(text)
    assert AISystem.objects.get(slug="sup").policy_version == 1


def test_a_blank_policy_field_keeps_its_value(world: World) -> None:
    c = world.person(world.admin)
    r = post(c, "/systems/sup/", {"op": "policy", "name": "", "level": "2", "confidence_threshold": "0.65",
                                  "fallback": "", "reason": "only the threshold"}, follow=True)
    assert "policy saved as version 2" in messages_of(r)
    system = AISystem.objects.get(slug="sup")
    assert (system.name, system.confidence_threshold, system.fallback) == ("Supervised", 0.65, {"items": ["safe"]})
    event = AuditEvent.objects.get(action="policy.change", system=system)
    assert set(event.data["changes"]) == {"confidence_threshold"}


def test_admin_creates_an_api_key_shown_once_then_revokes_it(tworld: World) -> None:
    """Committed (``tworld``): the gate learns of a revoked key when the change commits."""
    world = tworld
    c = world.person(world.admin)
    r = post(c, "/systems/auto/", {"op": "create_key", "key-name": "prod-recommender"})
    assert r.status_code == 302  # Post/Redirect/Get: a reload cannot post again
    assert r["Location"] == "/systems/auto/"
    r = c.get(r["Location"])
    assert r.status_code == 200
    assert "no-store" in r["Cache-Control"]
    match = re.search(r'<code id="new-key">([^<]+)</code>', html(r))
    assert match is not None
    secret = match.group(1)
    assert secret.startswith(credentials.API_KEY_PREFIX)
    key = ApiKey.objects.get(system__slug="auto", name="prod-recommender")
    assert key.digest == credentials.digest(secret)
    assert secret.startswith(key.prefix)
    assert secret not in {key.digest, key.prefix, key.name}
    assert f"key {key.prefix}… created" in messages_of(r)
    assert AuditEvent.objects.filter(action="apikey.create", target=key.prefix).count() == 1
    # Shown once: a reload (the same GET) shows it no more and creates nothing.
    again = html(c.get("/systems/auto/"))
    assert secret not in again
    assert 'id="new-key"' not in again
    assert f"{key.prefix}…" in again
    assert ApiKey.objects.filter(system__slug="auto").count() == 2  # the world's key and this one
    assert AuditEvent.objects.filter(action="apikey.create", target=key.prefix).count() == 1
    # The key works for its own system only.
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    body = json.dumps(decision_body(0.9))
    assert client.post("/api/v1/systems/auto/decisions", body, content_type="application/json").status_code == 201
    assert client.post("/api/v1/systems/sup/decisions", body, content_type="application/json").status_code == 404

    r = post(c, "/systems/auto/", {"op": "revoke_key", "key": str(key.pk)}, follow=True)
    assert f"key {key.prefix}… revoked" in messages_of(r)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.filter(action="apikey.revoke", target=key.prefix).exists()
    r = client.post("/api/v1/systems/auto/decisions", body, content_type="application/json")
    assert r.status_code == 401
    # A key of another system cannot be revoked through this system's page.
    other = ApiKey.objects.get(system__slug="crit")
    assert post(c, "/systems/auto/", {"op": "revoke_key", "key": str(other.pk)}).status_code == 404
    other.refresh_from_db()
    assert other.revoked_at is None


def test_a_new_key_is_shown_on_its_own_system_page_only(world: World) -> None:
    c = world.person(world.admin)
    post(c, "/systems/auto/", {"op": "create_key", "key-name": "k"})
    assert 'id="new-key"' not in html(c.get("/systems/sup/"))  # another system's page keeps it
    assert 'id="new-key"' in html(c.get("/systems/auto/"))
    assert 'id="new-key"' not in html(c.get("/systems/auto/"))


def test_a_too_long_key_name_is_refused_next_to_the_field(world: World) -> None:
    c = world.person(world.admin)
    r = post(c, "/systems/auto/", {"op": "create_key", "key-name": "k" * 101})
    assert r.status_code == 422
    assert r.context["key_form"].errors == {"name": ["Key name must be at most 100 characters long (it has 101)."]}
    assert 'id="id_key-name_error"' in html(r)
    assert r.context["form"].errors == {}  # the policy form is untouched
    assert ApiKey.objects.filter(system__slug="auto").count() == 1


def test_admin_kill_switch_form_needs_a_reason(world: World, django_capture_on_commit_callbacks: Any) -> None:
    c = world.person(world.admin)
    r = post(c, "/killswitch/", {"scope": "system", "system": "crit", "engaged": "true", "reason": "  ", "next": "/"},
             follow=True)
    assert r.status_code == 200
    assert any("a reason is required" in m for m in messages_of(r))
    assert not KillSwitch.objects.filter(engaged=True).exists()

    assert "Say why: a reason is required to engage a kill switch." in messages_of(r)

    r = post(c, "/killswitch/", {"scope": "sideways", "engaged": "true", "reason": "x"}, follow=True)
    assert "Unknown kill-switch scope 'sideways': choose global, system or model." in messages_of(r)
    r = post(c, "/killswitch/", {"scope": "system", "system": "nope", "engaged": "true", "reason": "x"}, follow=True)
    assert "No system 'nope'." in messages_of(r)
    r = post(c, "/killswitch/", {"scope": "global", "engaged": "true", "reason": "r" * 2001}, follow=True)
    assert "Reason must be at most 2000 characters long." in messages_of(r)
    assert not KillSwitch.objects.filter(engaged=True).exists()

    for off_site in ("//evil.example/", "/\\evil.example/", "https://evil.example/"):
        r = post(c, "/killswitch/", {"scope": "global", "engaged": "false", "next": off_site})
        assert r["Location"] == "/", off_site  # never off-site
    with django_capture_on_commit_callbacks(execute=True):  # the gate's epoch moves on commit
        r = post(c, "/killswitch/", {"scope": "system", "system": "crit", "engaged": "true", "reason": "bad model",
                                     "next": "/systems/"})
    assert r.status_code == 302
    assert r["Location"] == "/systems/"
    switch = KillSwitch.objects.get(engaged=True)
    assert (switch.scope, switch.system.slug, switch.reason, switch.changed_by_id) == (
        "system", "crit", "bad model", world.admin.pk)
    assert AuditEvent.objects.filter(action="killswitch.engage", reason="bad model", target="system:crit").exists()
    state = c.get("/overview/data.json").json()
    crit = next(s for s in state["systems"] if s["slug"] == "crit")
    assert crit["killed"] is True
    assert crit["kill_reason"] == "bad model"

    # crit is level 1: releasing its switch takes a second admin (four eyes)
    r = post(c, "/killswitch/", {"scope": "system", "system": "crit", "engaged": "false"}, follow=True)
    assert "Say why: the second admin reads the reason before approving." in messages_of(r)
    r = post(c, "/killswitch/", {"scope": "system", "system": "crit", "engaged": "false", "reason": "rolled back"},
             follow=True)
    request = ReleaseRequest.objects.get()
    assert (f"release of the system crit kill switch requested ({request.public_id}): it stays engaged until a "
            "second admin approves it") in messages_of(r)
    assert KillSwitch.objects.filter(engaged=True).exists()
    url = f"/killswitch/releases/{request.public_id}/approve/"
    r = post(c, url, {}, follow=True)
    assert "you asked for this release: a second admin must approve it" in messages_of(r)
    assert post(world.person(world.operator), url, {}).status_code == 403
    sideways = f"/killswitch/releases/{request.public_id}/sideways/"
    assert post(world.person(second_admin()), sideways, {}).status_code == 404
    r = post(world.person(second_admin()), url, {}, follow=True)
    assert "release approved: the crit kill switch is released" in messages_of(r)
    assert not KillSwitch.objects.filter(engaged=True).exists()
    releases = AuditEvent.objects.filter(action__startswith="killswitch.release", target="system:crit")
    assert list(releases.order_by("id").values_list("action", "actor_label", "reason")) == [
        ("killswitch.release_requested", "admin", "rolled back"),
        ("killswitch.release_approved", "admin2", "rolled back"),
        ("killswitch.release", "admin2", "rolled back"),
    ]
    assert c.get("/killswitch/").status_code == 405


def test_admin_reads_the_audit_log(world: World) -> None:
    c = world.person(world.admin)
    post(c, "/killswitch/", {"scope": "global", "engaged": "true", "reason": "incident 42"})
    r = c.get("/audit/")
    assert r.status_code == 200
    page = html(r)
    assert "killswitch.engage" in page
    assert "incident 42" in page
    assert "system.create" in page
    assert "apikey.create" in page
    r = c.get("/audit/?system=sup")
    rows = list(r.context["page"])
    assert rows
    assert all(e.system is not None and e.system.slug == "sup" for e in rows)


# --- tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["operator", "editor", "admin"])
def test_any_role_creates_a_personal_token(world: World, who: str) -> None:
    user = getattr(world, who)
    c = world.person(user)
    r = post(c, "/tokens/", {"name": "my script"})
    assert r.status_code == 302  # Post/Redirect/Get: a reload cannot post again
    assert r["Location"] == "/tokens/"
    r = c.get("/tokens/")
    assert "no-store" in r["Cache-Control"]
    match = re.search(r'<code id="new-token">([^<]+)</code>', html(r))
    assert match is not None
    secret = match.group(1)
    token = PersonalToken.objects.get(user=user, name="my script")
    assert token.digest == credentials.digest(secret)
    # Shown once: the same page again shows it no more, and nothing new was made.
    again = html(c.get("/tokens/"))
    assert secret not in again
    assert 'id="new-token"' not in again
    assert PersonalToken.objects.filter(user=user).count() == 1
    assert AuditEvent.objects.filter(action="token.create").count() == 1
    api = Client(HTTP_AUTHORIZATION=f"Token {secret}")
    assert api.get("/api/v1/systems/crit").status_code == 200
    r = post(c, "/tokens/", {"op": "revoke", "token": str(token.pk)}, follow=True)
    assert f"token {token.prefix}… revoked" in messages_of(r)
    assert api.get("/api/v1/systems/crit").status_code == 401


def test_a_new_token_is_shown_to_its_own_session_only(world: World) -> None:
    c = world.person(world.editor)
    other_session = world.person(world.editor)
    post(c, "/tokens/", {"name": "mine"})
    assert 'id="new-token"' not in html(other_session.get("/tokens/"))
    assert 'id="new-token"' in html(c.get("/tokens/"))


def test_a_bad_token_name_is_refused_and_kept(world: World) -> None:
    c = world.person(world.operator)
    r = post(c, "/tokens/", {"name": XSS + "x" * 100})
    assert r.status_code == 422
    assert r.context["form"].errors["name"] == ["Token name must be at most 100 characters long (it has 125)."]
    page = html(r)
    assert XSS not in page
    assert f'value="{XSS_ESCAPED}' in page
    assert 'id="id_name_error"' in page
    assert not PersonalToken.objects.exists()
    r = post(c, "/tokens/", {"name": XSS}, follow=True)
    assert XSS not in html(r)
    assert XSS_ESCAPED in html(r)


def test_a_token_of_someone_else_cannot_be_revoked(world: World) -> None:
    post(world.person(world.editor), "/tokens/", {"name": "editor's"})
    token = PersonalToken.objects.get(user=world.editor)
    r = post(world.person(world.operator), "/tokens/", {"op": "revoke", "token": str(token.pk)})
    assert r.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


# --- escaping, CSRF -----------------------------------------------------------------------


def test_user_text_is_escaped_in_pages(world: World) -> None:
    admin = world.person(world.admin)
    r = post(admin, "/systems/", {"slug": "xss", "name": XSS, "level": "1", "fallback": "{}", "reason": XSS})
    assert r.status_code == 302
    for path in ("/systems/", "/systems/xss/", "/audit/"):
        page = html(admin.get(path))
        assert XSS not in page, path
        assert XSS_ESCAPED in page, path
    overview = html(admin.get("/"))
    assert XSS not in overview  # the state for the page's script is JSON with "<" escaped
    assert "\\u003Cscript\\u003Ealert(1)\\u003C/script\\u003E" in overview

    decision = submit_level_1(world, subject=XSS)
    operator = world.person(world.operator)
    queue = html(operator.get("/review/"))
    assert XSS not in queue
    assert XSS_ESCAPED in queue
    item = item_id(decision)
    post(operator, f"/review/{item}/act/", {"op": "claim"})
    post(operator, f"/review/{item}/act/", {"op": "reject", "note": XSS})
    for path in ("/review/", f"/review/{item}/"):
        page = html(operator.get(path))
        assert XSS not in page, path
        assert XSS_ESCAPED in page, path
    assert XSS not in html(admin.get("/audit/"))


def test_a_post_without_the_csrf_token_is_refused(world: World) -> None:
    c = Client(enforce_csrf_checks=True)
    c.force_login(world.admin)
    r = c.post("/killswitch/", {"scope": "global", "engaged": "true", "reason": "no token"})
    assert r.status_code == 403
    assert not KillSwitch.objects.exists()
    r = c.post("/systems/", {"slug": "no-token", "level": "2"})
    assert r.status_code == 403
    assert not AISystem.objects.filter(slug="no-token").exists()
    c.get("/")  # a cookie alone is not enough: the form field (or header) must carry the token
    r = c.post("/tokens/", {"name": "no token"})
    assert r.status_code == 403
    assert not PersonalToken.objects.exists()
    # The session-authenticated API asks for the token too.
    r = c.post("/api/v1/killswitches", json.dumps({"scope": "global", "engaged": True, "reason": "x"}),
               content_type="application/json")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "csrf"
    assert not KillSwitch.objects.exists()
    r = c.post("/api/v1/killswitches", json.dumps({"scope": "global", "engaged": True, "reason": "with token"}),
               content_type="application/json", HTTP_X_CSRFTOKEN=c.cookies["csrftoken"].value)
    assert r.status_code == 200
    assert KillSwitch.objects.get().engaged is True


# --- API docs and static assets, served by the app itself ----------------------------------


def test_openapi_lists_the_decision_endpoint(world: World) -> None:
    r = world.person(world.operator).get("/api/v1/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v1/systems/{system}/decisions" in paths
    assert "post" in paths["/api/v1/systems/{system}/decisions"]
    assert "/api/v1/decisions/{decision_id}" in paths


def test_the_api_document_is_for_whoever_may_call_the_api(world: World) -> None:
    """People with a role (session or token) and client services (their key) read the document and
    its browser; anonymous people log in (the JSON answers 401); a person with no role gets 403."""
    from oversight import actions as core

    doc, docs = "/api/v1/openapi.json", "/api/v1/docs"
    anonymous = Client().get(doc)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    assert Client().get(docs)["Location"] == f"/login/?next={docs}"
    nobody = world.person(world.nobody)
    assert nobody.get(doc).status_code == 403
    assert nobody.get(doc).json()["error"]["code"] == "forbidden"
    assert nobody.get(docs).status_code == 403
    for who in (world.operator, world.editor, world.admin):
        assert world.person(who).get(doc).status_code == 200
        assert world.person(who).get(docs).status_code == 200
    _, token = core.create_personal_token(world.editor, "docs")
    assert Client(HTTP_AUTHORIZATION=f"Token {token}").get(doc).json()["info"]["title"] == "Oversight API"
    _, nobodys = core.create_personal_token(world.nobody, "docs")
    assert Client(HTTP_AUTHORIZATION=f"Token {nobodys}").get(doc).status_code == 403
    assert Client(HTTP_AUTHORIZATION=f"Bearer {world.keys['sup']}").get(doc).status_code == 200
    bad = Client(HTTP_AUTHORIZATION="Bearer ovk_not-a-key").get(doc)
    assert (bad.status_code, bad.json()["error"]["code"]) == (401, "unauthenticated")


async def _streamed_size(chunks: AsyncIterator[bytes]) -> int:
    return sum([len(chunk) async for chunk in chunks])


def _served(c: Client, url: str) -> int:
    r = c.get(url)
    if r.status_code == 200:
        if not r.streaming:
            size = len(r.content)
        elif r.is_async:  # static files are streamed by an async-native server (ServeStatic)
            size = async_to_sync(_streamed_size)(r.streaming_content)
        else:
            size = sum(len(chunk) for chunk in r.streaming_content)
        assert size > 0, url
    return r.status_code


def test_api_docs_need_no_cdn(world: World) -> None:
    c = world.person(world.operator)
    r = c.get("/api/v1/docs")
    assert r.status_code == 200
    page = html(r)
    for cdn in ("cdn.", "unpkg", "jsdelivr"):
        assert cdn not in page
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert any(a.endswith(".js") for a in assets)
    for asset in assets:
        assert _served(c, asset) == 200, asset


def test_plotly_and_htmx_are_served_by_the_app(world: World) -> None:
    c = world.person(world.operator)
    page = html(c.get("/"))
    for cdn in ("cdn.", "unpkg", "jsdelivr"):
        assert cdn not in page
    assert '/static/vendor/plotly.min.js"' in page
    assert _served(c, "/static/vendor/plotly.min.js") == 200
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page)
    htmx = [s for s in scripts if "htmx" in s]
    assert htmx, scripts
    for url in scripts:
        assert url.startswith("/static/"), url
        assert _served(c, url) == 200, url
    assert _served(Client(), "/static/vendor/plotly.min.js") == 200  # static files need no login


def test_the_policy_history_says_what_each_version_changed_in_words(world: World) -> None:
    actions.update_system(world.admin, "sup", {"level": 1, "confidence_threshold": 0.7}, reason="tighten")
    page = html(world.person(world.admin).get("/systems/sup/"))
    assert "level: 2 → 1; confidence threshold: 0.6 → 0.7" in page
    assert "first version: " in page
    assert "name: Supervised" in page
    assert "{&#x27;" not in page  # no Python dict dumps


def test_ids_with_non_ascii_digits_are_not_found_on_pages_too(world: World) -> None:
    """'³' and '٣' are digits to str.isdigit() but not to int(): pages answer 404, never 500."""
    c = world.person(world.admin)
    for bad in ("³", "٣", "1" * 30):
        r = post(c, "/systems/sup/", {"op": "revoke_key", "key": bad})
        assert r.status_code == 404, bad
        r = post(c, f"/monitor/sup/alerts/alr_{bad}/ack/", {})
        assert r.status_code in (302, 404), bad
        r = post(c, f"/killswitch/releases/rel_{bad}/approve/", {}, follow=True)
        assert r.status_code == 200, bad
