"""The review queue on a 390 px phone: no sideways scrolling, a real label on every field, filters
that work; and the list's total follows the queue live (the monitoring job's push)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.db import connection
from playwright.sync_api import Page, expect

from dashboards import monitoring
from tests.conftest import World, decision_body

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}

UNLABELLED = """() => [...document.querySelectorAll("main input, main select, main textarea")]
    .filter((el) => el.type !== "hidden")
    .filter((el) => !el.labels || !el.labels.length || !el.labels[0].textContent.trim())
    .map((el) => el.outerHTML.slice(0, 80))"""


def send(live_server_url: str, world: World, slug: str, confidence: float, **extra: Any) -> dict[str, Any]:
    r = httpx.post(f"{live_server_url}/api/v1/systems/{slug}/decisions", json=decision_body(confidence, **extra),
                   headers={"Authorization": f"Bearer {world.keys[slug]}"}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def tick() -> None:
    """Run the monitoring job once, in a thread of its own (Playwright's loop holds this one)."""

    def run() -> None:
        try:
            monitoring.run_route_counts()
        finally:
            connection.close()

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=30)


def test_the_queue_fits_a_phone_with_labels_and_filters(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    long_output = {"items": [f"track-with-a-rather-long-identifier-{i}" for i in range(12)]}
    send(live_server_url, world, "crit", 0.9, subject="applicant-" + "x" * 120)
    send(live_server_url, world, "sup", 0.3, subject="listener-42",
         prediction={"output": long_output, "confidence": 0.3, "model": "collab-v3"})
    page = login_as(world.operator, "/review/")
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    page.reload()
    expect(page.locator("#queue tr[data-item]")).to_have_count(2)

    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.evaluate(UNLABELLED) == []
    # The filters fold away on a phone, rows first; one tap opens them.
    expect(page.get_by_label("System", exact=True)).to_be_hidden()
    page.locator("#queue-filter-box > summary").click()
    for name in ("System", "Kind", "Level", "Reason contains", "Older than (minutes)", "Subject or decision id"):
        expect(page.get_by_label(name, exact=True)).to_be_visible()
    # Each row is a tile with its key facts and its link on screen.
    row = page.locator("#queue tr[data-item]").filter(has_text="listener-42")
    row.scroll_into_view_if_needed()
    expect(row.locator('td[data-label="Due"]')).to_be_in_viewport()
    for text in ("sup", "listener-42", "track-with-a-rather-long-identifier-0", "0.3", "open"):
        expect(row).to_contain_text(text)
    link = row.get_by_role("link", name="Open")
    expect(link).to_be_in_viewport()
    box = link.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= PHONE["width"]

    page.get_by_label("System", exact=True).select_option("sup")
    page.get_by_label("Subject or decision id").fill("listener")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    assert "system=sup" in page.url
    assert "q=listener" in page.url
    expect(page.locator("#queue tr[data-item]")).to_have_count(1)
    expect(page.locator("#queue")).to_contain_text("listener-42")
    expect(page.locator("#queue-total")).to_have_text("1")
    expect(page.get_by_label("System", exact=True)).to_have_value("sup")  # applied filters stay open and shown
    expect(page.get_by_role("button", name="Review next (sup)")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_the_total_follows_new_items_live(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    send(live_server_url, world, "crit", 0.9)
    everything = login_as(world.operator, "/review/")
    expect(everything.locator("#live")).to_have_text("live")
    expect(everything.locator("#queue-total")).to_have_text("1")
    expect(everything.get_by_label("System", exact=True)).to_be_visible()  # at desk width the filters show
    everything.evaluate("window.__notReloaded = true")
    # A list filtered by more than its system counts its own figures (asked when a push arrives).
    filtered = login_as(world.operator, "/review/?system=sup&reason=threshold")
    expect(filtered.locator("#live")).to_have_text("live")
    expect(filtered.locator("#queue-total")).to_have_text("0")

    send(live_server_url, world, "sup", 0.2)
    send(live_server_url, world, "sup", 0.3)
    tick()  # the monitoring job's tick: queue depths pushed over /ws/overview/

    expect(everything.locator("#queue-total")).to_have_text("3")
    expect(filtered.locator("#queue-total")).to_have_text("2")
    expect(everything.locator("#queue-refresh")).to_be_visible()
    assert everything.evaluate("window.__notReloaded") is True  # pushed, not reloaded
    expect(everything.locator("#queue-oldest")).to_have_text(re.compile(r"^\d+ s$"))
