"""Every filter of the list stays through claim → resolve → next (issue 11): the list's "Review
next", the item page's forms and links, J and give-back all carry system, kind, level, reason,
age and search, and claim-next hands out only matching items. Items carry their decision's
subject and reasons (copied as they are inserted, on every path), which the search and the
reason filter read through trigram indexes."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection, transaction
from django.utils import timezone

from oversight.errors import ActionError
from oversight.models import AISystem, Decision
from reviewqueue import actions, triage
from reviewqueue.models import ReviewItem
from tests.conftest import World, csrf_session, decision_body
from tests.integration.test_review_api import new_operator, submit

DRIFT = "input drift on tempo (PSI 0.31): held for a person"


def make_item(system: AISystem, subject: str, reasons: list[str], confidence: float | None = 0.2,
              kind: str = ReviewItem.Kind.GATE, age: timedelta = timedelta(0)) -> ReviewItem:
    """A waiting decision with the reasons given (the gate's own are fixed by its rules) and its item,
    inserted through the ORM: the database copies the subject and the reasons onto the item."""
    at = timezone.now() - age
    d = Decision.objects.create(
        system=system, subject=subject, prediction={"output": {"items": ["t1"]}, "confidence": confidence},
        confidence=confidence, status=Decision.Status.PENDING_REVIEW, route="human", reasons=reasons,
        occurred_at=at, created_at=at)
    item = ReviewItem.objects.create(decision=d, system=system, kind=kind, due_at=at + timedelta(minutes=15),
                                     created_at=at, level=system.level, confidence=confidence)
    item.refresh_from_db()
    return item


def item_of(url: str) -> ReviewItem:
    return ReviewItem.objects.select_related("system").get(id=url.split("/")[2].removeprefix("rev_"))


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def hidden_fields(html: str, form_id: str) -> dict[str, str]:
    """The hidden inputs of one form on the page, by name."""
    form = html[html.index(f'id="{form_id}"'):]
    form = form[: form.index("</form>")]
    return {m.group(1): unescape(m.group(2))
            for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)
            if m.group(1) not in ("csrfmiddlewaretoken", "then")}


# --- the items' copies ------------------------------------------------------------------------


def test_items_copy_their_decisions_subject_and_reasons_on_every_path(world: World) -> None:
    one = submit(world, "crit", decision_body(0.9, subject="Applicant-7"))  # one statement (a CTE)
    few = [decision_body(0.1, subject=f"few-{i}") for i in range(3)]  # a small batch: bulk_create
    many = [decision_body(0.1, subject=f"many-{i}") for i in range(60)]  # a large one: COPY
    for items in (few, many):
        r = world.client_for("sup").post("/api/v1/systems/sup/decisions/batch", json.dumps({"items": items}),
                                         content_type="application/json")
        assert r.status_code == 200, r.content
    assert ReviewItem.objects.filter(subject__isnull=True).count() == 0
    assert ReviewItem.objects.filter(reasons_text__isnull=True).count() == 0
    for item in ReviewItem.objects.select_related("decision"):
        assert item.subject == item.decision.subject
        assert item.reasons_text == "\n".join(item.decision.reasons)
    assert ReviewItem.objects.get(decision_id=one["id"].removeprefix("dec_")).reasons_text == (
        "level 1 (critical): a person approves every decision")
    made = make_item(world.critical, "x-1", ["first reason", DRIFT])
    assert (made.subject, made.reasons_text) == ("x-1", f"first reason\n{DRIFT}")
    # What the application sends is kept (the copy only fills what comes empty).
    d = made.decision
    given = ReviewItem.objects.create(decision=d, system=world.critical, kind=ReviewItem.Kind.SECOND,
                                      due_at=d.created_at, created_at=d.created_at, level=1, subject="given",
                                      reasons_text="as sent")
    given.refresh_from_db()
    assert (given.subject, given.reasons_text) == ("given", "as sent")


def test_subject_search_and_the_reason_filter_read_their_trigram_indexes(world: World) -> None:
    """With a queue of some size (and its statistics), a selective search or reason is answered from
    its trigram index, not by walking the queue, and the decisions table is not read."""
    at = timezone.now()
    decisions = [Decision(system=world.supervised, subject=f"listener-{i}", confidence=0.2, route="human",
                          status=Decision.Status.PENDING_REVIEW, occurred_at=at, created_at=at,
                          reasons=["confidence 0.20 < threshold 0.60: a person decides"]
                          + ([DRIFT] if i % 500 == 0 else []))
                 for i in range(2000)]
    Decision.objects.bulk_create(decisions)
    ReviewItem.objects.bulk_create(
        ReviewItem(decision=d, system=world.supervised, kind=ReviewItem.Kind.GATE, due_at=at, created_at=at,
                   level=2, confidence=0.2) for d in decisions)
    with connection.cursor() as cur:
        # As autovacuum would: the new entries leave the indexes' pending lists, statistics are made.
        cur.execute("SELECT gin_clean_pending_list('review_subject_trgm'::regclass), "
                    "gin_clean_pending_list('review_reasons_trgm'::regclass)")
        cur.execute("ANALYZE reviewqueue_reviewitem")
    for f, index in ((triage.Filters(search="TENER-1234"), "review_subject_trgm"),
                     (triage.Filters(reason="drift on"), "review_reasons_trgm")):
        qs = triage.apply(triage.pending(), f, at).order_by(*triage.ORDER)[:50]
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SET LOCAL enable_seqscan = off")  # a table this small might be read whole,
            cur.execute("SET LOCAL enable_indexscan = off")  # or walked in order on review_triage
            plan = qs.explain()
        assert index in plan, plan
        assert "oversight_decision" not in plan
    assert [i.subject for i in triage.apply(triage.pending(), triage.Filters(search="TENER-1234"), at)] == [
        "listener-1234"]
    assert triage.apply(triage.pending(), triage.Filters(reason="drift on"), at).count() == 4


# --- claim-next takes the filters -------------------------------------------------------------


def test_claim_next_hands_out_only_items_matching_every_filter(world: World) -> None:
    crit, sup = world.critical, world.supervised
    drift_crit = [make_item(crit, f"applicant-{i}", [DRIFT], confidence=0.5 + i / 10) for i in range(2)]
    make_item(crit, "applicant-9", ["level 1 (critical): a person approves every decision"])
    drift_sup = make_item(sup, "listener-1", [DRIFT])
    audit = make_item(sup, "listener-2", ["sampled for after-the-fact audit"], kind=ReviewItem.Kind.AUDIT)
    old = make_item(sup, "listener-old", ["x"], age=timedelta(minutes=45))
    op = world.operator

    f = triage.Filters(level=1, reason="drift")
    assert [actions.claim_next(op, filters=f) for _ in range(2)] == drift_crit
    assert actions.claim_next(op, filters=f) is None
    assert actions.claim_next(op, filters=triage.Filters(reason="DRIFT")) == drift_sup
    assert actions.claim_next(op, filters=triage.Filters(kind="audit")) == audit
    assert actions.claim_next(op, filters=triage.Filters(older_than_min=30)) == old
    searched = make_item(sup, "Listener-77", ["x"])
    assert actions.claim_next(op, filters=triage.Filters(search="listener-7")) == searched
    by_id = make_item(sup, "someone", ["x"])
    assert actions.claim_next(op, filters=triage.Filters(search=f"dec_{by_id.decision_id.hex}")) == by_id
    # The API's system slug sets the filters' system and keeps the rest.
    other = make_item(crit, "c", [DRIFT])
    make_item(sup, "s", [DRIFT])
    assert actions.claim_next(op, "crit", filters=triage.Filters(system="sup", reason="drift")) == other
    with pytest.raises(ActionError) as exc:
        actions.claim_next(op, filters=triage.Filters(system="nope"))
    assert exc.value.code == "not_found"


# --- the pages carry the filters --------------------------------------------------------------


def test_level_and_reason_stay_through_claim_resolve_next(world: World) -> None:
    """An operator who filtered "level 1, reason contains 'drift'" keeps getting such items."""
    wanted = {make_item(world.critical, f"applicant-{i}", ["level 1 (critical)", DRIFT]).id for i in range(3)}
    make_item(world.critical, "applicant-x", ["level 1 (critical): a person approves every decision"])
    make_item(world.supervised, "listener-x", [DRIFT])
    page = csrf_session(world.operator)
    listed = page.get("/review/?level=1&reason=drift").content.decode()
    carried = hidden_fields(listed, "next-form")
    assert carried == {"level": "1", "reason": "drift"}
    assert 'id="next-matching">matching level 1, reason contains “drift”<' in listed
    r = page.post("/review/next/", carried)
    seen = []
    for _ in range(3):
        assert r.status_code == 302
        assert r.url.startswith("/review/rev_")
        assert query(r.url) == {"level": ["1"], "reason": ["drift"]}
        item = item_of(r.url)
        assert (item.level, "drift" in item.reasons_text) == (1, True)
        seen.append(item.id)
        html = page.get(r.url).content.decode()
        for form in ("resolve-form", "next-form"):
            assert {k: v for k, v in hidden_fields(html, form).items() if k != "skip"} == carried, form
        assert 'href="/review/?level=1&amp;reason=drift">← Back to the queue (level 1, reason contains “drift”)' in html
        r = page.post(f"/review/{item.public_id}/act/", {"op": "approve", "then": "next", **carried})
    assert set(seen) == wanted
    assert r.url == "/review/?level=1&reason=drift"  # no more such items: back to the filtered list
    assert "the queue is empty: nothing of level 1, reason contains “drift” waits" in page.get(r.url).content.decode()
    assert ReviewItem.objects.filter(status="open").count() == 2  # the others untouched


def test_every_filter_rides_on_the_list_the_item_page_its_forms_and_links(world: World) -> None:
    first = make_item(world.supervised, "listener-1", ["confidence 0.20 < threshold 0.60", DRIFT],
                      age=timedelta(minutes=20))
    second = make_item(world.supervised, "listener-2", ["confidence 0.30 < threshold 0.60", DRIFT],
                       age=timedelta(minutes=20))
    make_item(world.supervised, "listener-3", ["confidence 0.25 < threshold 0.60", DRIFT])  # too young
    wanted = {"system": "sup", "kind": "gate", "level": "2", "reason": "drift", "older": "10", "q": "listener"}
    q = "system=sup&kind=gate&level=2&reason=drift&older=10&q=listener"
    page = csrf_session(world.operator)
    html = page.get(f"/review/?{q}").content.decode()
    assert hidden_fields(html, "next-form") == wanted
    assert f'href="/review/{first.public_id}/?{q.replace("&", "&amp;")}">Open<' in html
    assert 'Review next (sup)</button>' in html  # the system on the button, the rest in words beside it

    # Claim from the list, resolve with "next", then J (pass over), then give back (G).
    r = page.post("/review/next/", wanted)
    assert r.url == f"/review/{first.public_id}/?{q}"
    html = page.get(r.url).content.decode()
    for form in ("resolve-form", "next-form"):
        assert {k: v for k, v in hidden_fields(html, form).items() if k != "skip"} == wanted
    assert "Next (sup) (<kbd>J</kbd>)" in html
    assert "Next items match your list's filters: sup, before release, level 2, reason contains “drift”" in html
    r = page.post(f"/review/{first.public_id}/act/", {"op": "reject", "then": "next", **wanted})
    assert r.url == f"/review/{second.public_id}/?{q}"
    html = page.get(r.url).content.decode()
    assert f'href="/review/{first.public_id}/?{q.replace("&", "&amp;")}" id="previous"' in html  # K keeps them
    r = page.post("/review/next/", {"skip": second.public_id, **wanted})  # J: nothing else matches
    assert r.url == f"/review/?{q}"
    # The item page opened from the list (not claimed): claiming keeps them too.
    html = page.get(f"/review/{second.public_id}/?{q}").content.decode()
    assert hidden_fields(html, "claim-form") == wanted
    r = page.post(f"/review/{second.public_id}/act/", {"op": "claim", **wanted})
    assert r.url == f"/review/{second.public_id}/?{q}"
    r = page.post(f"/review/{second.public_id}/act/", {"op": "release", **wanted})
    assert r.url == f"/review/?{q}"


def test_a_refused_resolution_keeps_the_filters_on_the_page_it_shows_again(world: World) -> None:
    item = make_item(world.critical, "applicant-1", [DRIFT])
    page = csrf_session(world.operator)
    r = page.post("/review/next/", {"level": "1", "reason": "drift"})
    assert item_of(r.url) == item
    other = new_operator("operator2")
    ReviewItem.objects.filter(id=item.id).update(claimed_by=other)  # someone else has it now
    r = page.post(f"/review/{item.public_id}/act/", {"op": "approve", "then": "next", "level": "1", "reason": "drift"})
    assert r.status_code == 409
    assert hidden_fields(r.content.decode(), "next-form") == {"level": "1", "reason": "drift",
                                                               "skip": item.public_id}


def test_values_the_list_would_not_take_are_left_out_and_an_unknown_system_is_said(world: World) -> None:
    item = make_item(world.supervised, "listener-1", ["x"])
    page = csrf_session(world.operator)
    r = page.post("/review/next/", {"level": "9", "kind": "later", "older": "-5", "reason": " ", "q": ""})
    assert r.url == f"/review/{item.public_id}/"  # no filter left: the whole queue
    r = page.post("/review/next/", {"system": "<nope>", "level": "2"})
    assert r.url == "/review/?system=%3Cnope%3E&level=2"
    assert "no system &#x27;&lt;nope&gt;&#x27;" in page.get(r.url).content.decode()


def test_filters_as_parameters_and_back() -> None:
    f = triage.Filters(system="sup", kind="audit", level=1, reason="drift", older_than_min=30, search="dec_ab")
    assert f.params() == {"system": "sup", "kind": "audit", "level": "1", "reason": "drift", "older": "30",
                          "q": "dec_ab"}
    assert triage.Filters.from_params(f.params()) == f
    assert triage.Filters().params() == {}
    assert triage.Filters.from_params({"level": "0", "older": "x", "kind": "gate", "q": "  a  "}) == triage.Filters(
        kind="gate", search="a")
    assert triage.Filters.from_params({"reason": "r" * 300}).reason == "r" * triage.TEXT_MAX
    assert f.rest == triage.Filters(kind="audit", level=1, reason="drift", older_than_min=30, search="dec_ab")
    assert triage.Filters(level=1, reason="drift").describe() == "level 1, reason contains “drift”"
    assert triage.Filters(system="sup").describe() == "sup"


def test_the_api_claim_still_takes_a_system(world: World) -> None:
    make_item(world.critical, "c", ["x"])
    s = make_item(world.supervised, "s", ["x"])
    assert actions.claim_next(world.operator, "sup") == s
    assert actions.claim_next(world.operator, "sup") is None
    with pytest.raises(ActionError):
        actions.claim_next(world.operator, "nope")
