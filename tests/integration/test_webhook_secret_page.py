"""The system page's webhook card: a secret made by an admin is shown once (after a redirect), signs
from then on, is never part of the policy or the API's answers, and is audited."""

from __future__ import annotations

import re

from oversight import webhooks
from oversight.models import AISystem, AuditEvent
from tests.conftest import World, csrf_session


def test_an_admin_makes_a_secret_that_is_shown_once_and_never_again(world: World) -> None:
    c = csrf_session(world.admin)
    page = c.get("/systems/sup/").content.decode()
    assert "No secret yet: deliveries are not signed." in page
    assert "No webhook URL" in page

    r = c.post("/systems/sup/", {"op": "webhook_secret"})
    assert r.status_code == 302
    assert r["Location"].endswith("/systems/sup/#webhooks")
    shown = re.search(r'<code id="new-webhook-secret">(whsec_[\w-]+)</code>', c.get("/systems/sup/").content.decode())
    assert shown is not None
    secret = shown.group(1)
    assert AISystem.objects.get(slug="sup").webhook_secret == secret
    again = c.get("/systems/sup/").content.decode()
    assert secret not in again  # a reload does not show it (nor make another)
    assert "Deliveries are signed." in again
    assert AuditEvent.objects.filter(action="webhook.secret", target="sup").count() == 1

    api = world.api_person(world.admin).get("/api/v1/systems/sup").json()
    assert api["webhook_secret_set"] is True
    assert secret not in str(api)
    assert webhooks.signature(secret, b"{}") == "sha256=" + __import__("hmac").new(
        secret.encode(), b"{}", "sha256").hexdigest()


def test_the_callback_url_is_part_of_the_policy_and_checked(world: World) -> None:
    c = csrf_session(world.admin)
    bad = c.post("/systems/sup/", {"op": "policy", "callback_url": "ftp://client.example/x", "reason": "hooks",
                                   "name": "Supervised", "level": "2"})
    assert bad.status_code == 422
    assert "must be an http:// or https:// address" in bad.content.decode()
    assert 'value="ftp://client.example/x"' in bad.content.decode()  # what was typed stays
    api = csrf_session(world.admin, api=True)
    r = api.patch("/api/v1/systems/sup", {"callback_url": "https://client.example/hooks", "reason": "hooks"},
                  content_type="application/json")
    assert r.status_code == 200, r.content
    assert r.json()["callback_url"] == "https://client.example/hooks"
    assert "https://client.example/hooks" in c.get("/systems/sup/").content.decode()


def test_only_admins_make_webhook_secrets(world: World) -> None:
    for who in (world.operator, world.editor):
        r = csrf_session(who).post("/systems/sup/", {"op": "webhook_secret"})
        assert r.status_code == 403
        assert "This page needs the <strong>admin</strong> role" in r.content.decode()
    assert AISystem.objects.get(slug="sup").webhook_secret == ""


def test_a_callback_url_with_an_empty_host_label_or_a_bad_port_is_refused(world: World) -> None:
    api = csrf_session(world.admin, api=True)
    for bad in ("http://hooks..client.example/h", "https://client.example:port/h", "http:///h"):
        r = api.patch("/api/v1/systems/sup", {"callback_url": bad, "reason": "hooks"}, content_type="application/json")
        assert r.status_code == 422, bad
        assert r.json()["error"]["field"] == "callback_url"
    assert AISystem.objects.get(slug="sup").callback_url == ""
