"""Issue 7, in Chromium: the pages' forms keep what a person typed, say what is wrong next to the
field, never create a second token or key on a reload, and the slug's ``pattern`` is a regular
expression the browser accepts (it compiles ``pattern`` with the ``v`` flag)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request, expect

from oversight import actions, readiness
from oversight.models import AISystem, ApiKey, AuditEvent, PersonalToken
from reviewqueue.models import ReviewItem
from tests.browser.conftest import login
from tests.conftest import World, decision_body

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
DESK = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@dataclass
class Watched:
    """A logged-in page and everything its browser context said on the console."""

    page: Page
    console: list[ConsoleMessage]
    page_errors: list[str]
    posts: list[str]

    def errors(self) -> list[str]:
        """Console errors and warnings, and uncaught exceptions.

        Left out: Chromium's note that a page came with status 422, which is what a form sent
        with a mistake answers (the page shows the form again, with the mistake marked).
        """
        return [
            m.text for m in self.console
            if m.type in ("error", "warning") and not m.text.endswith("status of 422 (Unprocessable Entity)")
        ] + self.page_errors

    def assert_quiet(self) -> None:
        assert self.errors() == [], self.errors()


@pytest.fixture
def open_as(
    new_context: Callable[[], BrowserContext], live_world: World
) -> Callable[..., Watched]:
    """``open_as(user, path, viewport=None)``: log in through the form, with the console collected
    from the very first page on."""

    def go(user: Any, path: str = "/", viewport: dict[str, int] | None = None) -> Watched:
        ctx = new_context()
        console: list[ConsoleMessage] = []
        page_errors: list[str] = []
        posts: list[str] = []
        ctx.on("console", lambda m: console.append(m))
        ctx.on("weberror", lambda e: page_errors.append(str(e.error)))

        def on_request(request: Request) -> None:
            if request.method == "POST":
                posts.append(request.url)

        ctx.on("request", on_request)
        page = login(ctx, user.get_username(), live_world.password, path)
        if viewport:
            page.set_viewport_size(viewport)  # type: ignore[arg-type]
        return Watched(page, console, page_errors, posts)

    return go


def field_error(page: Page, name: str) -> Any:
    return page.locator(f"#id_{name}_error")


# --- a policy edit with one bad field ------------------------------------------------------


def test_a_policy_edit_with_one_bad_field_keeps_the_others_and_says_which(
    live_world: World, open_as: Callable[..., Watched]
) -> None:
    # Level 3 needs a readiness score of 4 or more: sup is assessed (every answer the safe one) first.
    safe = {q.key: next(c.key for c in q.choices if c.points) for q in readiness.QUESTIONS}
    actions.assess_readiness(live_world.admin, "sup", safe, "ready for level 3")
    w = open_as(live_world.admin, "/systems/sup/")
    page = w.page
    expect(page.get_by_label("Name", exact=True)).to_have_value("Supervised")
    typed = {
        "Name": "Supervised v2",
        "Confidence threshold": "0.7",
        "Audit share": "0.1",
        "Override window (s)": "120",
        "Review SLA (s)": "60",
        "Fallback output (JSON)": '{"items": ["calm-1"',  # unclosed: the one bad field
        "Reason for the change": "tighten after incident 7",
    }
    for label, value in typed.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Level", exact=True).select_option("3")
    with page.expect_navigation():
        page.get_by_role("button", name="Save as a new policy version").click()

    fallback = page.get_by_label("Fallback output (JSON)")
    sentence = re.compile(r"^Fallback output is not valid JSON: expecting .+ at line 1, column \d+\.$")
    expect(field_error(page, "fallback")).to_have_text(sentence)
    expect(fallback).to_have_attribute("aria-invalid", "true")
    expect(fallback).to_have_accessible_description(sentence)  # a screen reader hears it with the field
    expect(page.get_by_role("alert")).to_contain_text("Nothing was saved.")
    for label, value in typed.items():
        expect(page.get_by_label(label, exact=True)).to_have_value(value)
    expect(page.get_by_label("Level", exact=True)).to_have_value("3")
    expect(page.locator(".errorlist")).to_have_count(1)  # only the one field is marked
    assert AISystem.objects.get(slug="sup").policy_version == 1

    # Fixing that one field saves everything else as it was typed.
    fallback.fill('{"items": ["calm-1"]}')
    with page.expect_navigation():
        page.get_by_role("button", name="Save as a new policy version").click()
    expect(page.locator(".messages")).to_contain_text("policy saved as version 2")
    expect(page.locator(".errorlist")).to_have_count(0)
    system = AISystem.objects.get(slug="sup")
    assert (system.name, system.level, system.confidence_threshold, system.audit_sample_rate) == (
        "Supervised v2", 3, 0.7, 0.1)
    assert (system.override_window_s, system.review_sla_s, system.fallback) == (120, 60, {"items": ["calm-1"]})
    assert AuditEvent.objects.get(action="policy.change").reason == "tighten after incident 7"
    w.assert_quiet()


# --- a reload after creating a token or a key ----------------------------------------------


def test_reloading_after_creating_a_token_creates_no_second_one(
    live_world: World, open_as: Callable[..., Watched]
) -> None:
    w = open_as(live_world.editor, "/tokens/")
    page = w.page
    page.get_by_label("Token name").fill("nightly export")
    with page.expect_navigation():
        page.get_by_role("button", name="Create token").click()
    expect(page).to_have_url(re.compile(r"/tokens/$"))
    secret = page.locator("#new-token").inner_text()
    assert secret.startswith("ovt_")
    rows = page.locator("#tokens tbody tr[data-token]")
    expect(rows).to_have_count(1)
    assert len(w.posts) == 2  # the login form and this one

    page.reload()
    expect(page.locator("#new-token")).to_have_count(0)  # shown once
    expect(page.locator("main")).not_to_contain_text(secret)
    expect(rows).to_have_count(1)
    page.go_back()
    page.go_forward()
    expect(rows).to_have_count(1)
    assert len(w.posts) == 2  # no form was sent again
    assert PersonalToken.objects.filter(user=live_world.editor).count() == 1
    assert AuditEvent.objects.filter(action="token.create").count() == 1
    w.assert_quiet()


def test_reloading_after_creating_an_api_key_creates_no_second_one(
    live_world: World, open_as: Callable[..., Watched]
) -> None:
    w = open_as(live_world.admin, "/systems/auto/")
    page = w.page
    before = ApiKey.objects.filter(system__slug="auto").count()
    page.get_by_label("Key name").fill("prod-recommender")
    with page.expect_navigation():
        page.get_by_role("button", name="Create API key").click()
    expect(page).to_have_url(re.compile(r"/systems/auto/$"))
    secret = page.locator("#new-key").inner_text()
    assert secret.startswith("ovk_")
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text(secret)
    assert ApiKey.objects.filter(system__slug="auto").count() == before + 1
    assert AuditEvent.objects.filter(action="apikey.create", data__name="prod-recommender").count() == 1
    w.assert_quiet()


# --- the slug's pattern ---------------------------------------------------------------------


def test_the_slug_pattern_compiles_in_chromium_and_blocks_a_bad_slug(
    live_world: World, open_as: Callable[..., Watched]
) -> None:
    w = open_as(live_world.admin, "/systems/")
    page = w.page
    slug = page.get_by_label("Slug")
    expect(slug).to_have_attribute("pattern", re.compile(r".+"))
    before = AISystem.objects.count()
    posts = len(w.posts)

    slug.fill("Bad Slug!")
    assert slug.evaluate("el => el.validity.patternMismatch") is True  # the browser applies the pattern
    page.get_by_role("button", name="Create system").click()
    page.wait_for_timeout(300)
    assert len(w.posts) == posts  # blocked before anything was sent
    assert page.url.endswith("/systems/")
    assert slug.evaluate("el => el.matches(':invalid')") is True
    expect(slug).to_have_attribute("title", re.compile("lowercase letters"))  # the browser's bubble shows the rule

    for good in ("nightly-recs", "a", "fraud_score-2"):
        slug.fill(good)
        assert slug.evaluate("el => el.validity.valid") is True, good
    for bad in ("-lead", "Upper", "a b", "a.b"):
        slug.fill(bad)
        assert slug.evaluate("el => el.validity.patternMismatch") is True, bad
    slug.fill("fraud-score")
    with page.expect_navigation():
        page.get_by_role("button", name="Create system").click()
    expect(page).to_have_url(re.compile(r"/systems/fraud-score/$"))
    assert AISystem.objects.count() == before + 1
    assert not [m for m in w.errors() if "pattern" in m.lower()]
    w.assert_quiet()

    # The check above can fail: the old pattern, with an unescaped "-" in its class, is refused.
    page.evaluate("""() => {
        const i = document.createElement("input");
        i.pattern = "[a-z0-9][a-z0-9_-]*";
        i.value = "Bad Slug!";
        return i.validity.patternMismatch;
    }""")
    page.wait_for_timeout(100)
    assert any("pattern" in m.lower() for m in w.errors()), w.errors()


# --- the review item: modify with invalid JSON ----------------------------------------------


def review_item(live_server_url: str, world: World) -> ReviewItem:
    """A level-1 decision sent by its client service: its review item."""
    r = httpx.post(
        f"{live_server_url}/api/v1/systems/crit/decisions", json=decision_body(0.7, subject="applicant-77"),
        headers={"Authorization": f"Bearer {world.keys['crit']}"}, timeout=10,
    )
    assert r.status_code == 201, r.text
    return ReviewItem.objects.get(decision_id=r.json()["id"].removeprefix("dec_"))


def test_modify_with_invalid_json_keeps_the_note_and_shows_the_error(
    live_world: World, live_server_url: str, open_as: Callable[..., Watched]
) -> None:
    item = review_item(live_server_url, live_world)
    w = open_as(live_world.operator, f"/review/{item.public_id}/")
    page = w.page
    with page.expect_navigation():
        page.get_by_role("button", name="Claim and review").click()
    page.get_by_label("Note").fill("limit too high for this income")
    page.locator("summary", has_text="Modify the output instead").click()
    output = page.get_by_label("Output to release (JSON)")
    output.fill('{"items": ["t1"')
    with page.expect_navigation():
        page.get_by_role("button", name="Release modified output").click()

    expect(page.locator("#output_error")).to_have_text(re.compile(r"^Output to release is not valid JSON: "))
    expect(output).to_be_visible()  # the modify box is open again, with the error in view
    expect(output).to_have_value('{"items": ["t1"')
    expect(page.get_by_label("Note")).to_have_value("limit too high for this income")
    assert ReviewItem.objects.get(pk=item.pk).status == ReviewItem.Status.CLAIMED

    output.fill('{"items": ["t1"]}')
    with page.expect_navigation():
        page.get_by_role("button", name="Release modified output").click()
    expect(page.locator(".messages")).to_contain_text("modified and released")
    item.refresh_from_db()
    assert (item.status, item.note, item.output) == (
        ReviewItem.Status.RESOLVED, "limit too high for this income", {"items": ["t1"]})
    w.assert_quiet()


# --- nothing overflows sideways, at desk width or on a phone -----------------------------------


# Elements of a form that stick out of the window (a table's forms scroll with their table, inside it).
OVERFLOWING = """() => {
    const width = document.documentElement.clientWidth;
    const out = [];
    for (const el of document.querySelectorAll("main form, main form *, main .scroll")) {
        if (el.parentElement.closest(".scroll")) continue;
        const box = el.getBoundingClientRect();
        if (box.width && (box.right > width + 1 || box.left < -1)) out.push(el.outerHTML.slice(0, 80));
    }
    if (document.documentElement.scrollWidth > width + 1) out.push("page: " + document.documentElement.scrollWidth);
    return out;
}"""


@pytest.mark.parametrize("viewport", [DESK, PHONE], ids=["desk", "phone"])
def test_the_forms_fit_the_screen(
    live_world: World, live_server_url: str, open_as: Callable[..., Watched], viewport: dict[str, int]
) -> None:
    """Each page with a changed form, with errors showing, fits its width; screenshots go to var/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tag = "desk" if viewport is DESK else "phone"
    item = review_item(live_server_url, live_world)

    admin = open_as(live_world.admin, "/systems/", viewport)
    page = admin.page
    page.get_by_label("Slug").fill("a-very-long-slug-for-a-system-with-a-long-name")
    page.get_by_label("Confidence threshold").evaluate("el => el.removeAttribute('max')")  # the server refuses it
    page.get_by_label("Confidence threshold").fill("1.5")
    page.get_by_label("Fallback output (JSON)").fill('{"items": ["editorial-calm-1", "editorial-calm-2"')
    with page.expect_navigation():
        page.get_by_role("button", name="Create system").click()
    expect(page.locator(".errorlist")).to_have_count(2)
    pages = {"systems": page}

    edit = admin.page.context.new_page()
    edit.set_viewport_size(viewport)  # type: ignore[arg-type]
    edit.goto("/systems/sup/")
    edit.get_by_label("Key name").evaluate("el => el.removeAttribute('maxlength')")  # let the server refuse it
    edit.get_by_label("Key name").fill("k" * 101)
    with edit.expect_navigation():
        edit.get_by_role("button", name="Create API key").click()
    expect(edit.locator("#id_key-name_error")).to_be_visible()
    pages["system-edit"] = edit

    tokens = admin.page.context.new_page()
    tokens.set_viewport_size(viewport)  # type: ignore[arg-type]
    tokens.goto("/tokens/")
    tokens.get_by_label("Token name").fill("a script with a name")
    with tokens.expect_navigation():
        tokens.get_by_role("button", name="Create token").click()
    expect(tokens.locator("#new-token")).to_be_visible()
    pages["tokens"] = tokens

    operator = open_as(live_world.operator, f"/review/{item.public_id}/", viewport)
    review = operator.page
    with review.expect_navigation():
        review.get_by_role("button", name="Claim and review").click()
    review.get_by_label("Note").fill("a note that is kept")
    review.locator("summary", has_text="Modify the output instead").click()
    review.get_by_label("Output to release (JSON)").fill('{"decision": "approve", "limit": 5000')
    with review.expect_navigation():
        review.get_by_role("button", name="Release modified output").click()
    expect(review.locator("#output_error")).to_be_visible()
    pages["review-item"] = review

    for name, p in pages.items():
        p.screenshot(path=str(SCREENSHOTS / f"{name}-{tag}.png"), full_page=True)
        assert p.evaluate(OVERFLOWING) == [], name
    admin.assert_quiet()
    operator.assert_quiet()
