"""Editors' curated picks in Chromium: an editor pins an item for activity=sleep on "sup" through the
page, in the browser's own time zone; the system's next decision for that context carries it and
names the pick; the preview shows it; removing asks first; nothing overflows on a phone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, expect

from oversight.models import AuditEvent, Pick
from tests.browser.conftest import TIMEOUT_MS, login
from tests.conftest import World

pytestmark = pytest.mark.browser

ZONE = "Asia/Tokyo"  # not the server's (UTC): times typed on the page are read in the browser's zone


@pytest.fixture
def tokyo(browser: Browser, live_server_url: str) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=live_server_url, timezone_id=ZONE)
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


def decide(live_server_url: str, world: World, activity: str) -> Any:
    r = httpx.post(
        f"{live_server_url}/api/v1/systems/sup/decisions",
        json={"subject": "listener-1", "context": {"activity": activity},
              "prediction": {"output": {"items": ["a", "b"]}, "confidence": 0.9}},
        headers={"Authorization": f"Bearer {world.keys['sup']}"}, timeout=10,
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_an_editor_pins_an_item_and_the_next_decision_carries_it(
    live_world: World, live_server_url: str, tokyo: BrowserContext
) -> None:
    errors: list[str] = []
    tokyo.on("weberror", lambda e: errors.append(str(e.error)))
    page = login(tokyo, "editor", live_world.password, "/editorial/")
    page.get_by_role("link", name="Curated picks").first.click()
    page.locator('tr[data-system="sup"]').get_by_role("link", name="Picks & blocks").click()
    expect(page.get_by_role("heading", name="Picks and blocks: Supervised")).to_be_visible()

    form = page.locator("form[aria-labelledby=new-pick]")
    expect(form.locator("[data-tz-label]")).to_have_text(ZONE)
    form.get_by_label("Item").fill("t42")
    form.get_by_label("Position").fill("1")
    form.get_by_label("Context").fill("activity=sleep")
    form.get_by_label("Starts").fill("2026-01-01T09:00")  # 09:00 in Tokyo is 00:00 UTC
    form.get_by_label("Note").fill("sleep playlist launch")
    form.get_by_role("button", name="Add pick").click()
    expect(page.locator(".messages")).to_contain_text("at position 1 for activity=sleep")

    pick = Pick.objects.get()
    pick_id = f"pck_{pick.pk}"
    assert pick.starts_at == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert pick.context == {"activity": "sleep"}
    assert AuditEvent.objects.filter(action="pick.create", target=pick_id, actor_label="editor").count() == 1
    row = page.locator(f'table[data-kind=pick] tr[data-id="{pick_id}"]')
    expect(row).to_contain_text("t42")
    expect(row).to_contain_text("2026-01-01 09:00 JST")  # shown back in the browser's zone

    answer = decide(live_server_url, live_world, "sleep")
    assert answer["output"] == {"items": ["t42", "a"]}
    assert f"editor pick {pick_id}: t42 at position 1 for activity=sleep (by editor)" in answer["reasons"]
    assert decide(live_server_url, live_world, "run")["output"] == {"items": ["a", "b"]}

    preview = page.locator("#preview form")
    preview.get_by_label("Context").fill("activity=sleep")
    preview.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview-curated li").first).to_have_text("t42")
    expect(page.locator("#preview-reasons")).to_contain_text(pick_id)

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    asked: list[str] = []

    def answer_dialog(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer_dialog)
    row.get_by_role("button", name=f"Remove pick {pick_id}").click()
    expect(page.locator(".messages")).to_contain_text(f"{pick_id} removed")
    assert asked == [f"Remove pick {pick_id} (t42)?"]
    expect(page.locator(f'table[data-kind=pick] tr[data-id="{pick_id}"][data-state="active"]')).to_have_count(0)
    assert decide(live_server_url, live_world, "sleep")["output"] == {"items": ["a", "b"]}
    assert errors == []
