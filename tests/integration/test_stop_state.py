"""Kill state everywhere: the selector (``oversight.stopstate``), the banner on every page, Approve
disabled with its reason while a system is stopped, stopped rows and systems marked, and the live
push on ``/ws/status/`` (real PostgreSQL, Redis and the ASGI application)."""

from __future__ import annotations

import html as htmllib
import re
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from oversight import actions, config, events, stopstate
from oversight.asgi import application
from oversight.config import Snapshot, SystemEntry
from oversight.gate import KillState, Policy
from oversight.models import KillSwitch
from reviewqueue import actions as review
from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body
from tests.integration.test_websocket import TIMEOUT, headers_for

XSS = '<script>window.__pwned = 1</script>"&'


def second_admin() -> Any:
    from django.contrib.auth.models import Group, User

    user, _ = User.objects.get_or_create(username="admin2")
    user.groups.add(Group.objects.get(name="admin"))
    return user


def set_switch(admin: Any, scope: str, engaged: bool, reason: str = "", system: str | None = None,
               model: str = "") -> None:
    """Flip a switch as ``admin``; a release that waits for a second admin (four eyes) is approved by one."""
    done = actions.set_killswitch(admin, scope, engaged, reason or ("over" if not engaged else ""), system, model)
    if not isinstance(done, KillSwitch):  # a release request
        actions.approve_release(second_admin(), done.public_id)  # type: ignore[attr-defined]


def flip(world: World, capture: Any, scope: str, engaged: bool, reason: str = "", system: str | None = None,
         model: str = "") -> None:
    with capture(execute=True):
        set_switch(world.admin, scope, engaged, reason, system, model)


def queued_item(world: World, slug: str = "crit", **extra: Any) -> ReviewItem:
    r = world.client_for(slug).post(f"/api/v1/systems/{slug}/decisions", decision_body(0.3, **extra),
                                    content_type="application/json")
    assert r.status_code == 201, r.content
    return ReviewItem.objects.select_related("decision", "system").get(decision__id=r.json()["id"][4:])


def page(client: Any, path: str) -> tuple[int, str]:
    r = client.get(path)
    return r.status_code, r.content.decode()


def banner_of(text: str) -> str:
    """The stop banner's HTML ("" when the page has none)."""
    m = re.search(r'<section class="stop-banner" role="alert".*?</section>', text, re.S)
    return m.group(0) if m else ""


def approve_button(text: str) -> str:
    m = re.search(r'<button[^>]*id="approve"[^>]*>', text)
    assert m, "no Approve button"
    return m.group(0)


# --- the selector, over a snapshot ------------------------------------------------------------


def _entry(i: int, slug: str, kills: KillState) -> SystemEntry:
    return SystemEntry(i, slug, slug.title(), Policy(1, 0.5, 0.0, None), kills)


def test_selector_over_a_snapshot_says_what_stops_each_system() -> None:
    snap = Snapshot(7, {
        "a": _entry(1, "a", KillState(None, "bad push", {"m1": "bias"})),
        "b": _entry(2, "b", KillState()),
    })
    state = stopstate.stop_state(snap)
    a, b = state.by_slug["a"], state.by_slug["b"]
    assert state.epoch == 7
    assert state.everything is None
    assert a.killed_reason == "bad push"
    assert a.stopped == "system kill switch engaged: bad push"
    assert {m: f.reason for m, f in a.models_killed.items()} == {"m1": "bias"}
    assert a.reasons == ["system kill switch engaged: bad push", "model m1 is stopped: kill switch engaged (bias)"]
    assert b.stopped is None
    assert b.reasons == []
    assert not b.models_killed
    assert state.stopped == {"a": "system kill switch engaged: bad push"}
    assert [s.slug for s in state.killed_systems] == ["a"]
    assert [m for m, _ in state.models_of("a")] == ["m1"]
    assert state.models_of("b") == []
    assert state.models_of(None) == []

    # The global switch stops every system, and is named first.
    glob = Snapshot(8, {
        "a": _entry(1, "a", KillState("incident", "bad push")),
        "b": _entry(2, "b", KillState("incident")),
    })
    state = stopstate.stop_state(glob)
    assert state.everything is not None
    assert state.everything.reason == "incident"
    assert state.stopped == {"a": "global kill switch engaged: incident; system kill switch engaged: bad push",
                             "b": "global kill switch engaged: incident"}
    assert state.by_slug["a"].reasons == ["global kill switch engaged: incident",
                                          "system kill switch engaged: bad push"]
    assert [s.slug for s in state.killed_systems] == ["a"]  # stopped by its own switch as well


def test_current_knows_who_and_since_and_reads_them_once_per_change(world: World,
                                                                    django_capture_on_commit_callbacks: Any) -> None:
    flip(world, django_capture_on_commit_callbacks, "system", True, "drift in v7", "sup")
    flip(world, django_capture_on_commit_callbacks, "model", True, "stale", "crit", "old-v1")
    state = stopstate.current()
    sup = state.by_slug["sup"]
    assert sup.killed is not None
    assert (sup.killed.reason, sup.killed.by) == ("drift in v7", "admin")
    assert sup.killed.since is not None
    assert sup.killed.since_text
    assert state.stopped == {"sup": "system kill switch engaged: drift in v7 (by admin)"}
    assert state.by_slug["crit"].models_killed["old-v1"].by == "admin"
    assert state.by_slug["crit"].stopped is None
    with CaptureQueriesContext(connection) as seen:
        stopstate.current()
    assert not [q for q in seen.captured_queries if "killswitch" in q["sql"]], "who/since read again"


def test_nothing_engaged_reads_no_switches(world: World) -> None:
    config.cache.current()
    with CaptureQueriesContext(connection) as seen:
        state = stopstate.current()
    assert state.everything is None
    assert state.stopped == {}
    assert not [q for q in seen.captured_queries if "killswitch" in q["sql"]]


# --- the banner: every role, both sides --------------------------------------------------------


def test_anonymous_and_roleless_people_see_no_banner(world: World, django_capture_on_commit_callbacks: Any) -> None:
    flip(world, django_capture_on_commit_callbacks, "global", True, "incident 42")
    from django.test import Client

    r = Client().get("/review/")
    assert r.status_code == 302
    assert r["Location"].startswith("/login/")
    status, text = page(Client(), "/login/")
    assert status == 200
    assert "incident 42" not in text
    assert "stop-status" not in text
    status, text = page(world.person(world.nobody), "/")
    assert status == 403
    assert "incident 42" not in text
    assert "stop-status" not in text
    status, text = page(world.person(world.nobody), "/review/")
    assert status == 403
    assert "incident 42" not in text


@pytest.mark.parametrize(("who", "path"), [
    ("operator", "/review/"), ("operator", "/"), ("editor", "/"), ("editor", "/tokens/"),
    ("admin", "/systems/"), ("admin", "/audit/"), ("admin", "/monitor/sup/"),
])
def test_every_role_sees_the_banner_on_every_page(world: World, django_capture_on_commit_callbacks: Any,
                                                  who: str, path: str) -> None:
    person = world.person(getattr(world, who))
    status, text = page(person, path)
    assert status == 200
    assert 'id="stop-status"' in text
    assert banner_of(text) == ""
    assert "status.js" in text
    flip(world, django_capture_on_commit_callbacks, "global", True, "incident 42")
    flip(world, django_capture_on_commit_callbacks, "system", True, "bad model push", "crit")
    status, text = page(person, path)
    assert status == 200
    b = banner_of(text)
    assert "Everything is stopped:" in b
    assert "<q>incident 42</q>" in b
    assert "by admin" in b
    assert "<time datetime=" in b
    assert "Critical (crit) is stopped:" in b
    assert "<q>bad model push</q>" in b
    assert 'role="alert"' in b


def test_model_kill_switches_show_on_that_systems_pages_only(world: World,
                                                             django_capture_on_commit_callbacks: Any) -> None:
    item = queued_item(world, "crit")
    flip(world, django_capture_on_commit_callbacks, "model", True, "bias found", "crit", "collab-v3")
    op = world.person(world.operator)
    for path in (f"/review/{item.public_id}/", "/monitor/crit/"):
        b = banner_of(page(op, path)[1])
        assert "Model collab-v3 of crit is stopped:" in b, path
        assert "bias found" in b, path
    for path in ("/", "/review/", "/monitor/sup/"):
        assert banner_of(page(op, path)[1]) == "", path


def test_a_reason_with_markup_is_escaped_in_the_banner_and_raw_in_the_push(
        world: World, django_capture_on_commit_callbacks: Any) -> None:
    flip(world, django_capture_on_commit_callbacks, "global", True, XSS)
    flip(world, django_capture_on_commit_callbacks, "system", True, XSS, "sup")
    text = page(world.person(world.operator), "/review/")[1]
    assert "<script>window.__pwned" not in text
    assert htmllib.escape(XSS) in banner_of(text)
    message = events.status_message(stopstate.current())
    assert message["global"]["reason"] == XSS  # data, not markup: the page puts it in with textContent
    assert message["systems"][0]["killed_reason"] == XSS
    script = (Path(settings.BASE_DIR) / "static/js/status.js").read_text()
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "textContent" in script


# --- actions that cannot succeed ---------------------------------------------------------------


@pytest.mark.parametrize(("scope", "system", "words"), [
    ("global", None, "global kill switch engaged: incident 42"),
    ("system", "crit", "system kill switch engaged: incident 42"),
])
def test_approve_is_disabled_with_its_reason_while_the_system_is_stopped(
        world: World, django_capture_on_commit_callbacks: Any, scope: str, system: str | None, words: str) -> None:
    item = queued_item(world, "crit")
    review.claim_item(world.operator, item.id)
    op = world.person(world.operator)
    text = page(op, f"/review/{item.public_id}/")[1]
    assert "disabled" not in approve_button(text)
    assert 'id="approve-blocked" data-blocked-reason="approve" hidden' in text
    assert op.get(f"/review/{item.public_id}/?part=blocked").json() == {"blocked": {}}

    flip(world, django_capture_on_commit_callbacks, scope, True, "incident 42", system)
    text = page(op, f"/review/{item.public_id}/")[1]
    button = approve_button(text)
    assert "disabled" in button
    assert 'aria-describedby="approve-blocked"' in button
    reason = re.search(r'<p class="blocked-reason" id="approve-blocked"[^>]*>(.*?)</p>', text, re.S)
    assert reason
    assert words in reason.group(1)
    assert "reject it, or modify it" in reason.group(1)
    assert re.search(r'<button[^>]*value="reject"[^>]*>', text).group(0).count("disabled") == 0  # type: ignore[union-attr]
    assert re.search(r'<button[^>]*value="modify"[^>]*>', text).group(0).count("disabled") == 0  # type: ignore[union-attr]
    blocked = op.get(f"/review/{item.public_id}/?part=blocked").json()["blocked"]
    assert list(blocked) == ["approve"]
    assert words in blocked["approve"]
    assert review.blocked_actions(ReviewItem.objects.select_related("decision").get(pk=item.pk)) == {
        "approve": blocked["approve"][0].lower() + blocked["approve"][1:-1]}

    # The server still refuses it, with the same words; reject works.
    with pytest.raises(actions.ActionError) as refused:
        review.resolve(world.operator, item.id, "approve")
    assert refused.value.code == "conflict"
    assert words in refused.value.message
    assert ReviewItem.objects.get(pk=item.pk).status == "claimed"
    done = review.resolve(world.operator, item.id, "reject", "stopped")
    assert done.decision.status == "rejected"

    flip(world, django_capture_on_commit_callbacks, scope, False, "fixed", system)
    other = queued_item(world, "crit")
    assert review.blocked_actions(ReviewItem.objects.select_related("decision").get(pk=other.pk)) == {}


def test_another_systems_stop_and_audit_items_leave_approve_alone(world: World,
                                                                  django_capture_on_commit_callbacks: Any) -> None:
    item = queued_item(world, "crit")
    flip(world, django_capture_on_commit_callbacks, "system", True, "drift", "sup")
    assert review.blocked_actions(item) == {}
    flip(world, django_capture_on_commit_callbacks, "global", True, "incident")
    audit_item = ReviewItem(kind=ReviewItem.Kind.AUDIT, status=ReviewItem.Status.OPEN, decision=item.decision,
                            system=item.system)
    assert review.blocked_actions(audit_item) == {}  # confirming an audit releases nothing new
    assert "approve" in review.blocked_actions(item)


def test_every_model_stopped_blocks_approve_too(world: World, django_capture_on_commit_callbacks: Any) -> None:
    item = queued_item(world, "crit")
    flip(world, django_capture_on_commit_callbacks, "model", True, "bias", "crit", "collab-v3")
    assert "every model behind this decision is stopped" in review.blocked_actions(item)["approve"]


def test_queue_marks_rows_of_stopped_systems(world: World, django_capture_on_commit_callbacks: Any) -> None:
    crit, sup = queued_item(world, "crit"), queued_item(world, "sup")
    flip(world, django_capture_on_commit_callbacks, "system", True, "bad push", "crit")
    text = page(world.person(world.operator), "/review/")[1]

    def row(item: ReviewItem) -> str:
        start = text.index(f'data-item="{item.public_id}"')
        return text[start:text.index("</tr>", start)]

    assert 'class="stopped"' in row(crit)
    assert "data-stop-mark" in row(crit)
    assert re.search(r"data-stop-mark[^>]*hidden", row(crit)) is None
    assert 'class="stopped"' not in row(sup)
    assert re.search(r"data-stop-mark[^>]*hidden", row(sup))


# --- the systems list and the overview read the same selector ---------------------------------


def test_systems_list_shows_each_systems_stop_state(world: World, django_capture_on_commit_callbacks: Any) -> None:
    flip(world, django_capture_on_commit_callbacks, "system", True, "drift in v7", "sup")
    flip(world, django_capture_on_commit_callbacks, "model", True, "stale", "auto", "old-v1")
    status, text = page(world.person(world.admin), "/systems/")
    assert status == 200

    def row(slug: str) -> str:
        start = text.index(f'data-stop-system="{slug}"')
        return text[start:text.index("</tr>", start)]

    assert "system kill switch engaged: drift in v7 (by admin)" in row("sup")
    assert re.search(r'data-stop-mark(?! hidden)>killed', row("sup"))
    assert re.search(r'data-run-mark(?! hidden)>running', row("crit"))
    assert "Models stopped: old-v1 — stale (by admin)" in row("auto")
    assert 'class="breaker-state"' in row("crit")
    for who in ("operator", "editor"):
        assert world.person(getattr(world, who)).get("/systems/").status_code == 403


def test_overview_state_comes_from_the_selector(world: World, django_capture_on_commit_callbacks: Any) -> None:
    flip(world, django_capture_on_commit_callbacks, "global", True, "incident 42")
    flip(world, django_capture_on_commit_callbacks, "system", True, "bad push", "crit")
    flip(world, django_capture_on_commit_callbacks, "model", True, "bias", "sup", "collab-v3")
    data = world.person(world.editor).get("/overview/data.json").json()
    assert data["global"] == {"engaged": True, "reason": "incident 42", "by": "admin"}
    by = {s["slug"]: s for s in data["systems"]}
    assert (by["crit"]["killed"], by["crit"]["kill_reason"], by["crit"]["kill_by"]) == (True, "bad push", "admin")
    assert by["sup"]["killed"] is False
    assert by["sup"]["models_killed"] == {"collab-v3": "bias"}


# --- the live push on /ws/status/ --------------------------------------------------------------


def test_status_socket_refuses_anonymous_and_roleless_people(tworld: World) -> None:
    from tests.integration.test_websocket import connect

    assert connect("/ws/status/", headers_for(None))[:2] == (False, 4403)
    assert connect("/ws/status/", headers_for(tworld.nobody))[:2] == (False, 4403)


