"""The review item's page by keyboard, and a lease that follows the person: an operator works a
system's items with keys only while other systems' items wait too, the filter kept; closing the
tab gives the item back; the lease timer counts down and the heartbeat renews it; ? lists the keys."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from oversight.models import Decision
from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body
from tests.integration.test_review_api import new_operator

pytestmark = pytest.mark.browser

ITEM_URL = re.compile(r".*/review/rev_[0-9a-f]{32}/\?system=sup$")


def batch(live_server_url: str, world: World, slug: str, n: int, confidence: float) -> None:
    items = [decision_body(confidence, subject=f"{slug}-{i:02d}") for i in range(n)]
    r = httpx.post(f"{live_server_url}/api/v1/systems/{slug}/decisions/batch", json={"items": items},
                   headers={"Authorization": f"Bearer {world.keys[slug]}"}, timeout=10)
    assert r.status_code == 200, r.text


def current_item(page: Page) -> ReviewItem:
    public_id = page.url.split("/review/")[1].split("/")[0]
    return ReviewItem.objects.select_related("system").get(id=public_id.removeprefix("rev_"))


def operator2(world: World) -> Any:
    user = new_operator("operator2")
    user.set_password(world.password)
    user.save(update_fields=["password"])
    return user


def wait_for(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_an_operator_works_20_items_of_one_system_by_keyboard_only_and_the_filter_stays(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    batch(live_server_url, world, "crit", 5, 0.9)  # level 1: first in the unfiltered queue
    batch(live_server_url, world, "sup", 20, 0.1)
    page = login_as(world.operator, "/review/?system=sup")
    page.locator("h1").click()
    with page.expect_navigation():
        page.keyboard.press("n")
    worked: list[ReviewItem] = []
    looked_back = False
    for i in range(20):
        expect(page).to_have_url(ITEM_URL)
        item = current_item(page)
        assert item.system.slug == "sup"
        assert item.claimed_by_id == world.operator.pk
        expect(page.locator("#lease")).to_contain_text("left on your lease")
        if i == 7:  # modify: M opens the editor, the keyboard edits and sends it
            page.keyboard.press("m")
            output = page.locator("#output")
            expect(output).to_be_focused()
            page.keyboard.press("Control+a")
            page.keyboard.type(json.dumps({"items": ["t7"]}))
            page.keyboard.press("Tab")
            expect(page.locator("#modify-submit")).to_be_focused()
            with page.expect_navigation():
                page.keyboard.press("Enter")
        elif i == 12 and not looked_back:  # K: the item resolved before; J: on to the next of sup
            with page.expect_navigation():
                page.keyboard.press("k")
            expect(page.locator("main")).to_contain_text(f"Resolved: {worked[-1].action}")
            assert current_item(page).id == worked[-1].id
            # Leaving the item's page gave it back: it is open again for whoever comes next.
            assert wait_for(lambda left=item.id: ReviewItem.objects.get(id=left).status == "open")
            with page.expect_navigation():
                page.keyboard.press("j")
            assert current_item(page).id == item.id  # the item left open for a look back comes back
            looked_back = True
            with page.expect_navigation():
                page.keyboard.press("a")
        else:
            with page.expect_navigation():
                page.keyboard.press("r" if i % 5 == 4 else "a")
        item.refresh_from_db()
        assert item.status == "resolved"
        worked.append(item)
    expect(page).to_have_url(f"{live_server_url}/review/?system=sup")
    expect(page.locator(".messages")).to_contain_text("the queue is empty: nothing of sup waits")
    assert {i.id for i in worked} == set(ReviewItem.objects.filter(system__slug="sup").values_list("id", flat=True))
    actions = [i.action for i in worked]
    assert (actions.count("approve"), actions.count("reject"), actions.count("modify")) == (15, 4, 1)
    modified = next(i for i in worked if i.action == "modify")
    assert Decision.objects.get(id=modified.decision_id).output == {"items": ["t7"]}
    # The other system's items were never touched.
    assert list(ReviewItem.objects.filter(system__slug="crit").values_list("status", flat=True)) == ["open"] * 5


def test_closing_the_tab_gives_the_item_back_and_a_reload_keeps_it(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    batch(live_server_url, world, "crit", 1, 0.9)
    item = ReviewItem.objects.get()
    page = login_as(world.operator, f"/review/{item.public_id}/")
    with page.expect_navigation():
        page.get_by_role("button", name="Claim and review").click()
    expect(page.locator("#lease")).to_contain_text("left on your lease")
    item.refresh_from_db()
    assert item.claimed_by_id == world.operator.pk

    page.reload()  # gives it back on the way out, takes it again on the way in
    expect(page.locator("#lease")).to_contain_text("left on your lease")
    # (the give-back may land after the reloaded page: its first heartbeat, a second later, takes it again)
    page.wait_for_timeout(1500)
    assert wait_for(lambda: ReviewItem.objects.filter(id=item.id, status="claimed",
                                                      claimed_by=world.operator).exists())

    page.close(run_before_unload=True)
    assert wait_for(lambda: ReviewItem.objects.get(id=item.id).status == "open")
    item.refresh_from_db()
    assert item.claimed_by_id is None
    # Another operator gets it at once.
    other = login_as(operator2(world), f"/review/{item.public_id}/")
    with other.expect_navigation():
        other.get_by_role("button", name="Claim and review").click()
    expect(other.locator("#lease")).to_contain_text("left on your lease")
    item.refresh_from_db()
    assert item.claimed_by.username == "operator2"


def test_the_lease_timer_counts_down_and_the_heartbeat_renews_it(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    batch(live_server_url, world, "crit", 1, 0.9)
    item = ReviewItem.objects.get()
    page = login_as(world.operator, f"/review/{item.public_id}/")
    with page.expect_navigation():
        page.get_by_role("button", name="Claim and review").click()
    left = page.locator("#lease-left")
    expect(left).to_have_text(re.compile(r"^4:5\d$|^5:00$"))
    expect(left).to_have_text(re.compile(r"^4:5[0-6]$"), timeout=8000)  # it counts down
    # The next heartbeat (here on coming back to the tab) renews the lease to the full 5 minutes,
    # and the timer shows so.
    ReviewItem.objects.filter(id=item.id).update(lease_expires_at=timezone.now() + timedelta(seconds=30))
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    expect(left).to_have_text(re.compile(r"^4:5[89]$|^5:00$"))
    assert wait_for(lambda: ReviewItem.objects.get(id=item.id).lease_expires_at
                    > timezone.now() + timedelta(seconds=280))
    # Someone else took it after the lease lapsed: the page says so at the next heartbeat.
    other = operator2(world)
    ReviewItem.objects.filter(id=item.id).update(claimed_by=other,
                                                 lease_expires_at=timezone.now() + timedelta(minutes=5))
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    expect(page.locator("#lease")).to_contain_text("Claimed by operator2")
    expect(page.locator("#lease")).to_have_attribute("role", "alert")


def test_question_mark_lists_the_keys_and_keys_are_text_in_the_note(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    batch(live_server_url, world, "crit", 1, 0.9)
    item = ReviewItem.objects.get()
    page = login_as(world.operator, f"/review/{item.public_id}/")
    with page.expect_navigation():
        page.get_by_role("button", name="Claim and review").click()
    for name in ("Approve (A)", "Reject (R)", "Give back (G)", "Next (J)", "Keys (?)"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
    page.locator("#note").click()
    page.keyboard.type("?ajkrgm")  # typing, not keys
    expect(page.locator("#note")).to_have_value("?ajkrgm")
    expect(page.get_by_role("dialog")).to_have_count(0)
    page.locator("h1").click()
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keys on this page")
    expect(dialog).to_be_visible()
    for key, what in (("A", "approve"), ("R", "reject"), ("M", "modify"), ("G", "give back"), ("J", "next"),
                      ("K", "previous"), ("?", "this list")):
        expect(dialog.locator("dt", has_text=key).first).to_be_visible()
        expect(dialog).to_contain_text(what)
    expect(page.get_by_role("button", name="Close")).to_be_focused()
    page.keyboard.press("a")  # the dialog is open: keys wait
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    item.refresh_from_db()
    assert item.status == "claimed"
    # K with nothing resolved before says so; G gives the item back.
    page.keyboard.press("k")
    expect(page.locator("#key-status")).to_have_text("No earlier item: you have not resolved one before this one.")
    with page.expect_navigation():
        page.keyboard.press("g")
    expect(page.locator(".messages")).to_contain_text("lease given back")
    item.refresh_from_db()
    assert (item.status, item.claimed_by_id) == ("open", None)
