"""The server's side of the prefetched next item (issue 11): the item page names the item the
person's next claim would take without claiming it; that item's page, asked for as prefetched,
shows it as theirs-to-be and may be kept by the browser for a minute; the resolution sent by the
page's script claims it if it is still free and answers where to go; an item someone else holds
is never rendered as anyone else's."""

from __future__ import annotations

import re

import pytest
from django.contrib.messages import get_messages

from reviewqueue import actions, triage
from reviewqueue.models import ReviewItem
from tests.conftest import World, csrf_session, decision_body
from tests.integration.test_review_api import new_operator, submit

JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture
def three(world: World) -> list[ReviewItem]:
    for i in range(3):
        submit(world, "sup", decision_body(0.1, subject=f"prefetch-{i}"))
    return list(ReviewItem.objects.filter(system__slug="sup").order_by(*triage.ORDER))


def ready_of(html: str) -> tuple[str, str]:
    m = re.search(r'data-ready-url="([^"]+)" data-ready-item="(rev_[0-9a-f]{32})"', html)
    assert m, "the page names no next item"
    return m.group(1).replace("&amp;", "&"), m.group(2)


def test_the_item_page_names_the_next_item_without_claiming_it(world: World, three: list[ReviewItem]):
    c = csrf_session(world.operator)
    item = actions.claim_next(world.operator, filters=triage.Filters(system="sup"))
    assert item is not None
    url, ready = ready_of(c.get(f"/review/{item.public_id}/?system=sup").content.decode())
    nxt = ReviewItem.objects.get(id=ready.removeprefix("rev_"))
    assert nxt.id != item.id
    assert nxt.status == ReviewItem.Status.OPEN
    assert url == f"/review/{ready}/?system=sup&ready={item.public_id}"


def test_the_prefetched_page_shows_the_item_as_the_persons_and_takes_nothing(world: World, three: list[ReviewItem]):
    c = csrf_session(world.operator)
    item = actions.claim_next(world.operator, filters=triage.Filters(system="sup"))
    assert item is not None
    url, ready = ready_of(c.get(f"/review/{item.public_id}/?system=sup").content.decode())
    r = c.get(url)
    assert r.status_code == 200
    assert r["Cache-Control"] == "private, max-age=60"
    assert r["Vary"] == "Cookie"  # kept for this session only: another person's browser session never gets it
    page = r.content.decode()
    assert "left on your lease" in page
    assert 'id="approve"' in page
    assert "data-ready-page" in page
    assert f'href="/review/{item.public_id}/?system=sup" id="previous"' in page  # K: the item before
    assert ReviewItem.objects.get(id=ready.removeprefix("rev_")).status == ReviewItem.Status.OPEN


def test_a_prefetched_page_keeps_the_messages_for_the_page_that_shows_them(world: World, three: list[ReviewItem]):
    c = csrf_session(world.operator)
    item = actions.claim_next(world.operator, filters=triage.Filters(system="sup"))
    assert item is not None
    c.get(f"/review/{item.public_id}/?system=sup")
    url, _ = ready_of(c.get(f"/review/{item.public_id}/?system=sup").content.decode())
    c.post(f"/review/{item.public_id}/act/", {"op": "release", "system": "sup"})  # leaves a message
    assert 'class="messages"' not in c.get(url).content.decode()
    assert "lease given back" in c.get("/review/?system=sup").content.decode()


def test_an_item_someone_else_holds_is_not_shown_as_yours_when_asked_as_prefetched(
        world: World, three: list[ReviewItem]):
    other = new_operator("holder")
    held = actions.claim_next(other, filters=triage.Filters(system="sup"))
    assert held is not None
    r = csrf_session(world.operator).get(f"/review/{held.public_id}/?system=sup&ready={three[-1].public_id}")
    assert r.status_code == 200
    assert "Cache-Control" not in r or "max-age" not in r["Cache-Control"]
    page = r.content.decode()
    assert 'id="lease"' not in page
    assert 'id="approve"' not in page
    assert "holder" in page


def test_the_pages_resolution_claims_the_prefetched_item_and_says_where_to_go(world: World, three: list[ReviewItem]):
    c = csrf_session(world.operator)
    item = actions.claim_next(world.operator, filters=triage.Filters(system="sup"))
    assert item is not None
    url, ready = ready_of(c.get(f"/review/{item.public_id}/?system=sup").content.decode())
    r = c.post(f"/review/{item.public_id}/act/", {"op": "approve", "then": "next", "system": "sup", "ready": ready},
               **JSON)
    assert r.status_code == 200
    assert r.json() == {"url": url, "said": f"dec_{item.decision_id.hex}: approved"}
    assert not list(get_messages(r.wsgi_request))  # said by the page it opens, not as a message
    nxt = ReviewItem.objects.get(id=ready.removeprefix("rev_"))
    assert (nxt.status, nxt.claimed_by_id) == (ReviewItem.Status.CLAIMED, world.operator.pk)
    item.refresh_from_db()
    assert (item.status, item.action) == (ReviewItem.Status.RESOLVED, "approve")


def test_when_the_prefetched_item_was_taken_the_resolution_claims_the_next_free_one(
        world: World, three: list[ReviewItem]):
    c = csrf_session(world.operator)
    item = actions.claim_next(world.operator, filters=triage.Filters(system="sup"))
    assert item is not None
    _, ready = ready_of(c.get(f"/review/{item.public_id}/?system=sup").content.decode())
    other = new_operator("quicker")
    actions.claim_item(other, ready.removeprefix("rev_"))
    r = c.post(f"/review/{item.public_id}/act/", {"op": "reject", "then": "next", "system": "sup", "ready": ready},
               **JSON)
    assert r.status_code == 200
    answer = r.json()
    assert set(answer) == {"url"}
    got = ReviewItem.objects.get(id=answer["url"].split("/")[2].removeprefix("rev_"))
    assert got.id != item.id
    assert got.public_id != ready
    assert got.claimed_by_id == world.operator.pk
    assert answer["url"] == f"/review/{got.public_id}/?system=sup"
    assert [str(m) for m in get_messages(r.wsgi_request)] == [f"dec_{item.decision_id.hex}: rejected"]


def test_a_refused_resolution_answers_the_page_as_before(world: World, three: list[ReviewItem]):
    """The script goes the usual way when the answer is not JSON: the refusal, with what was typed."""
    c = csrf_session(world.operator)
    item = actions.claim_next(world.operator, filters=triage.Filters(system="sup"))
    assert item is not None
    r = c.post(f"/review/{item.public_id}/act/",
               {"op": "modify", "then": "next", "system": "sup", "output": "{not json", "ready": three[-1].public_id},
               **JSON)
    assert r.status_code == 422
    assert r["Content-Type"].startswith("text/html")
    assert "{not json" in r.content.decode()
    assert ReviewItem.objects.get(id=three[-1].id).status == ReviewItem.Status.OPEN
