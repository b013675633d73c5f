"""Kill state everywhere, in the browser: an operator's open review item shows the stop banner and a
disabled Approve (with its reason) within 1 s of an admin engaging the global kill switch through
the API, without a reload, and both come back when it is released; at 390 px the banner and the
pages under it have no sideways scroll."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from oversight import actions
from tests.browser.test_review_flow import open_and_claim, read, submit
from tests.conftest import World

pytestmark = pytest.mark.browser

PUSH_MS = 1000  # an open page shows a flip within 1 s, without a reload
MARKUP = '<img src="x" onerror="window.__injected = 1">'


def flip(live_server_url: str, token: str, engaged: bool, reason: str = "", scope: str = "global",
         system: str | None = None, model: str = "", second: str | None = None) -> float:
    """An admin flips a kill switch through the JSON API; returns when the flip was sent. A release
    that waits for a second admin (202, four eyes) is approved with ``second``'s token."""
    sent = time.monotonic()
    r = httpx.post(f"{live_server_url}/api/v1/killswitches", headers={"Authorization": f"Token {token}"},
                   json={"scope": scope, "system": system, "model": model, "engaged": engaged,
                         "reason": reason or ("incident over" if not engaged else "")}, timeout=10)
    if r.status_code == 202:
        assert second, "this release needs a second admin"
        sent = time.monotonic()
        r = httpx.post(f"{live_server_url}/api/v1/killswitches/releases/{r.json()['id']}/approve",
                       headers={"Authorization": f"Token {second}"}, timeout=10)
    assert r.status_code == 200, r.text
    return sent


def second_admin_token() -> str:
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("admin2", password="another-long-password")
    user.groups.add(Group.objects.get(name="admin"))
    return actions.create_personal_token(user, "browser test")[1]


def within(locator_check: Callable[[], None], since: float, what: str) -> None:
    locator_check()
    elapsed = time.monotonic() - since
    assert elapsed < PUSH_MS / 1000, f"{what} took {elapsed:.2f} s"


def banner(page: Page) -> Locator:
    return page.locator("#stop-status .stop-banner[role=alert]")


