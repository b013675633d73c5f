"""Browser fixtures: one Chromium per test package, people logged in through the real login form.

Playwright's sync API keeps an asyncio loop running in the main thread, which makes Django
refuse ORM calls (and ``async_to_sync``) in that thread. ``DJANGO_ALLOW_ASYNC_UNSAFE`` lifts
that while the browser tests run; it is set here, before any fixture touches the database, and
taken back when the package is done, so the other test packages (the WebSocket consumers, for
one) keep Django's async-safety checks. The live server is started first, so its process never
inherits the variable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, expect, sync_playwright

from tests.conftest import World
from tests.ensure_browser import BrowserMissing, chromium_path

ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Bounded waits everywhere: a page action or an expectation fails after this long.
TIMEOUT_MS = 5000


@pytest.fixture(scope="package")
def playwright(live_server_url: str) -> Iterator[Playwright]:
    before = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()
        if before is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = before


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # The same lookup as `make test`'s tests/ensure_browser.py: OVERSIGHT_CHROMIUM, PATH, /usr/bin/chromium.
    try:
        executable = chromium_path()
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    b = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(autouse=True)
def _bounded_expectations() -> None:
    expect.set_options(timeout=TIMEOUT_MS)




@pytest.fixture
def new_context(browser: Browser, live_server_url: str) -> Iterator[Callable[[], BrowserContext]]:
    """Make fresh browser contexts (separate cookie jars: separate people); all closed after the test."""
    made: list[BrowserContext] = []

    def make() -> BrowserContext:
        ctx = browser.new_context(base_url=live_server_url)
        ctx.set_default_timeout(TIMEOUT_MS)
        ctx.set_default_navigation_timeout(TIMEOUT_MS)
        made.append(ctx)
        return ctx

    yield make
    # An open review item's page gives its item back as it closes (sendBeacon on pagehide): let
    # that request land before the test's database is flushed, or the two may deadlock.
    on_item = any("/review/rev_" in p.url for ctx in made for p in ctx.pages)
    for ctx in made:
        ctx.close()
    if on_item:
        time.sleep(0.5)


def login(ctx: BrowserContext, username: str, password: str, next_path: str = "/") -> Page:
    """Log in through the real form at /login/ and land on ``next_path``."""
    page = ctx.new_page()
    page.goto(f"/login/?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login/" not in url)
    expect(page.locator("header .who")).to_contain_text(username)
    return page


@pytest.fixture
def login_as(new_context: Callable[[], BrowserContext], tworld: World) -> Callable[..., Page]:
    """``login_as(user, next_path="/")``: a page in its own context, logged in as that user."""

    def go(user: Any, next_path: str = "/") -> Page:
        return login(new_context(), user.get_username(), tworld.password, next_path)

    return go


@pytest.fixture
def live_world(tworld: World, live_server_url: str) -> World:
    """The committed world, served by the live server.

    The config epoch is clock-based (oversight.config.bump_epoch), so the server reloads its
    gate cache for each test's new database instead of keeping an earlier test's keys.
    """
    return tworld


def console_errors(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of ``page`` from now on (what a person would see broken)."""
    errors: list[str] = []

    def keep(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(msg.text)

    page.on("console", keep)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors
