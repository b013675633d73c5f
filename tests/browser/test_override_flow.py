"""An operator overrides a released level-2 decision from its page: found by its id on /decisions/,
a new output and a note typed in, the client reads the new output through the API, and the
client's webhook receiver (turning the first try away) gets the signed ``decision.overridden``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from oversight import actions
from tests.browser.conftest import console_errors
from tests.conftest import World, decision_body
from tests.integration.test_webhooks import Receiver, verify, wait_rows_delivered

NEW_OUTPUT = {"items": ["calm-1", "calm-2"], "why": "quiet hours"}
PHONE = {"width": 390, "height": 844}
DESK = {"width": 1280, "height": 720}


def api(base: str, auth: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{base}/api/v1{path}", json=body, headers={"Authorization": auth}, timeout=10)


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width} px wide at {PHONE['width']} px"


def test_operator_overrides_a_released_decision_and_the_client_is_told(
    live_world: World, live_server_url: str, login_as: Callable[..., Page], celery_worker_proc: Any
) -> None:
    world = live_world
    hook = Receiver(fail_first=1)
    try:
        # The client service's side: a callback URL and a signing secret (an admin's script).
        _, token = actions.create_personal_token(world.admin, "setup")
        admin = f"Token {token}"
        r = api(live_server_url, admin, "PATCH", "/systems/sup", {"callback_url": hook.url, "reason": "hooks"})
        assert r.status_code == 200, r.text
        r = api(live_server_url, admin, "POST", "/systems/sup/webhook-secret")
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]

        client = f"Bearer {world.keys['sup']}"
        r = api(live_server_url, client, "POST", "/systems/sup/decisions",
                decision_body(0.9, subject="listener-2207", context={"hour": 2, "activity": "sleep"}))
        assert r.status_code == 201, r.text
        made = r.json()
        assert (made["status"], made["route"]) == ("released", "auto")

        page = login_as(world.operator, "/decisions/")
        errors = console_errors(page)
        page.get_by_label("Decision id or subject").fill(made["id"])
        with page.expect_navigation():
            page.get_by_role("button", name="Find").click()
        page.wait_for_url(f"**/decisions/{made['id']}/")
        expect(page.locator("#decision-id")).to_have_text(made["id"])
        expect(page.locator("#decision-status")).to_have_text("released")
        page.set_viewport_size(PHONE)  # type: ignore[arg-type]
        expect(page.locator("#override-form")).to_be_visible()
        no_horizontal_scroll(page)  # the form fits a phone too
        page.set_viewport_size(DESK)  # type: ignore[arg-type]
        output = page.locator("textarea#output")
        assert json.loads(output.input_value()) == made["output"]  # proposed: what the client has now

        output.fill(json.dumps(NEW_OUTPUT))
        page.locator("textarea#note").fill("asleep: nothing loud at 2 am")
        with page.expect_navigation():
            page.locator("#override-submit").click()
        page.wait_for_url(f"**/decisions/{made['id']}/")
        expect(page.locator(".messages")).to_contain_text(f"{made['id']}: overridden at")
        expect(page.locator(".messages")).to_contain_text("The client is told by webhook.")
        expect(page.locator("#decision-status")).to_have_text("overridden")
        expect(page.locator("#decision-output")).to_contain_text('"quiet hours"')
        expect(page.locator("#override-refused")).to_contain_text("this one is overridden")
        expect(page.locator("#override-form")).to_have_count(0)

        r = api(live_server_url, client, "GET", f"/decisions/{made['id']}")
        assert r.status_code == 200
        seen = r.json()
        assert (seen["status"], seen["output"]) == ("overridden", NEW_OUTPUT)
        assert (seen["review"]["action"], seen["review"]["by"], seen["review"]["note"]) == (
            "override", "operator", "asleep: nothing loud at 2 am")

        # The receiver said 503 to the first try; the retry (2 s later) got through, signed.
        got = hook.wait_delivered(1, timeout=15)
    finally:
        hook.close()
    [(delivery, hits)] = got.items()
    assert [h.answered for h in hits] == [503, 200]
    assert {h.body for h in hits} == {hits[0].body}
    assert hits[0].event == "decision.overridden"
    assert verify(secret, hits[0])
    assert hits[0].json() == {"event": "decision.overridden", "decision": seen}

    # The page lists the delivery (the worker records it just after the receiver's 200).
    assert [str(w.id) for w in wait_rows_delivered(1)] == [delivery]
    page.reload()
    row = page.locator("#deliveries tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("decision.overridden")
    expect(row).to_contain_text("delivered")
    expect(row).to_contain_text(delivery)

    # On a phone: no sideways scrolling, on the decision nor on the search.
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    page.reload()
    expect(page.locator("#decision-status")).to_have_text("overridden")
    no_horizontal_scroll(page)
    page.goto("/decisions/?q=listener-2207")
    expect(page.locator("#decisions")).to_contain_text(made["id"])
    no_horizontal_scroll(page)
    assert errors == []
