"""Requirement (b): a level-1 decision waits for a person; an operator reviews it in the browser
and the client service reads the person's verdict through the API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body

pytestmark = pytest.mark.browser


def api(live_server_url: str, world: World, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method, f"{live_server_url}/api/v1{path}", json=body,
        headers={"Authorization": f"Bearer {world.keys['crit']}"}, timeout=10,
    )


def submit(live_server_url: str, world: World, subject: str, confidence: float = 0.62) -> dict[str, Any]:
    body = decision_body(
        confidence,
        subject=subject,
        context={"channel": "branch-7", "amount_eur": 12500},
        features={"income": 48000.0, "history": "clean"},
        prediction={"output": {"decision": "approve", "limit": 12500}, "confidence": confidence,
                    "model": "credit-gbm-4"},
    )
    r = api(live_server_url, world, "POST", "/systems/crit/decisions", body)
    assert r.status_code == 201, r.text
    decision = r.json()
    assert decision["status"] == "pending_review"
    assert decision["route"] == "human"
    assert decision["output"] is None  # nothing leaves before a person approves
    return decision


def read(live_server_url: str, world: World, decision_id: str) -> dict[str, Any]:
    r = api(live_server_url, world, "GET", f"/decisions/{decision_id}")
    assert r.status_code == 200, r.text
    return r.json()


def item_of(decision: dict[str, Any]) -> ReviewItem:
    return ReviewItem.objects.get(decision_id=decision["id"].removeprefix("dec_"))


def open_and_claim(page: Page, decision: dict[str, Any], subject: str) -> None:
    """From the queue: find the decision's row, open it, claim it."""
    item = item_of(decision)
    page.goto("/review/")
    row = page.locator(f'#queue tr[data-item="{item.public_id}"]')
    expect(row).to_contain_text(subject)
    expect(row).to_contain_text("crit")
    expect(row).to_contain_text("open")
    row.get_by_role("link", name="Open").click()
    page.wait_for_url(f"**/review/{item.public_id}/")
    with page.expect_navigation():
        page.get_by_role("button", name="Claim and review").click()
    expect(page.locator("#resolve-form")).to_be_visible()


