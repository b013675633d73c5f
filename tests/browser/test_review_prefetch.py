"""The next item is prefetched (issue 11): the open item's page fetches the page of the item the
person's next claim would take, claiming nothing; approve sends the browser to that copy once the
server has claimed the item for them, and an item someone else took meanwhile is never shown."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from oversight.models import AuditEvent
from reviewqueue import actions
from reviewqueue.models import ReviewItem
from tests.browser.test_review_keys import ITEM_URL, batch, current_item, operator2
from tests.conftest import World

pytestmark = pytest.mark.browser


@pytest.fixture
def working(live_world: World, live_server_url: str, login_as: Callable[..., Page]
            ) -> tuple[Page, ReviewItem, ReviewItem]:
    """Three items of ``sup``; the operator claimed the first by N and its page holds the next one's:
    the page, the item, the one prefetched."""
    batch(live_server_url, live_world, "sup", 3, 0.1)
    page = login_as(live_world.operator, "/review/?system=sup")
    page.locator("h1").click()
    with page.expect_navigation():
        page.keyboard.press("n")
    expect(page.locator("body[data-next-ready]")).to_have_count(1)
    ready = page.locator("body").get_attribute("data-next-ready") or ""
    return page, current_item(page), ReviewItem.objects.get(id=ready.removeprefix("rev_"))


def test_approve_opens_the_prefetched_next_item_claimed_for_the_person(live_world: World, working) -> None:
    world = live_world
    page, item, upcoming = working
    assert upcoming.id != item.id
    assert upcoming.status == "open"  # prefetching took nothing
    with page.expect_navigation():
        page.keyboard.press("a")
    expect(page).to_have_url(ITEM_URL)  # the address without the prefetch marker
    assert current_item(page).id == upcoming.id
    # The page shown is the copy fetched before the key: nothing came over the network for it.
    assert page.evaluate("performance.getEntriesByType('navigation')[0].transferSize") == 0
    expect(page.locator(".messages")).to_contain_text(f"dec_{item.decision_id.hex}: approved")
    expect(page.locator("#lease")).to_contain_text("left on your lease")
    item.refresh_from_db()
    upcoming.refresh_from_db()
    assert (item.status, item.action) == ("resolved", "approve")
    assert (upcoming.status, upcoming.claimed_by_id) == ("claimed", world.operator.pk)
    assert AuditEvent.objects.filter(action="lease.claim", data__item=upcoming.public_id).count() == 1
    # K goes back to the item just resolved, as on a page loaded the usual way.
    with page.expect_navigation():
        page.keyboard.press("k")
    assert current_item(page).id == item.id


def test_a_prefetched_item_someone_else_took_is_never_shown(live_world: World, working) -> None:
    world = live_world
    page, item, upcoming = working
    other = operator2(world)
    actions.claim_item(other, upcoming.id)  # a second operator takes it while the first one reads
    with page.expect_navigation():
        page.keyboard.press("a")
    expect(page).to_have_url(ITEM_URL)
    shown = current_item(page)
    assert shown.id not in (item.id, upcoming.id)
    assert shown.claimed_by_id == world.operator.pk
    expect(page.locator(".messages")).to_contain_text(f"dec_{item.decision_id.hex}: approved")
    upcoming.refresh_from_db()
    assert upcoming.claimed_by_id == other.pk
