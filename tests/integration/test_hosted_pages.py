"""Hosted models on the pages: the system page's card (admins register, switch off, remove; others
look) and each model's vote on a review item's page."""

from __future__ import annotations

from oversight import hosted
from oversight.models import AuditEvent, HostedModel, KillSwitch
from reviewqueue.models import ReviewItem
from tests.conftest import World, csrf_session


def _register(world: World, **fields: str) -> object:
    data = {"hosted-name": "collab", "hosted-kind": "python", "hosted-target": "tests.hosted_models:recommend",
            "hosted-protocol": "json", "hosted-role": "voter", "hosted-weight": "2", "hosted-timeout_ms": "300",
            **fields}
    return csrf_session(world.admin).post("/monitor/sup/models/", data)


def test_an_admin_registers_a_model_on_the_system_page(world: World) -> None:
    r = _register(world)
    assert r.status_code == 302
    assert r["Location"].endswith("/monitor/sup/#hosted-models")
    m = HostedModel.objects.get(system=world.supervised, name="collab")
    assert (m.kind, m.weight, m.timeout_ms) == ("python", 2.0, 300)
    assert AuditEvent.objects.filter(action="model.register", target="collab", actor=world.admin).exists()
    page = world.person(world.admin).get("/monitor/sup/").content.decode()
    assert "tests.hosted_models:recommend" in page
    assert "Switch off" in page


def test_a_path_that_does_not_import_is_refused_on_its_field_with_what_was_typed(world: World) -> None:
    r = _register(world, **{"hosted-target": "tests.nowhere:model", "hosted-name": "my-model"})
    assert r.status_code == 422
    page = r.content.decode()
    assert "The dotted path does not import: module &#x27;tests.nowhere&#x27; does not import" in page
    assert 'value="my-model"' in page  # what the admin typed is still there
    assert not HostedModel.objects.exists()


def test_switching_off_and_removing(world: World) -> None:
    _register(world)
    admin = csrf_session(world.admin)
    assert admin.post("/monitor/sup/models/", {"name": "collab", "op": "disable"}).status_code == 302
    assert HostedModel.objects.get(name="collab").enabled is False
    assert admin.post("/monitor/sup/models/", {"name": "collab", "op": "remove"}).status_code == 302
    assert not HostedModel.objects.exists()
    r = admin.post("/monitor/sup/models/", {"name": "collab", "op": "remove"})
    assert r.status_code == 422
    assert "Sup has no model named &#x27;collab&#x27;" in r.content.decode()


def test_other_roles_see_the_models_but_not_the_form(world: World) -> None:
    _register(world)
    for user in (world.operator, world.editor):
        c = csrf_session(user)
        page = c.get("/monitor/sup/").content.decode()
        assert "tests.hosted_models:recommend" in page
        assert "Register a model" not in page
        assert c.post("/monitor/sup/models/", {"name": "collab", "op": "disable"}).status_code == 403
    assert HostedModel.objects.get(name="collab").enabled is True


def test_the_review_page_shows_every_vote(world: World) -> None:
    body = {"subject": "u1", "prediction": {
        "output": {"decision": "approve"}, "confidence": 0.7, "model": "scorer-a",
        "votes": [{"model": "scorer-a", "output": {"decision": "approve"}, "confidence": 0.7},
                  {"model": "scorer-b", "output": {"decision": "<refer>"}, "confidence": 0.4}]}}
    r = world.client_for("crit").post("/api/v1/systems/crit/decisions", body, content_type="application/json")
    assert r.status_code == 201
    item = ReviewItem.objects.get()
    op = world.person(world.operator)
    page = op.get(f"/review/{item.public_id}/").content.decode()
    votes = page[page.index('id="votes"'):page.index("</table>", page.index('id="votes"'))]
    assert "scorer-a" in votes
    assert "carried it" in votes
    assert "&lt;refer&gt;" in votes  # escaped
    assert "0.4" in votes


def test_an_admin_kills_a_model_from_its_row_and_releases_it(world: World) -> None:
    _register(world)
    admin = csrf_session(world.admin)
    r = admin.post("/killswitch/", {"scope": "model", "system": "sup", "model": "collab", "engaged": "true",
                                    "reason": "plays metal at bedtime", "next": "/monitor/sup/#hosted-models"})
    assert r.status_code == 302
    assert r["Location"] == "/monitor/sup/#hosted-models"
    assert KillSwitch.objects.get(scope="model", model="collab").engaged
    page = admin.get("/monitor/sup/").content.decode()
    card = page[page.index('id="hosted-models"'):]
    assert "killed" in card
    assert "plays metal at bedtime" in card
    assert "Release kill" in card
    admin.post("/killswitch/", {"scope": "model", "system": "sup", "model": "collab", "engaged": "false",
                                "reason": "released on the system page", "next": "/monitor/sup/#hosted-models"})
    assert not KillSwitch.objects.get(scope="model", model="collab").engaged


def test_the_audit_log_says_model_changes_in_words(world: World) -> None:
    _register(world)
    hosted.update(world.admin, "sup", "collab", {"weight": 4}, "trust it more")
    page = world.person(world.admin).get("/audit/?system=sup").content.decode()
    assert "registered hosted model collab" in page
    assert "changed hosted model collab: weight: 2 → 4" in page
