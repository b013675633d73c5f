"""The review queue's order and triage: level 1 first, then due time, then lowest confidence, in
the list and in claim-next; filters, search, pagination that keeps them, the past-due count, the
live figures, and who may see the list."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from reviewqueue import actions, claim_statement, triage, views
from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body


def send(world: World, slug: str, confidence: float | None, **extra: Any) -> ReviewItem:
    r = world.client_for(slug).post(f"/api/v1/systems/{slug}/decisions", decision_body(confidence, **extra),
                                    content_type="application/json")
    assert r.status_code == 201, r.content
    return ReviewItem.objects.get(decision_id=r.json()["id"].removeprefix("dec_"))


def listed(world: World, query: str = "", user: Any = None) -> list[str]:
    """The item ids the list shows, top to bottom."""
    r = world.person(user or world.operator).get(f"/review/{query}")
    assert r.status_code == 200
    return re.findall(r'<tr data-item="(rev_[0-9a-f]+)"', r.content.decode())


def page_of(world: World, query: str = "") -> str:
    r = world.person(world.operator).get(f"/review/{query}")
    assert r.status_code == 200
    return r.content.decode()


def due(item: ReviewItem, at: Any) -> None:
    ReviewItem.objects.filter(pk=item.pk).update(due_at=at)


def test_items_carry_their_level_and_confidence(world: World) -> None:
    crit = send(world, "crit", 0.9)
    sup = send(world, "sup", 0.3)
    assert (crit.level, crit.confidence) == (1, 0.9)
    assert (sup.level, sup.confidence) == (2, 0.3)


def test_level_1_first_then_due_then_lowest_confidence_in_the_list_and_in_claim_next(world: World) -> None:
    t = timezone.now() + timedelta(minutes=10)
    late_critical = send(world, "crit", 0.95)
    due(late_critical, t + timedelta(hours=1))  # due last of all, but level 1
    same_due_high = send(world, "sup", 0.5)
    same_due_low = send(world, "sup", 0.2)
    no_confidence = send(world, "sup", None)
    for item in (same_due_high, same_due_low, no_confidence):
        due(item, t + timedelta(minutes=1))
    earliest = send(world, "sup", 0.55)
    due(earliest, t)
    expected = [late_critical, earliest, same_due_low, same_due_high, no_confidence]

    assert listed(world) == [i.public_id for i in expected]

    claimed = [actions.claim_next(world.operator) for _ in expected]
    assert [c.public_id if c else None for c in claimed] == [i.public_id for i in expected]
    assert actions.claim_next(world.operator) is None


def test_claim_next_order_is_served_by_the_triage_index_without_a_sort(world: World) -> None:
    """The order claim-next asks for is the index's order: the first free row, no sort of the queue."""
    send(world, "crit", 0.9)
    now = timezone.now()
    qs = (ReviewItem.objects.filter(claim_statement.claimable(now)).order_by(*triage.ORDER)
          .select_for_update(skip_locked=True, of=("self",))[:1])
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("SET LOCAL enable_sort = off")  # may the index serve the order? (stats vary per run)
        plan = qs.explain()
    assert "review_triage" in plan
    assert "Sort" not in plan


def test_each_filter_and_the_search(world: World) -> None:
    crit = send(world, "crit", 0.9, subject="applicant-77")
    low = send(world, "sup", 0.3, subject="listener-12")
    audit = send(world, "sup", 0.4, subject="listener-99")
    ReviewItem.objects.filter(pk=audit.pk).update(kind=ReviewItem.Kind.AUDIT)
    old = send(world, "sup", 0.1, subject="listener-old")
    ReviewItem.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=45))

    assert set(listed(world, "?system=crit")) == {crit.public_id}
    assert set(listed(world, "?system=sup")) == {low.public_id, audit.public_id, old.public_id}
    assert set(listed(world, "?kind=audit")) == {audit.public_id}
    assert set(listed(world, "?kind=gate&system=sup")) == {low.public_id, old.public_id}
    assert set(listed(world, "?level=1")) == {crit.public_id}
    assert set(listed(world, "?level=2")) == {low.public_id, audit.public_id, old.public_id}
    assert set(listed(world, "?reason=critical")) == {crit.public_id}
    assert set(listed(world, "?reason=THRESHOLD")) == {low.public_id, audit.public_id, old.public_id}
    assert set(listed(world, "?older=30")) == {old.public_id}
    assert set(listed(world, "?older=0")) == {crit.public_id, low.public_id, audit.public_id, old.public_id}
    # Search: part of a subject, a decision id with its prefix, or bare.
    assert set(listed(world, "?q=listener-1")) == {low.public_id}
    assert set(listed(world, "?q=APPLICANT")) == {crit.public_id}
    assert set(listed(world, f"?q=dec_{low.decision_id.hex}")) == {low.public_id}
    assert set(listed(world, f"?q={audit.decision_id.hex}")) == {audit.public_id}
    assert listed(world, f"?q=dec_{'0' * 32}") == []
    # Filters combine.
    assert set(listed(world, "?system=sup&kind=gate&older=30&q=listener")) == {old.public_id}
    assert "No waiting item matches these filters." in page_of(world, "?system=crit&kind=audit")


def test_the_list_shows_the_models_output_and_level(world: World) -> None:
    item = send(world, "sup", 0.3, prediction={"output": {"items": ["t7", "t8"]}, "confidence": 0.3,
                                                 "model": "m"})
    html = page_of(world)
    row = html[html.index(f'data-item="{item.public_id}"'):]
    row = row[: row.index("</tr>")]
    assert "{&quot;items&quot;: [&quot;t7&quot;, &quot;t8&quot;]}" in row
    assert ">L2<" in row
    assert ">0.3<" in row


