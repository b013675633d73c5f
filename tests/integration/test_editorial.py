"""Editors' curated picks and blocks: the JSON API and the editor page, from both sides — who may
change them, what is refused and why, the audit trail, and that the very next decision sees them."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django.utils.crypto import get_random_string

from oversight import config, editorial, picks
from oversight.models import AuditEvent, BlockedItem, Pick
from tests.asgiclient import ApiClient
from tests.conftest import World, decision_body

PICKS = "/api/v1/systems/sup/picks"
BLOCKED = "/api/v1/systems/sup/blocked"


def send(client: ApiClient, method: str, url: str, data: Any = None) -> Any:
    if method in ("get", "delete"):
        return getattr(client, method)(url)
    return client.post(url, json.dumps(data).encode(), content_type="application/json")


def session(world: World, user: Any) -> ApiClient:
    """A person on the API with the CSRF token a page would send."""
    c = world.api_person(user)
    token = get_random_string(32)
    c.cookies[settings.CSRF_COOKIE_NAME] = token
    c.defaults["HTTP_X_CSRFTOKEN"] = token
    return c


def caller(world: World, who: str) -> ApiClient:
    if who == "anonymous":
        return ApiClient()
    if who == "client":
        return world.client_for("sup")
    return session(world, getattr(world, who))


def iso(delta: timedelta) -> str:
    return (timezone.now() + delta).isoformat()


# --- who may do what -----------------------------------------------------------------------------

A, F = 401, 403
CALLERS = ("anonymous", "client", "nobody", "operator", "editor", "admin")
MATRIX = {
    #                anonymous client nobody operator editor admin
    "list_picks":    (A, F, F, 200, 200, 200),
    "create_pick":   (A, F, F, F, 201, 201),
    "remove_pick":   (A, F, F, F, 200, 200),
    "preview":       (A, F, F, 200, 200, 200),
    "list_blocked":  (A, F, F, 200, 200, 200),
    "create_block":  (A, F, F, F, 201, 201),
    "remove_block":  (A, F, F, F, 200, 200),
}


@pytest.mark.parametrize("endpoint", list(MATRIX))
def test_every_endpoint_from_both_sides(world: World, endpoint: str) -> None:
    for who, expected in zip(CALLERS, MATRIX[endpoint], strict=True):
        pick = editorial.create_pick(world.editor, "sup", item="t42")
        block = editorial.create_block(world.editor, "sup", item="t9")
        request = {
            "list_picks": ("get", PICKS, None),
            "create_pick": ("post", PICKS, {"item": "t1"}),
            "remove_pick": ("delete", f"/api/v1/picks/pck_{pick.pk}", None),
            "preview": ("get", f"{PICKS}/preview?context=activity=sleep", None),
            "list_blocked": ("get", BLOCKED, None),
            "create_block": ("post", BLOCKED, {"item": "t2"}),
            "remove_block": ("delete", f"/api/v1/blocked/blk_{block.pk}", None),
        }[endpoint]
        response = send(caller(world, who), *request)
        assert response.status_code == expected, (who, response.content)
        if expected >= 400:
            assert response.json()["error"]["code"] in ("unauthenticated", "forbidden")


def test_post_without_csrf_is_refused(world: World) -> None:
    response = send(world.api_person(world.editor), "post", PICKS, {"item": "t1"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf"
    assert not Pick.objects.exists()


# --- making, listing, removing -------------------------------------------------------------------


def test_editor_pins_an_item_and_it_is_audited(world: World) -> None:
    c = session(world, world.editor)
    body = {"item": "t42", "position": 2, "context": {"activity": "sleep"}, "ends_at": iso(timedelta(days=1)),
            "note": "sleep playlist launch"}
    made = send(c, "post", PICKS, body)
    assert made.status_code == 201, made.content
    pick = made.json()
    assert pick["id"].startswith("pck_")
    assert (pick["item"], pick["position"], pick["context"], pick["state"]) == ("t42", 2, {"activity": "sleep"},
                                                                               "active")
    assert (pick["match"], pick["created_by"], pick["overlaps"], pick["overlap_note"]) == (
        "activity=sleep", "editor", [], "")
    event = AuditEvent.objects.get(action="pick.create")
    assert (event.actor_label, event.target, event.system_id, event.reason) == ("editor", pick["id"],
                                                                                world.supervised.id,
                                                                                "sleep playlist launch")
    assert event.data["item"] == "t42"
    assert event.data["position"] == 2
    assert event.data["context"] == {"activity": "sleep"}

    listed = send(c, "get", PICKS).json()
    assert [p["id"] for p in listed["picks"]] == [pick["id"]]

    gone = send(c, "delete", f"/api/v1/picks/{pick['id']}")
    assert gone.status_code == 200
    assert (gone.json()["state"], gone.json()["removed_by"]) == ("removed", "editor")
    assert AuditEvent.objects.filter(action="pick.remove", target=pick["id"]).count() == 1
    assert send(c, "get", PICKS).json()["picks"] == []
    assert [p["id"] for p in send(c, "get", f"{PICKS}?all=true").json()["picks"]] == [pick["id"]]  # kept

    again = send(c, "delete", f"/api/v1/picks/{pick['id']}")
    assert again.status_code == 409
    assert "already removed by editor" in again.json()["error"]["message"]


def test_admin_blocks_an_item_and_it_is_audited(world: World) -> None:
    c = session(world, world.admin)
    made = send(c, "post", BLOCKED, {"item": "t9", "segment": "kids"})
    assert made.status_code == 201, made.content
    block = made.json()
    assert block["id"].startswith("blk_")
    assert (block["match"], block["ends_at"], block["state"]) == ("segment=kids", None, "active")
    assert AuditEvent.objects.get(action="block.create").target == block["id"]
    assert [b["id"] for b in send(c, "get", BLOCKED).json()["blocked"]] == [block["id"]]
    assert send(c, "delete", f"/api/v1/blocked/{block['id']}").status_code == 200
    assert AuditEvent.objects.get(action="block.remove").actor_label == "admin"
    assert BlockedItem.objects.get().removed_at is not None


def test_overlapping_picks_are_allowed_and_named(world: World) -> None:
    c = session(world, world.editor)
    first = send(c, "post", PICKS, {"item": "t1", "position": 1, "context": {"activity": "sleep"}}).json()
    second = send(c, "post", PICKS, {"item": "t2", "position": 1}).json()  # everyone, same position
    apart = send(c, "post", PICKS, {"item": "t3", "position": 1, "context": {"activity": "run"},
                                    "starts_at": iso(timedelta(days=2))}).json()
    assert second["overlaps"] == [first["id"]]
    assert second["overlap_note"] == f"overlaps {first['id']}"
    listed = {p["id"]: p["overlap_note"] for p in send(c, "get", PICKS).json()["picks"]}
    assert listed == {first["id"]: f"overlaps {second['id']}",
                      second["id"]: f"overlaps {first['id']}, {apart['id']}",
                      apart["id"]: f"overlaps {second['id']}"}


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"item": " t42"}, "item", "spaces at its start or end"),
    ({"item": ""}, "item", "required"),
    ({"item": "t\u00074"}, "item", "control character"),
    ({"item": "x" * 201}, "item", "at most 200"),
    ({"item": "t42", "position": 0}, "position", "from 1"),
    ({"item": "t42", "position": 1001}, "position", "to 1000"),
    ({"item": "t42", "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"}, "ends_at",
     "ends_at must be after starts_at"),
    ({"item": "t42", "ends_at": "2020-01-01T00:00:00Z"}, "ends_at", "in the past"),
    ({"item": "t42", "starts_at": "2030-01-01T00:00:00"}, "starts_at", "time zone"),
    ({"item": "t42", "context": {"activity": ["sleep"]}}, "context", "not a list or an object"),
    ({"item": "t42", "context": {"segment": "kids"}}, "context", "segment field"),
    ({"item": "t42", "segment": "kids\n"}, "segment", "spaces at its start or end"),
    ({"item": "t42", "note": "a\u0000b"}, "note", "control character"),
    ({"item": "t42", "positon": 2}, "positon", "Extra inputs"),
    ({"position": 2}, "item", "required"),
])
def test_bad_input_gets_a_clear_message(world: World, body: dict[str, Any], field: str, words: str) -> None:
    response = send(session(world, world.editor), "post", PICKS, body)
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["field"] == field
    assert words in error["message"]
    assert not Pick.objects.exists()
    assert not AuditEvent.objects.filter(action="pick.create").exists()


def test_unknown_system_and_unknown_ids(world: World) -> None:
    c = session(world, world.editor)
    for method, url, data in (("post", "/api/v1/systems/nope/picks", {"item": "t1"}),
                              ("get", "/api/v1/systems/nope/picks", None),
                              ("post", "/api/v1/systems/nope/blocked", {"item": "t1"}),
                              ("get", "/api/v1/systems/nope/picks/preview", None)):
        response = send(c, method, url, data)
        assert response.status_code == 404, (url, response.content)
        assert response.json()["error"]["message"] == "no system 'nope'"
    for url, words in (("/api/v1/picks/pck_999", "no pick 'pck_999'"), ("/api/v1/picks/blk_1", "not a pick id"),
                       ("/api/v1/blocked/nonsense", "not a block id")):
        response = send(c, "delete", url)
        assert response.status_code == 404
        assert words in response.json()["error"]["message"]


# --- the very next decision sees it ---------------------------------------------------------------


def test_a_new_pick_reaches_the_gates_snapshot_at_once(world: World, django_capture_on_commit_callbacks: Any) -> None:
    before = config.cache.current()
    with django_capture_on_commit_callbacks(execute=True):  # the commit raises the epoch in Redis
        pick = editorial.create_pick(world.editor, "sup", item="t42", context={"activity": "sleep"})
    after = config.cache.current()
    assert after.epoch > before.epoch
    curation = picks.load_all(timezone.now())[world.supervised.id]
    assert [r.id for r in curation.picks] == [f"pck_{pick.pk}"]
    entry = after.systems_by_id[world.supervised.id]
    if hasattr(entry, "curation"):  # the lead's wiring: the snapshot carries each system's picks
        assert entry.curation is not None
        assert [r.id for r in entry.curation.picks] == [f"pck_{pick.pk}"]
    with django_capture_on_commit_callbacks(execute=True):
        editorial.remove_pick(world.editor, f"pck_{pick.pk}")
    assert config.cache.current().epoch > after.epoch
    assert world.supervised.id not in picks.load_all(timezone.now())


def test_load_all_leaves_out_removed_and_ended_rules(world: World) -> None:
    now = timezone.now()
    keep = editorial.create_pick(world.editor, "sup", item="a", starts_at=now + timedelta(hours=1))
    ends = editorial.create_block(world.editor, "sup", item="b", ends_at=now + timedelta(minutes=5))
    gone = editorial.create_pick(world.editor, "sup", item="c")
    editorial.remove_pick(world.editor, f"pck_{gone.pk}")
    loaded = picks.load_all(now)[world.supervised.id]
    assert [(r.id, r.by, r.position) for r in loaded.picks] == [(f"pck_{keep.pk}", "editor", 1)]
    assert [r.id for r in loaded.blocks] == [f"blk_{ends.pk}"]
    assert picks.load_all(now + timedelta(minutes=6))[world.supervised.id].blocks == ()


def test_a_decision_receives_the_pick_and_names_it(world: World) -> None:
    pick = editorial.create_pick(world.editor, "sup", item="t42", context={"activity": "sleep"})
    block = editorial.create_block(world.editor, "sup", item="t9")
    client = world.client_for("sup")
    body = decision_body(0.9, context={"activity": "sleep"})
    answer = send(client, "post", "/api/v1/systems/sup/decisions", body).json()
    assert answer["output"] == {"items": ["t42", "t1"]}
    assert f"editor pick pck_{pick.pk}: t42 at position 1 for activity=sleep (by editor)" in answer["reasons"]
    assert f"editor block blk_{block.pk}: t9 removed (by editor)" in answer["reasons"]
    other = send(client, "post", "/api/v1/systems/sup/decisions", decision_body(0.9, context={"activity": "run"}))
    assert other.json()["output"] == {"items": ["t1"]}


# --- the preview ---------------------------------------------------------------------------------


def test_preview_shows_the_newest_matching_decision_curated(world: World) -> None:
    c = session(world, world.operator)  # anyone with a role may preview
    fallback = c.get(f"{PICKS}/preview?context=activity=sleep").json()
    assert (fallback["source"], fallback["base"], fallback["curated"], fallback["reasons"]) == (
        "fallback", {"items": ["safe"]}, {"items": ["safe"]}, [])
    client = world.client_for("sup")
    made = send(client, "post", "/api/v1/systems/sup/decisions",
                decision_body(0.9, context={"activity": "sleep", "hour": 23})).json()
    send(client, "post", "/api/v1/systems/sup/decisions", decision_body(0.9, context={"activity": "run"}))
    pick = editorial.create_pick(world.editor, "sup", item="t42", position=2, context={"activity": "sleep"})
    shown = c.get(f"{PICKS}/preview?context=activity=sleep&context=hour=23").json()
    assert shown["source"] == made["id"]
    assert shown["context"] == {"activity": "sleep", "hour": "23"}
    assert shown["base"] == {"items": ["t1", "t9"]}
    assert shown["curated"] == {"items": ["t1", "t42"]}
    assert shown["reasons"] == [f"editor pick pck_{pick.pk}: t42 at position 2 for activity=sleep (by editor)"]
    bad = c.get(f"{PICKS}/preview?context=activity")
    assert bad.status_code == 422
    assert "not a key=value pair" in bad.json()["error"]["message"]


# --- the page ------------------------------------------------------------------------------------


def page_post(c: Client, url: str, data: dict[str, Any]) -> Any:
    c.get("/editorial/")  # sets the CSRF cookie
    return c.post(url, {**data, "csrfmiddlewaretoken": c.cookies["csrftoken"].value})


def test_anonymous_is_sent_to_login(world: World) -> None:
    for url in ("/editorial/", "/editorial/sup/"):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


def test_nav_link_only_for_editors_and_admins(world: World) -> None:
    assert 'href="/editorial/"' in world.person(world.editor).get("/").content.decode()
    assert 'href="/editorial/"' in world.person(world.admin).get("/").content.decode()
    assert 'href="/editorial/"' not in world.person(world.operator).get("/").content.decode()


def test_operator_may_look_but_not_change(world: World) -> None:
    editorial.create_pick(world.editor, "sup", item="t42")
    c = world.person(world.operator)
    page = c.get("/editorial/sup/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "t42" in text
    assert "Add a pick" not in text
    assert ">Remove<" not in text
    refused = page_post(c, "/editorial/sup/pick/add/", {"pick-item": "t1", "pick-position": "1"})
    assert refused.status_code == 403
    refused = page_post(c, f"/editorial/sup/pick/pck_{Pick.objects.get().pk}/remove/", {})
    assert refused.status_code == 403
    assert Pick.objects.count() == 1
    assert Pick.objects.get().removed_at is None
    assert world.person(world.nobody).get("/editorial/sup/").status_code == 403


def test_editor_adds_a_pick_in_local_time_and_removes_it(world: World) -> None:
    c = world.person(world.editor)
    response = page_post(c, "/editorial/sup/pick/add/", {
        "pick-item": "t42", "pick-position": "1", "pick-context": "activity=sleep, hour=23",
        "pick-starts_at": "2026-01-01T08:00", "pick-ends_at": "2099-01-01T08:00", "pick-tz": "Europe/Berlin",
        "pick-note": "launch"})
    assert response.status_code == 302, response.content.decode()
    pick = Pick.objects.get()
    assert (pick.item, pick.context, pick.created_by) == ("t42", {"activity": "sleep", "hour": "23"}, world.editor)
    assert pick.starts_at.isoformat() == "2026-01-01T07:00:00+00:00"  # 08:00 in Berlin
    assert AuditEvent.objects.filter(action="pick.create").count() == 1
    page = c.get("/editorial/sup/").content.decode()
    assert "activity=sleep, hour=23" in page
    c.cookies["tz"] = "Europe/Berlin"
    assert "2026-01-01 08:00 CET" in c.get("/editorial/sup/").content.decode()
    removed = page_post(c, f"/editorial/sup/pick/pck_{pick.pk}/remove/", {})
    assert removed.status_code == 302
    pick.refresh_from_db()
    assert pick.removed_by == world.editor


@pytest.mark.parametrize(("data", "words"), [
    ({"pick-item": "t42", "pick-position": "0"}, "Position 1 is the first"),
    ({"pick-item": " t42", "pick-position": "1"}, "spaces at its start or end"),
    ({"pick-item": "t42", "pick-position": "1", "pick-starts_at": "2099-01-02T00:00",
      "pick-ends_at": "2099-01-01T00:00"}, "ends_at must be after starts_at"),
    ({"pick-item": "t42", "pick-position": "1", "pick-context": "activity"}, "not a key=value pair"),
    ({"pick-item": "t42", "pick-position": "1", "pick-starts_at": "tomorrow"}, "Give a date and time"),
])
def test_page_refusals_say_why_and_keep_what_was_typed(world: World, data: dict[str, str], words: str) -> None:
    response = page_post(world.person(world.editor), "/editorial/sup/pick/add/", data)
    assert response.status_code == 422
    text = response.content.decode()
    assert words in text
    assert "Nothing was saved." in text
    assert not Pick.objects.exists()


def test_page_blocks_and_previews_with_user_text_escaped(world: World) -> None:
    c = world.person(world.editor)
    assert page_post(c, "/editorial/sup/block/add/", {"block-item": "<b>bad</b>"}).status_code == 302
    editorial.create_pick(world.editor, "sup", item="t42", segment="night")
    text = c.get("/editorial/sup/?preview=1&segment=night&context=").content.decode()
    assert "&lt;b&gt;bad&lt;/b&gt;" in text
    assert "<b>bad</b>" not in text
    assert "the system's fallback" in text
    assert "editor pick pck_" in text
    assert "t42" in text
    index = c.get("/editorial/").content.decode()
    assert 'href="/editorial/sup/"' in index
