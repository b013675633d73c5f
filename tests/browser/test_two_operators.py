"""Two operators work the same queue at once, each in a browser of their own: each asks for the next
item (the ``n`` key, the "Review next" button) and approves it (``a``, which opens their next one),
both at the same moment. They never hold the same item, and together they work every one."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from oversight.models import AuditEvent
from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body

ITEMS = 10
ITEM_URL = re.compile(r"/review/(rev_[0-9a-f]{32})/")


def api(live_server_url: str, world: World, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{live_server_url}/api/v1{path}", json=body,
                         headers={"Authorization": f"Bearer {world.keys['crit']}"}, timeout=10)


def held_item(page: Page) -> str | None:
    """The item this page shows as the operator's own (claimed, with the resolve form), or None when
    it is the queue saying there is nothing left."""
    page.wait_for_load_state()
    found = ITEM_URL.search(page.url)
    if found is None:
        expect(page.locator(".messages")).to_contain_text("the queue is empty")
        return None
    expect(page.locator("#resolve-form")).to_be_visible()
    expect(page.locator("#lease")).to_have_attribute("data-item", found.group(1))
    return found.group(1)


def test_two_operators_never_get_the_same_item_and_work_them_all(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    second = get_user_model().objects.create_user("operator2", password=world.password)
    second.groups.add(Group.objects.get(name="operator"))
    made = []
    for i in range(ITEMS):
        r = api(live_server_url, world, "POST", "/systems/crit/decisions", decision_body(0.9, subject=f"applicant-{i}"))
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])

    one = login_as(world.operator, "/review/")
    two = login_as(second, "/review/")
    for page in (one, two):
        expect(page.locator("#queue tbody tr")).to_have_count(ITEMS)

    # Both ask for the next item at the same moment: one with the key, one with the button.
    one.locator("h1").click()
    one.keyboard.press("n")
    two.get_by_role("button", name="Review next").click()
    for page in (one, two):
        page.wait_for_url(ITEM_URL)
    pages = {"operator": one, "operator2": two}
    held = {who: held_item(page) for who, page in pages.items()}
    worked: dict[str, list[str]] = {who: [] for who in pages}

    for _ in range(ITEMS + 2):  # bounded: each round works at least one item
        holding = {who: item for who, item in held.items() if item is not None}
        if not holding:
            break
        mine = list(holding.values())
        assert len(set(mine)) == len(mine), f"the same item in two hands: {holding}"
        # Both approve at once; each approval opens that person's next item (or the empty queue).
        for who in holding:
            pages[who].locator("h1").click()
        before = {who: pages[who].url for who in holding}
        for who in holding:
            pages[who].keyboard.press("a")
        for who, item in holding.items():
            was = before[who]
            pages[who].wait_for_url(lambda url: url != was)  # noqa: B023 — used before the loop moves on
            worked[who].append(item)
            held[who] = held_item(pages[who])
    assert held == {"operator": None, "operator2": None}

    everything = [ReviewItem.objects.get(decision_id=d.removeprefix("dec_")).public_id for d in made]
    assert sorted(worked["operator"] + worked["operator2"]) == sorted(everything)  # all of them, each once
    assert set(worked["operator"]).isdisjoint(worked["operator2"])
    assert worked["operator"]  # both did some of the work
    assert worked["operator2"]
    for who, items in worked.items():
        for item in items:
            row = ReviewItem.objects.select_related("resolved_by").get(id=item.removeprefix("rev_"))
            assert row.resolved_by is not None
            assert (row.status, row.action, row.resolved_by.username) == ("resolved", "approve", who)
    # Each item was claimed once, by the one who approved it: nobody's claim was taken over.
    claims = AuditEvent.objects.filter(action="lease.claim")
    assert sorted(e.data["item"] for e in claims) == sorted(everything)
    assert {e.data["item"]: e.actor_label for e in claims} == {i: who for who, items in worked.items() for i in items}
    for d in made:
        r = api(live_server_url, world, "GET", f"/decisions/{d}")
        assert r.json()["status"] == "released"

    # Nothing left for either of them.
    one.locator("h1").click()
    with one.expect_navigation():
        one.keyboard.press("n")
    expect(one.locator(".messages")).to_contain_text("the queue is empty")
    with two.expect_navigation():
        two.get_by_role("button", name="Review next").click()
    expect(two.locator(".messages")).to_contain_text("the queue is empty")