def test_bad_filters_are_form_errors_not_failures(world: World) -> None:
    send(world, "crit", 0.9)
    for query in ("?older=-5", "?older=soon", "?level=9", "?kind=later", "?system=nope", f"?q={'x' * 300}"):
        r = world.person(world.operator).get(f"/review/{query}")
        assert r.status_code == 200, query
        assert 'class="errorlist"' in r.content.decode(), query
    # The valid filters still apply next to an invalid one.
    assert listed(world, "?older=-5&system=sup") == []


def test_pagination_keeps_the_filters(world: World) -> None:
    body = {"items": [decision_body(0.2, subject=f"s-{i}") for i in range(55)]}
    r = world.client_for("sup").post("/api/v1/systems/sup/decisions/batch", body, content_type="application/json")
    assert r.status_code in (200, 201), r.content
    send(world, "crit", 0.9)  # filtered out below
    first = page_of(world, "?system=sup&kind=gate&reason=threshold")
    assert "page 1 of 2" in first
    assert 'href="?system=sup&amp;kind=gate&amp;reason=threshold&amp;page=2"' in first
    second = listed(world, "?system=sup&kind=gate&reason=threshold&page=2")
    assert len(second) == 5
    assert all(ReviewItem.objects.get(id=i.removeprefix("rev_")).system.slug == "sup" for i in second)
    back = page_of(world, "?system=sup&kind=gate&reason=threshold&page=2")
    assert 'href="?system=sup&amp;kind=gate&amp;reason=threshold&amp;page=1"' in back
    assert "<strong id=\"queue-total\">55</strong>" in back


def test_overdue_items_are_marked_and_counted(world: World) -> None:
    items = [send(world, "sup", 0.3) for _ in range(3)] + [send(world, "crit", 0.9)]
    for item in items[:2]:
        due(item, timezone.now() - timedelta(minutes=5))
    html = page_of(world)
    assert html.count("· overdue") == 2
    assert "2 past due" in html
    assert '<strong id="queue-total">4</strong>' in html
    assert "1 past due" in page_of(world, f"?q=dec_{items[0].decision_id.hex}")
    assert "0 past due" in page_of(world, "?system=crit")


def test_live_figures_follow_the_filters(world: World) -> None:
    r = world.person(world.operator).get("/review/?part=totals&system=sup")
    assert r.json() == {"total": 0, "overdue": 0, "oldest_age_s": None, "total_more": False, "overdue_more": False}
    old = send(world, "sup", 0.3)
    ReviewItem.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=3),
                                                due_at=timezone.now() - timedelta(seconds=1))
    send(world, "sup", 0.4)
    send(world, "crit", 0.9)
    t = world.person(world.operator).get("/review/?part=totals&system=sup").json()
    assert (t["total"], t["overdue"]) == (2, 1)
    assert 180 <= t["oldest_age_s"] < 240
    assert world.person(world.operator).get("/review/?part=totals").json()["total"] == 3
    # Resolved items leave the figures.
    item = actions.claim_next(world.operator, "crit")
    assert item is not None
    actions.resolve(world.operator, item.id, "reject", "no")
    assert world.person(world.operator).get("/review/?part=totals").json()["total"] == 2


def test_counts_stop_at_the_cap_and_say_so(world: World, monkeypatch: Any) -> None:
    """Counting a huge queue would take too long: the page counts to the cap and says "cap+"."""
    monkeypatch.setattr(triage, "COUNT_CAP", 3)
    items = [send(world, "sup", 0.3) for _ in range(5)]
    for item in items:
        due(item, timezone.now() - timedelta(minutes=1))
    html = page_of(world)
    assert '<strong id="queue-total">3+</strong>' in html
    assert "3+ past due" in html
    assert len(listed(world)) == 5  # the rows are all there
    monkeypatch.setattr(views, "PER_PAGE", 2)  # paging past the cap: each page, and "of N+"
    assert "page 1 of 2+" in page_of(world)
    assert len(listed(world, "?page=3")) == 1
    assert "page 3 of 3<" in page_of(world, "?page=3")
    t = world.person(world.operator).get("/review/?part=totals").json()
    assert (t["total_more"], t["overdue_more"], t["total"]) == (True, True, 4)
    exact = world.person(world.operator).get(f"/review/?part=totals&q=dec_{items[0].decision_id.hex}").json()
    assert (exact["total"], exact["total_more"], exact["overdue"], exact["overdue_more"]) == (1, False, 1, False)


def test_the_list_lets_in_whoever_may_claim_editors_get_403_anonymous_logs_in(world: World) -> None:
    item = send(world, "crit", 0.9)
    assert listed(world, user=world.operator) == [item.public_id]
    for user in (world.editor, world.nobody):
        r = world.person(user).get("/review/")
        assert r.status_code == 403
        assert item.public_id not in r.content.decode()
        assert world.person(user).get("/review/?part=totals").status_code == 403
    # Admins: the list answers them as claim-next does (one rule for the review pages).
    admin = world.person(world.admin)
    listed_status = admin.get("/review/").status_code
    admin.get("/")  # a page first: the CSRF cookie for the POST below
    claim_status = admin.post("/review/next/", {"csrfmiddlewaretoken": admin.cookies["csrftoken"].value}).status_code
    assert (listed_status == 200) == (claim_status in (302, 200))
    r = Client().get("/review/?system=crit")
    assert r.status_code == 302
    assert r["Location"].startswith("/login/")


def test_every_input_has_a_label(world: World) -> None:
    html = page_of(world)
    form = html[html.index('id="queue-filters"'):]
    form = form[: form.index("</form>")]
    ids = re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', form)
    assert len(ids) == 6
    for i in ids:
        assert f'<label for="{i}">' in form, i
