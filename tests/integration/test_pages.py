"""Every page, from both sides: who reaches it, who is turned away, what a form changes.

People are Django test clients that enforce CSRF like a browser would, so every form post
carries the token from the ``csrftoken`` cookie, as the pages' forms do.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from oversight import credentials
from oversight.models import AISystem, ApiKey, AuditEvent, KillSwitch, PersonalToken, PolicyVersion
from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body

XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"

PROTECTED = [
    "/", "/review/", "/systems/", "/systems/crit/", "/tokens/", "/audit/", "/overview/data.json",
    "/api/v1/docs", "/api/v1/openapi.json",
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
    # Resolving twice is refused with a message, not an error page.
    r = post(c, f"/review/{item}/act/", {"op": "reject"}, follow=True)
    assert r.status_code == 200
    assert any("already resolved" in m for m in messages_of(r))


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
    assert_forbidden_page(c.get("/review/"), "operator")
    assert_forbidden_page(c.get(f"/review/{item_id(decision)}/"), "operator")
    assert_forbidden_page(post(c, "/review/next/"), "operator")
    assert_forbidden_page(post(c, f"/review/{item_id(decision)}/act/", {"op": "claim"}), "operator")
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
    ({"slug": "crit"}, "slug", "already exists"),
    ({"slug": "Bad Slug!"}, "slug", "pattern"),
    ({"slug": "x1", "fallback": "{not json"}, "fallback", "not valid JSON"),
    ({"slug": "x2", "confidence_threshold": "lots"}, "confidence_threshold", "not a number"),
    ({"slug": "x3", "confidence_threshold": "1.5"}, "confidence_threshold", "less than or equal to 1"),
])
def test_invalid_system_forms_say_what_is_wrong(world: World, data: dict[str, str], field: str, text: str) -> None:
    c = world.person(world.admin)
    before = AISystem.objects.count()
    r = post(c, "/systems/", {"level": "2", **data})
    assert r.status_code == 422
    assert field in r.context["errors"]
    assert text in r.context["errors"][field]
    assert 'role="alert"' in html(r)
    assert AISystem.objects.count() == before


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
    assert "not valid JSON" in html(r)
    assert AISystem.objects.get(slug="sup").level == 1
    assert c.get("/systems/no-such-system/").status_code == 404


def test_admin_creates_an_api_key_shown_once_then_revokes_it(tworld: World) -> None:
    """Committed (``tworld``): the gate learns of a revoked key when the change commits."""
    world = tworld
    c = world.person(world.admin)
    r = post(c, "/systems/auto/", {"op": "create_key", "name": "prod-recommender"})
    assert r.status_code == 200
    match = re.search(r'<code id="new-key">([^<]+)</code>', html(r))
    assert match is not None
    secret = match.group(1)
    assert secret.startswith(credentials.API_KEY_PREFIX)
    key = ApiKey.objects.get(system__slug="auto", name="prod-recommender")
    assert key.digest == credentials.digest(secret)
    assert secret.startswith(key.prefix)
    assert secret not in {key.digest, key.prefix, key.name}
    assert AuditEvent.objects.filter(action="apikey.create", target=key.prefix).exists()
    # Shown once: the page never shows it again.
    again = html(c.get("/systems/auto/"))
    assert secret not in again
    assert 'id="new-key"' not in again
    assert f"{key.prefix}…" in again
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


def test_admin_kill_switch_form_needs_a_reason(world: World) -> None:
    c = world.person(world.admin)
    r = post(c, "/killswitch/", {"scope": "system", "system": "crit", "engaged": "true", "reason": "  ", "next": "/"},
             follow=True)
    assert r.status_code == 200
    assert any("a reason is required" in m for m in messages_of(r))
    assert not KillSwitch.objects.filter(engaged=True).exists()

    r = post(c, "/killswitch/", {"scope": "sideways", "engaged": "true", "reason": "x"}, follow=True)
    assert "unknown kill-switch scope" in messages_of(r)

    r = post(c, "/killswitch/", {"scope": "system", "system": "crit", "engaged": "true", "reason": "bad model",
                                 "next": "//evil.example/"})
    assert r.status_code == 302
    assert r["Location"] == "/"  # never off-site
    switch = KillSwitch.objects.get(engaged=True)
    assert (switch.scope, switch.system.slug, switch.reason, switch.changed_by_id) == (
        "system", "crit", "bad model", world.admin.pk)
    assert AuditEvent.objects.filter(action="killswitch.engage", reason="bad model", target="system:crit").exists()
    state = c.get("/overview/data.json").json()
    crit = next(s for s in state["systems"] if s["slug"] == "crit")
    assert crit["killed"] is True
    assert crit["kill_reason"] == "bad model"

    r = post(c, "/killswitch/", {"scope": "system", "system": "crit", "engaged": "false"}, follow=True)
    assert "kill switch released: system crit" in messages_of(r)
    assert not KillSwitch.objects.filter(engaged=True).exists()
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
    assert r.status_code == 200
    match = re.search(r'<code id="new-token">([^<]+)</code>', html(r))
    assert match is not None
    secret = match.group(1)
    token = PersonalToken.objects.get(user=user, name="my script")
    assert token.digest == credentials.digest(secret)
    assert secret not in html(c.get("/tokens/"))
    api = Client(HTTP_AUTHORIZATION=f"Token {secret}")
    assert api.get("/api/v1/systems/crit").status_code == 200
    r = post(c, "/tokens/", {"op": "revoke", "token": str(token.pk)}, follow=True)
    assert f"token {token.prefix}… revoked" in messages_of(r)
    assert api.get("/api/v1/systems/crit").status_code == 401


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


def _served(c: Client, url: str) -> int:
    r = c.get(url)
    if r.status_code == 200:
        size = sum(len(chunk) for chunk in r.streaming_content) if r.streaming else len(r.content)
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