@pytest.mark.parametrize("who", ["operator", "editor", "admin"])
def test_status_socket_accepts_every_role_and_sends_the_state_on_connect(tworld: World, who: str) -> None:
    headers = headers_for(getattr(tworld, who))

    async def run() -> list[dict[str, Any]]:
        comm = WebsocketCommunicator(application, "/ws/status/", headers=headers)
        accepted, _ = await comm.connect(timeout=TIMEOUT)
        assert accepted
        got = [await comm.receive_json_from(timeout=TIMEOUT) for _ in range(2)]
        await comm.disconnect()
        return got

    hello, status = async_to_sync(run)()
    assert hello == {"type": "hello", "groups": [events.STATUS_GROUP]}
    assert status["type"] == "status"
    assert status["global"] is None
    assert status["stopped"] == {}


def test_a_flip_is_pushed_to_every_page_within_250_ms(tworld: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timed from the flip's commit (its first on-commit step raises the config epoch in Redis) to
    the page receiving the new state."""
    headers = headers_for(tworld.operator)
    committed: list[float] = []
    raise_to = config.redis_epoch.raise_to

    def noted(epoch: int) -> None:
        committed.append(time.monotonic())
        raise_to(epoch)

    monkeypatch.setattr(config.redis_epoch, "raise_to", noted)

    async def next_status(comm: WebsocketCommunicator) -> tuple[dict[str, Any], float]:
        while True:
            m = await comm.receive_json_from(timeout=TIMEOUT)
            if m["type"] == "status":
                return m, time.monotonic()

    async def run() -> list[tuple[dict[str, Any], float]]:
        comm = WebsocketCommunicator(application, "/ws/status/", headers=headers)
        assert (await comm.connect(timeout=TIMEOUT))[0]
        first, _ = await next_status(comm)
        got = []
        set_killswitch = database_sync_to_async(actions.set_killswitch)
        for args in ((tworld.admin, "global", True, XSS), (tworld.admin, "system", True, "bad push", "crit"),
                     (tworld.admin, "global", False, "incident over")):
            done = await set_killswitch(*args)
            if not isinstance(done, KillSwitch):  # a release waiting for a second admin (four eyes)
                second = await database_sync_to_async(second_admin)()
                await database_sync_to_async(actions.approve_release)(second, done.public_id)  # type: ignore[attr-defined]
            m, at = await next_status(comm)
            got.append((m, at - committed[-1]))
        await comm.disconnect()
        return [(first, 0.0), *got]

    (first, _), (engaged, t1), (crit, t2), (released, t3) = async_to_sync(run)()
    assert first["global"] is None
    assert engaged["global"]["reason"] == XSS
    assert engaged["global"]["by"] == "admin"
    assert engaged["global"]["since_text"]
    assert set(engaged["stopped"]) == {"crit", "sup", "auto"}
    assert engaged["epoch"] > first["epoch"]
    assert crit["systems"][0]["slug"] == "crit"
    assert crit["systems"][0]["killed_reason"] == "bad push"
    assert crit["epoch"] > engaged["epoch"]
    assert released["global"] is None
    assert released["stopped"] == {"crit": "system kill switch engaged: bad push (by admin)"}
    for took in (t1, t2, t3):
        assert took < 0.25, f"the push took {took:.3f} s"


def test_a_refused_flip_pushes_no_status(tworld: World) -> None:
    headers = headers_for(tworld.editor)

    async def run() -> bool:
        comm = WebsocketCommunicator(application, "/ws/status/", headers=headers)
        assert (await comm.connect(timeout=TIMEOUT))[0]
        await comm.receive_json_from(timeout=TIMEOUT)
        await comm.receive_json_from(timeout=TIMEOUT)
        with pytest.raises(actions.ActionError):
            await database_sync_to_async(actions.set_killswitch)(tworld.admin, "global", True, "  ")
        quiet = await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()
        return quiet

    assert async_to_sync(run)() is True