def no_sideways_scroll(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, page.url


def test_open_item_page_shows_the_stop_and_disables_approve_live(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    _, token = actions.create_personal_token(world.admin, "browser test")
    decision = submit(live_server_url, world, "applicant-stop")
    page = login_as(world.operator, "/review/")
    open_and_claim(page, decision, "applicant-stop")
    approve, reject = page.locator("#approve"), page.locator("#reject")
    expect(banner(page)).to_have_count(0)
    expect(approve).to_be_enabled()
    expect(page.locator("#approve-blocked")).to_be_hidden()
    expect(page.locator("#stop-status")).to_have_attribute("data-live", "open")
    page.evaluate("window.__notReloaded = true")
    page.get_by_label("Note").fill("typed before the stop")

    # --- the admin stops everything ---------------------------------------------------------
    sent = flip(live_server_url, token, True, f"incident 42 {MARKUP}")
    within(lambda: expect(banner(page)).to_contain_text("Everything is stopped:", timeout=PUSH_MS), sent, "the banner")
    within(lambda: expect(approve).to_be_disabled(timeout=PUSH_MS), sent, "disabling Approve")
    expect(banner(page)).to_contain_text(f"incident 42 {MARKUP}")  # the reason as text, never markup
    expect(banner(page)).to_contain_text("by admin")
    expect(banner(page).locator("img")).to_have_count(0)
    expect(page.locator("#approve-blocked")).to_be_visible()
    expect(page.locator("#approve-blocked")).to_contain_text("global kill switch engaged: incident 42")
    expect(approve).to_have_accessible_description(page.locator("#approve-blocked").inner_text())
    expect(reject).to_be_enabled()  # reject and modify still work
    expect(page.locator('button[value="modify"]')).to_be_enabled()
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("a")  # the shortcut presses a disabled button: nothing happens
    expect(page.get_by_label("Note")).to_have_value("typed before the stop")
    assert read(live_server_url, world, decision["id"])["status"] == "pending_review"
    assert page.evaluate("window.__injected === undefined")

    # --- released: the banner goes, Approve comes back ---------------------------------------
    sent = flip(live_server_url, token, False, second=second_admin_token())
    within(lambda: expect(banner(page)).to_have_count(0, timeout=PUSH_MS), sent, "taking the banner down")
    within(lambda: expect(approve).to_be_enabled(timeout=PUSH_MS), sent, "enabling Approve")
    expect(page.locator("#stop-status [role=status]")).to_contain_text("Nothing is stopped now")
    expect(page.locator("#approve-blocked")).to_be_hidden()
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
    expect(page.get_by_label("Note")).to_have_value("typed before the stop")

    with page.expect_navigation():
        approve.click()
    assert read(live_server_url, world, decision["id"])["status"] == "released"


def test_the_server_still_refuses_approve_pressed_before_the_page_heard(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    """A push can arrive after the click: the server's rule is what holds."""
    world = live_world
    _, token = actions.create_personal_token(world.admin, "browser test")
    decision = submit(live_server_url, world, "applicant-race")
    page = login_as(world.operator, "/review/")
    open_and_claim(page, decision, "applicant-race")
    flip(live_server_url, token, True, "bad push", "system", "crit")
    expect(page.locator("#approve")).to_be_disabled()
    page.evaluate("document.getElementById('approve').disabled = false")  # as if the push had not come yet
    with page.expect_navigation():
        page.locator("#approve").click()
    expect(page.get_by_role("alert").filter(has_text="Nothing was done.")).to_contain_text(
        "system kill switch engaged: bad push")
    expect(page.locator("#approve")).to_be_disabled()  # the page re-rendered by the server says so too
    assert read(live_server_url, world, decision["id"])["status"] == "pending_review"


def test_at_390_px_the_banner_and_the_pages_have_no_sideways_scroll(
    live_world: World, live_server_url: str, login_as: Callable[..., Page]
) -> None:
    world = live_world
    _, token = actions.create_personal_token(world.admin, "browser test")
    decision = submit(live_server_url, world, "applicant-narrow")
    long_reason = "incident-2026-12-03-" + "x" * 120 + " and a very long explanation of what went wrong"
    flip(live_server_url, token, True, long_reason)
    flip(live_server_url, token, True, "a-model-push-with-a-long-unbroken-name-" + "y" * 60, "system", "crit")
    flip(live_server_url, token, True, "bias found", "model", "crit", "credit-gbm-4")

    operator = login_as(world.operator, "/review/")
    operator.set_viewport_size({"width": 390, "height": 800})
    operator.goto("/review/")
    expect(banner(operator)).to_be_visible()
    expect(operator.locator("#queue tr.stopped")).to_have_count(1)
    expect(operator.locator("#queue tr.stopped [data-stop-mark]")).to_be_visible()
    no_sideways_scroll(operator)
    open_and_claim(operator, decision, "applicant-narrow")
    expect(banner(operator)).to_contain_text("Model credit-gbm-4 of crit is stopped:")
    expect(operator.locator("#approve")).to_be_disabled()
    expect(operator.locator("#approve-blocked")).to_be_visible()
    no_sideways_scroll(operator)
    operator.goto("/")
    expect(banner(operator)).to_be_visible()
    no_sideways_scroll(operator)

    admin = login_as(world.admin, "/systems/")
    admin.set_viewport_size({"width": 390, "height": 800})
    admin.goto("/systems/")
    expect(banner(admin)).to_be_visible()
    crit = admin.locator('tr[data-stop-system="crit"] .stop-state')
    expect(crit.locator("[data-stop-mark]")).to_be_visible()
    expect(crit.locator("[data-run-mark]")).to_be_hidden()
    expect(crit).to_contain_text("global kill switch engaged: incident-2026")
    expect(crit).to_contain_text("; system kill switch engaged: a-model-push")
    expect(crit).to_contain_text("Models stopped: credit-gbm-4 — bias found (by admin)")
    # The systems table scrolls inside its card; the page itself does not.
    no_sideways_scroll(admin)
