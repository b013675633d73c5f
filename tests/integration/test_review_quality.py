"""The reviewer-quality page (/review/quality/) and reviewqueue.quality on real PostgreSQL: Cohen's
kappa between two operators' verdicts on the same decisions, people's agreement with each model,
each operator's throughput and median handling time (clock injected with ``now=``), the period
and system filter, empty states, bad input and who may see the page."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from oversight import access
from oversight import actions as system_actions
from oversight.errors import ActionError
from reviewqueue import actions, quality
from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body

A, R, M = "approve", "reject", "modify"

# (model, verdict on the first (gate) item, verdict on the second opinion) for each decision.
# First verdicts A A A R M R, second A A R R R A: n = 6, same 3; marginals first A3 R2 M1, second
# A3 R3 M0: Σ r·c = 9 + 6 = 15; kappa = (6·3 − 15) / (6² − 15) = 3/21 = 1/7.
PLAN = [("m-a", A, A), ("m-a", A, A), ("m-a", A, R), ("m-a", R, R), ("m-b", M, R), ("m-b", R, A)]
KAPPA = 1 / 7


def second_operator(name: str = "operator2") -> Any:
    user = get_user_model().objects.create_user(name, password="correct-horse-battery")
    user.groups.add(Group.objects.get(name=access.OPERATOR))
    return user


def double_review(world: World) -> None:
    system_actions.update_system(world.admin, "sup", {"double_review_rate": 1.0}, "measure reviewer agreement")


def send(world: World, model: str, confidence: float = 0.3) -> str:
    """A decision sup must review before release (confidence under its 0.6 threshold): its hex id."""
    body = decision_body(confidence, prediction={"output": {"items": ["t1"]}, "confidence": confidence,
                                                 "model": model})
    r = world.client_for("sup").post("/api/v1/systems/sup/decisions", body, content_type="application/json")
    assert r.status_code == 201, r.content
    return str(r.json()["id"].removeprefix("dec_"))


def judge(user: Any, item: ReviewItem, action: str, at: datetime) -> ReviewItem:
    out = {"items": ["t2"]} if action == M else None
    return actions.resolve(user, item.id, action, note="test", output=out, output_given=action == M, now=at)


@dataclass
class Planned:
    decisions: list[str]
    verdicts: dict[tuple[str, str], str]  # (decision hex, kind) → verdict


def plan(world: World, rows: list[tuple[str, str, str]] = PLAN) -> Planned:
    double_review(world)
    decisions = [send(world, model) for model, _, _ in rows]
    verdicts: dict[tuple[str, str], str] = {}
    for d, (_, first, second) in zip(decisions, rows, strict=True):
        verdicts[(d, ReviewItem.Kind.GATE)] = first
        verdicts[(d, ReviewItem.Kind.SECOND)] = second
    assert ReviewItem.objects.filter(kind=ReviewItem.Kind.SECOND).count() == len(rows)
    return Planned(decisions, verdicts)


def work(user: Any, planned: Planned, claims: list[tuple[datetime, float]]) -> list[ReviewItem]:
    """``user`` takes the next item for each (claim time, seconds until the verdict), as planned."""
    done = []
    for at, handling_s in claims:
        item = actions.claim_next(user, "sup", now=at)
        assert item is not None
        verdict = planned.verdicts[(item.decision_id.hex, item.kind)]
        done.append(judge(user, item, verdict, at + timedelta(seconds=handling_s)))
    return done


def hour_start(hours_ago: int) -> datetime:
    now = timezone.localtime()
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago)


def page(client: Client, query: str = "") -> tuple[Any, str]:
    r = client.get(f"/review/quality/{query}")
    assert r.status_code == 200, r.status_code
    return r, r.content.decode()


def row_text(body: str, attr: str) -> str:
    """The text of the table row with this data attribute (e.g. ``data-operator="operator"``), tags stripped."""
    m = re.search(rf"<tr {re.escape(attr)}[^>]*>(.*?)</tr>", body, re.S)
    assert m, attr
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", m.group(1))).split())


@pytest.fixture
def two_operators(world: World) -> tuple[World, Any, Planned]:
    """Six sup decisions, each judged by both operators as PLAN says, all in the last 4 hours.

    operator: claims 3 items in the hour starting 4 h ago and 3 in the next hour, taking 10, 20,
    30, 40, 50, 60 s: median 35 s, 6 items over 2 active hours. operator2: all 6 in the hour
    starting 2 h ago, taking 5, 5, 6, 100, 100, 100 s: median 53 s, 6 per active hour."""
    op2 = second_operator()
    planned = plan(world)
    h = hour_start(4)
    work(world.operator, planned, [(h + timedelta(minutes=5 + 5 * i), 10 + 10 * i) for i in range(3)]
         + [(h + timedelta(hours=1, minutes=5 + 5 * i), 40 + 10 * i) for i in range(3)])
    work(op2, planned, [(h + timedelta(hours=2, minutes=5 + 5 * i), s)
                        for i, s in enumerate([5, 5, 6, 100, 100, 100])])
    return world, op2, planned


def last_day() -> tuple[datetime, datetime]:
    now = timezone.now()
    return now - timedelta(hours=24), now


def test_each_decision_is_judged_by_two_different_operators(two_operators: tuple[World, Any, Planned]) -> None:
    world, op2, planned = two_operators
    for d in planned.decisions:
        items = list(ReviewItem.objects.filter(decision_id=d))
        assert sorted(i.kind for i in items) == [ReviewItem.Kind.GATE, ReviewItem.Kind.SECOND]
        assert all(i.status == ReviewItem.Status.RESOLVED for i in items)
        assert {i.resolved_by_id for i in items} == {world.operator.pk, op2.pk}


def test_the_same_operator_never_gets_both_items_of_one_decision(world: World) -> None:
    planned = plan(world, [("m-a", A, A)])
    first = actions.claim_next(world.operator)
    assert first is not None
    judge(world.operator, first, planned.verdicts[(first.decision_id.hex, first.kind)], timezone.now())
    assert actions.claim_next(world.operator) is None  # the other item is the same decision's
    other = ReviewItem.objects.exclude(id=first.id).get()
    with pytest.raises(ActionError, match="second opinion must come from another operator"):
        actions.claim_item(world.operator, other.id)
    taken = actions.claim_next(second_operator())
    assert taken is not None
    assert taken.id == other.id


def test_kappa_from_quality(two_operators: tuple[World, Any, Planned]) -> None:
    q = quality.quality(*last_day())
    assert [(k.system, k.pairs, k.same) for k in q.kappas] == [("sup", 6, 3)]
    assert q.kappas[0].kappa == pytest.approx(KAPPA)
    assert q.kappas[0].agreement == pytest.approx(0.5)
    assert (q.overall.pairs, q.overall.kappa) == (6, pytest.approx(KAPPA))
    assert not q.pairs_capped
    # The pair's order is (first item, second opinion), whoever judged which.
    assert sorted(quality.pairs(*last_day())) == sorted(("sup", f, s) for _, f, s in PLAN)


def test_a_pair_counts_in_the_period_of_its_later_verdict_whichever_item_that_is(world: World) -> None:
    op2 = second_operator()
    planned = plan(world, [("m-a", A, R), ("m-a", R, M), ("m-a", A, A)])
    items = {(i.decision_id.hex, i.kind): i for i in ReviewItem.objects.all()}
    t0 = timezone.now() - timedelta(hours=3)

    def by(user: Any, d: str, kind: str, at: datetime) -> None:
        item = actions.claim_item(user, items[(d, kind)].id, now=at - timedelta(seconds=30))
        judge(user, item, planned.verdicts[(d, kind)], at)

    d1, d2, d3 = planned.decisions
    by(op2, d1, ReviewItem.Kind.SECOND, t0 - timedelta(hours=2))  # the second opinion first,
    by(world.operator, d1, ReviewItem.Kind.GATE, t0 - timedelta(minutes=30))  # completed by the first item
    by(world.operator, d2, ReviewItem.Kind.GATE, t0 - timedelta(minutes=50))
    by(op2, d2, ReviewItem.Kind.SECOND, t0 + timedelta(minutes=10))  # completed after t0
    by(world.operator, d3, ReviewItem.Kind.GATE, t0 - timedelta(minutes=40))
    by(op2, d3, ReviewItem.Kind.SECOND, t0 - timedelta(minutes=40))  # a tie: counted once

    hour = t0 - timedelta(hours=1)
    assert quality.pairs(hour, t0) == [("sup", A, R), ("sup", A, A)]  # newest first, (first, second)
    assert quality.pairs(t0 - timedelta(minutes=20), t0) == []
    assert quality.pairs(hour, t0 + timedelta(hours=1)) == [("sup", R, M), ("sup", A, R), ("sup", A, A)]
    assert quality.pairs(hour, t0 + timedelta(hours=1), cap=2) == [("sup", R, M), ("sup", A, R)]
    capped = quality.quality(hour, t0 + timedelta(hours=1), cap=2)
    assert capped.pairs_capped
    assert capped.overall.pairs == 2
    assert not quality.quality(hour, t0 + timedelta(hours=1), cap=3).pairs_capped


def test_agreement_with_each_model_counts_every_verdict_by_a_person(
    two_operators: tuple[World, Any, Planned],
) -> None:
    q = quality.quality(*last_day())
    # m-a: A A, A A, A R, R R → 8 verdicts, 5 approvals; m-b: M R, R A → 4 verdicts, 1 approval.
    assert [(m.system, m.model, m.verdicts, m.agreeing) for m in q.models] == [("sup", "m-a", 8, 5),
                                                                               ("sup", "m-b", 4, 1)]
    assert q.models[0].share == pytest.approx(5 / 8)


def test_throughput_and_median_handling_time(two_operators: tuple[World, Any, Planned]) -> None:
    q = quality.quality(*last_day())
    got = {o.username: (o.resolved, o.active_hours, o.per_active_hour, o.median_handling_s, o.timed)
           for o in q.operators}
    assert got == {"operator": (6, 2, 3.0, pytest.approx(35.0), 6), "operator2": (6, 1, 6.0, pytest.approx(53.0), 6)}
    assert [o.username for o in q.operators] == ["operator", "operator2"]  # busiest first, then by name


def test_the_page_shows_the_figures(two_operators: tuple[World, Any, Planned]) -> None:
    world, _, _ = two_operators
    r, body = page(world.person(world.operator), "?period=24h")
    assert r.context["q"].overall.kappa == pytest.approx(KAPPA)
    assert row_text(body, 'data-system="sup"') == "sup 6 3 (50%) 0.14"
    assert "1 = full agreement, 0 = no better than chance" in body
    assert row_text(body, 'data-system="sup" data-model="m-a"') == "sup m-a 8 5 (62%)"
    assert row_text(body, 'data-system="sup" data-model="m-b"') == "sup m-b 4 1 (25%)"
    assert row_text(body, 'data-operator="operator"') == "operator 6 2 3.0 35 s"
    assert row_text(body, 'data-operator="operator2"') == "operator2 6 1 6.0 53 s"
    assert "clock hours" in body  # what "per active hour" divides by
    assert "Last 24 hours" in body
    # Admins see it too, with the same figures.
    r, _ = page(world.person(world.admin), "?period=24h&system=sup")
    assert r.context["q"].overall.pairs == 6


def test_the_period_and_the_system_choose_what_is_counted(two_operators: tuple[World, Any, Planned]) -> None:
    world, op2, _ = two_operators
    # One more pair, judged three days ago (both approve): in the last 7 days, not in the last 24 hours.
    planned = Planned([send(world, "m-a")], {})
    d = planned.decisions[0]
    planned.verdicts = {(d, ReviewItem.Kind.GATE): A, (d, ReviewItem.Kind.SECOND): A}
    then = timezone.now() - timedelta(days=3)
    work(world.operator, planned, [(then, 30)])
    work(op2, planned, [(then + timedelta(minutes=1), 30)])

    c = world.person(world.operator)
    day, _ = page(c, "?period=24h")
    assert day.context["q"].overall.pairs == 6
    week, _ = page(c)  # the default: the last 7 days
    # first A A A R M R A, second A A R R R A A: n = 7, same 4, Σ r·c = 4·4 + 2·3 = 22; (28 − 22) / (49 − 22)
    assert week.context["q"].overall.pairs == 7
    assert week.context["q"].overall.kappa == pytest.approx(6 / 27)
    assert week.context["period_label"] == "last 7 days"
    assert week.context["form"]["period"].value() == "7d"  # and so selected

    crit, body = page(c, "?system=crit&period=30d")
    q = crit.context["q"]
    assert (q.system, q.overall.pairs, q.models, q.operators) == ("crit", 0, [], [])
    assert 'id="kappa-empty"' in body
    assert 'id="models-empty"' in body
    assert 'id="operators-empty"' in body


def test_an_unfinished_pair_or_an_expiry_is_not_counted(world: World) -> None:
    planned = plan(world, [("m-a", A, A), ("m-a", R, R)])
    now = timezone.now()
    work(world.operator, planned, [(now - timedelta(minutes=10), 20), (now - timedelta(minutes=9), 40)])
    q = quality.quality(now - timedelta(hours=1), timezone.now())
    assert q.overall.pairs == 0  # the second opinions still wait
    assert [(o.username, o.resolved) for o in q.operators] == [("operator", 2)]
    assert [(m.verdicts, m.agreeing) for m in q.models] == [(2, 1)]
    # The system expires what nobody judged: no person's verdict, no one's throughput.
    ReviewItem.objects.filter(status=ReviewItem.Status.OPEN).update(
        status=ReviewItem.Status.RESOLVED, action=ReviewItem.Action.EXPIRE, resolved_at=now)
    q = quality.quality(now - timedelta(hours=1), timezone.now())
    assert (q.overall.pairs, [o.resolved for o in q.operators], [m.verdicts for m in q.models]) == (0, [2], [2])


def test_a_verdict_without_a_claim_of_ones_own_has_no_handling_time(two_operators: tuple[World, Any, Planned]) -> None:
    world, _, _ = two_operators
    # As an override from the decision's page answers an audit item: resolved by someone who did not claim it.
    admin_item = ReviewItem.objects.filter(resolved_by=world.operator).order_by("resolved_at").first()
    assert admin_item is not None
    ReviewItem.objects.filter(id=admin_item.id).update(resolved_by=world.admin)
    ops = {o.username: o for o in quality.quality(*last_day()).operators}
    assert (ops["admin"].resolved, ops["admin"].timed, ops["admin"].median_handling_s) == (1, 0, None)
    assert ops["admin"].handling_text == "—"
    assert (ops["operator"].resolved, ops["operator"].timed) == (5, 5)
    assert ops["operator"].median_handling_s == pytest.approx(40.0)  # 20 30 40 50 60


def test_empty_page_says_what_to_do(world: World) -> None:
    _, body = page(world.person(world.operator))
    assert "No second opinions yet" in body
    assert "ask an admin to set a system's Second-opinion share (double_review_rate)" in body
    assert 'id="models-empty"' in body
    assert 'id="operators-empty"' in body
    _, body = page(world.person(world.admin))
    assert "set a system's Second-opinion share (double_review_rate) on its" in body
    assert 'href="/systems/"' in body
    _, body = page(world.person(world.admin), "?system=sup")
    assert "set sup's Second-opinion share (double_review_rate) on <a href=\"/systems/sup/\">its page</a>" in body


def test_bad_input_is_a_form_error_not_a_500(world: World) -> None:
    c = world.person(world.operator)
    r, body = page(c, "?period=1y&system=sup")
    assert r.context["form"].errors["period"] == ["Unknown period 1y: choose the last 24 hours, 7 days or 30 days."]
    assert 'class="field invalid"' in body
    assert "Unknown period 1y" in body
    assert r.context["period_label"] == "last 7 days"
    assert r.context["system"] == "sup"
    assert '<option value="7d" selected>' in body
    assert '<option value="sup" selected>' in body
    r, body = page(c, "?system=%3Cscript%3Enope&period=24h")
    assert "No system &lt;script&gt;nope" in body
    assert "<script>nope" not in body
    assert r.context["system"] == ""
    assert r.context["period_label"] == "last 24 hours"
    assert '<option value="" selected>all systems</option>' in body


def test_who_may_see_the_page(world: World) -> None:
    for who in (world.operator, world.admin):
        assert world.person(who).get("/review/quality/").status_code == 200
    for who in (world.editor, world.nobody):
        r = world.person(who).get("/review/quality/")
        assert r.status_code == 403
        assert "This page needs the <strong>operator or admin</strong> role" in r.content.decode()
    r = Client().get("/review/quality/")
    assert r.status_code == 302
    assert r["Location"].startswith("/login/")


def test_hours_and_times_follow_the_current_time_zone(world: World, settings: Any) -> None:
    """Active hours are clock hours of the current time zone (here UTC+05:30, so the half hours of
    UTC split), and the page's times are shown in it."""
    settings.TIME_ZONE = "Asia/Kolkata"
    send(world, "m-a")
    send(world, "m-a")
    utc_hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    for minute in (10, 40):  # one UTC hour; 15:40 and 16:10 in Kolkata
        item = actions.claim_next(world.operator, now=utc_hour + timedelta(minutes=minute - 1))
        assert item is not None
        judge(world.operator, item, A, utc_hour + timedelta(minutes=minute))
    r, body = page(world.person(world.operator), "?period=24h")
    (op,) = r.context["q"].operators
    assert (op.resolved, op.active_hours, op.per_active_hour) == (2, 2, 1.0)
    until = timezone.localtime(r.context["q"].until, timezone.get_fixed_timezone(330))
    assert f'{until:%Y-%m-%d %H:%M} IST' in body
    assert "clock hours (IST)" in body