def test_operator_approves_a_level_1_decision_and_the_client_reads_the_result(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    decision = submit(live_server_url, world, "applicant-8841")
    page = login_as(world.operator, "/review/")
    expect(page).to_have_url(f"{live_server_url}/review/")

    open_and_claim(page, decision, "applicant-8841")
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text(decision["id"])
    expect(facts).to_contain_text("applicant-8841")
    expect(facts).to_contain_text("credit-gbm-4")
    expect(facts).to_contain_text("0.62")
    expect(page.locator("#decision-status")).to_have_text("pending_review (route human)")
    for reason in decision["reasons"]:
        expect(facts).to_contain_text(reason)
    cols = page.locator("div.cols")
    expect(cols.locator("div", has=page.get_by_role("heading", name="Context"))).to_contain_text('"branch-7"')
    expect(cols.locator("div", has=page.get_by_role("heading", name="Features"))).to_contain_text('"income": 48000.0')
    prediction = cols.locator("div", has=page.get_by_role("heading", name="Prediction"))
    expect(prediction).to_contain_text('"approve"')
    expect(prediction).to_contain_text('"confidence": 0.62')

    page.locator("#note").fill("income verified by phone")
    with page.expect_navigation():
        page.get_by_role("button", name="Approve").click()
    expect(page.locator(".messages")).to_contain_text(f"{decision['id']}: approved")
    expect(page.locator(".messages")).to_contain_text("the queue is empty")  # it moved on to the next item

    after = read(live_server_url, world, decision["id"])
    assert after["status"] == "released"
    assert after["output"] == {"decision": "approve", "limit": 12500}
    assert after["review"]["action"] == "approve"
    assert after["review"]["note"] == "income verified by phone"
    assert after["review"]["by"] == "operator"
    assert any("approved by operator: income verified by phone" in r for r in after["reasons"])
    # The queue no longer lists it; the operator's own recent list does, with the note.
    expect(page.locator(f'#queue tr[data-item="{item_of(decision).public_id}"]')).to_have_count(0)
    expect(page.get_by_role("heading", name="You resolved recently")).to_be_visible()
    expect(page.locator("main")).to_contain_text(f"{decision['id']} · approve — income verified by phone")


def test_operator_rejects_and_the_client_gets_the_fallback(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    decision = submit(live_server_url, world, "applicant-0007", confidence=0.41)
    page = login_as(world.operator, "/review/")
    open_and_claim(page, decision, "applicant-0007")
    page.locator("#note").fill("income not verifiable")
    with page.expect_navigation():
        page.get_by_role("button", name="Reject").click()
    expect(page.locator(".messages")).to_contain_text(f"{decision['id']}: rejected")

    after = read(live_server_url, world, decision["id"])
    assert after["status"] == "rejected"
    assert after["output"] == {"decision": "refer"}  # the system's fallback
    assert after["review"]["action"] == "reject"
    assert after["review"]["note"] == "income not verifiable"

    # Opening it again shows the verdict, with no way to act on it twice.
    page.goto(f"/review/{item_of(decision).public_id}/")
    expect(page.locator("main")).to_contain_text("Resolved: reject by operator")
    expect(page.locator("main")).to_contain_text("income not verifiable")
    expect(page.locator("#resolve-form")).to_have_count(0)
    expect(page.get_by_role("button", name="Claim and review")).to_have_count(0)


def test_keyboard_n_claims_and_a_approves_then_the_next_item_opens(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    first = submit(live_server_url, world, "applicant-1001")
    second = submit(live_server_url, world, "applicant-1002")
    page = login_as(world.operator, "/review/")
    expect(page.locator("#queue")).to_contain_text("applicant-1002")
    # "n" on the queue claims the next item (the one due first) and opens it.
    page.locator("h1").click()
    with page.expect_navigation():
        page.keyboard.press("n")
    page.wait_for_url(f"**/review/{item_of(first).public_id}/")
    expect(page.locator("#resolve-form")).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text("applicant-1001")

    # Typing an "a" in the note is text, not a shortcut.
    page.locator("#note").click()
    page.keyboard.type("a quick look: fine")
    expect(page.locator("#note")).to_have_value("a quick look: fine")
    assert item_of(first).status == ReviewItem.Status.CLAIMED
    page.locator("h1").click()  # focus leaves the note
    # Browser shortcuts are not review shortcuts: select-all (Ctrl+A) must not approve.
    page.keyboard.press("Control+a")
    page.wait_for_timeout(300)
    assert page.url.endswith(f"/review/{item_of(first).public_id}/")
    assert item_of(first).status == ReviewItem.Status.CLAIMED
    with page.expect_navigation():
        page.keyboard.press("a")
    second_item = item_of(second)
    page.wait_for_url(f"**/review/{second_item.public_id}/")
    expect(page.locator("dl.facts")).to_contain_text("applicant-1002")
    expect(page.locator("#resolve-form")).to_be_visible()  # already claimed for this operator
    second_item.refresh_from_db()
    assert second_item.status == ReviewItem.Status.CLAIMED
    assert second_item.claimed_by_id == world.operator.pk

    after = read(live_server_url, world, first["id"])
    assert after["status"] == "released"
    assert after["output"] == {"decision": "approve", "limit": 12500}
    assert after["review"]["note"] == "a quick look: fine"
    assert read(live_server_url, world, second["id"])["status"] == "pending_review"


def test_modified_output_is_what_the_client_gets(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    decision = submit(live_server_url, world, "applicant-2002")
    page = login_as(world.operator, "/review/")
    open_and_claim(page, decision, "applicant-2002")
    page.locator("summary", has_text="Modify the output instead").click()
    output = page.get_by_label("Output to release (JSON)")
    assert json.loads(output.input_value()) == {"decision": "approve", "limit": 12500}  # proposed: the prediction
    output.fill(json.dumps({"decision": "approve", "limit": 5000}))
    page.locator("#note").fill("lower limit")
    with page.expect_navigation():
        page.get_by_role("button", name="Release modified output").click()
    expect(page.locator(".messages")).to_contain_text(f"{decision['id']}: modified and released")
    after = read(live_server_url, world, decision["id"])
    assert after["status"] == "released"
    assert after["output"] == {"decision": "approve", "limit": 5000}
    assert after["review"]["action"] == "modify"
    assert after["review"]["note"] == "lower limit"
