"""Leases that follow people: claims handed out once under load, renewed by the open page's
heartbeat, given back when it closes, lapsed leases free at once and audited, a late resolution
refused; the operator's filter kept through claim → resolve → next."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from oversight import audit
from oversight.errors import ActionError
from oversight.models import AuditEvent, Decision
from reviewqueue import actions
from reviewqueue.models import ReviewItem
from tests.asgiclient import ApiClient
from tests.conftest import api_session, csrf_session, decision_body
from tests.integration.test_review_api import claim, new_operator, resolve, send, submit, token_client

LEASE = timedelta(seconds=actions.LEASE_S)


def submit_batch(world: Any, slug: str, n: int, confidence: float = 0.1) -> None:
    items = [decision_body(confidence, subject=f"{slug}-{i}") for i in range(n)]
    for start in range(0, n, 1000):
        r = world.client_for(slug).post(f"/api/v1/systems/{slug}/decisions/batch",
                                        json.dumps({"items": items[start:start + 1000]}),
                                        content_type="application/json")
        assert r.status_code == 200, r.content


def lease_events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# --- claims under load -----------------------------------------------------------------------


def test_32_threads_claiming_from_1000_items_claim_each_exactly_once(tworld):
    submit_batch(tworld, "crit", 1000)
    assert ReviewItem.objects.filter(status="open").count() == 1000
    people = [new_operator(f"op{i}") for i in range(32)]
    start = threading.Barrier(len(people))
    claimed: list[list[Any]] = [[] for _ in people]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait(timeout=10)
            while (item := actions.claim_next(people[n])) is not None:
                claimed[n].append(item.id)
                connection.close()  # back to the pool (10 connections), as a web worker's thread does
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(people))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    every = [i for ids in claimed for i in ids]
    assert len(every) == 1000
    assert len(set(every)) == 1000  # no double claims
    assert sum(1 for ids in claimed if ids) > 8  # really concurrent
    owners = dict(ReviewItem.objects.values_list("id", "claimed_by__username"))
    for n, ids in enumerate(claimed):
        assert all(owners[i] == f"op{n}" for i in ids)
    # Every claim is in the audit log, by its claimant, and the chain still verifies.
    events = AuditEvent.objects.filter(action="lease.claim")
    assert events.count() == 1000
    assert {e["data__item"] for e in events.values("data__item")} == {f"rev_{i.hex}" for i in every}
    assert audit.verify_log().intact


# --- lapsed leases, with an injected clock ---------------------------------------------------


def test_a_lapsed_lease_is_claimable_at_once_and_the_lapse_is_audited(world):
    submit(world, "crit", decision_body(0.9))
    other = new_operator("operator2")
    t0 = timezone.now()
    mine = actions.claim_next(world.operator, now=t0)
    assert mine is not None
    assert actions.claim_next(other, now=t0 + LEASE - timedelta(seconds=1)) is None  # still held
    taken = actions.claim_next(other, now=t0 + LEASE + timedelta(seconds=1))  # lapsed: free at once
    assert taken is not None
    assert taken.id == mine.id
    row = ReviewItem.objects.get()
    assert (row.claimed_by_id, row.lease_expires_at) == (other.pk, t0 + LEASE + timedelta(seconds=1) + LEASE)
    expired, = lease_events("lease.expire")
    assert (expired.actor_label, expired.data["held_by"], expired.reason) == (
        "system", "operator", "operator's lease ran out")
    assert expired.target == f"dec_{row.decision_id.hex}"
    assert [e.actor_label for e in lease_events("lease.claim")] == ["operator", "operator2"]


def test_the_heartbeat_renews_the_lease(world):
    submit(world, "crit", decision_body(0.9))
    other = new_operator("operator2")
    t0 = timezone.now()
    item = actions.claim_next(world.operator, now=t0)
    assert item is not None
    renewed = actions.heartbeat(world.operator, item.id, now=t0 + timedelta(seconds=200))
    assert renewed.lease_expires_at == t0 + timedelta(seconds=200) + LEASE
    assert actions.claim_next(other, now=t0 + LEASE + timedelta(seconds=1)) is None  # would have lapsed
    assert lease_events("lease.claim").__len__() == 1  # a renewal is not a new claim
    actions.resolve(world.operator, item.id, "approve", now=t0 + LEASE + timedelta(seconds=10))
    assert Decision.objects.get().status == "released"


def test_the_beat_job_puts_lapsed_claims_back_to_open(world):
    submit(world, "crit", decision_body(0.9))
    submit(world, "crit", decision_body(0.9))
    t0 = timezone.now()
    held = actions.claim_next(world.operator, now=t0)
    lapsing = actions.claim_next(world.operator, now=t0 - timedelta(seconds=100))
    assert held is not None
    assert lapsing is not None
    assert actions.expire_leases(t0 + LEASE - timedelta(seconds=50)) == 1
    lapsing.refresh_from_db()
    held.refresh_from_db()
    assert (lapsing.status, lapsing.claimed_by_id, lapsing.lease_expires_at) == ("open", None, None)
    assert (held.status, held.claimed_by_id) == ("claimed", world.operator.pk)
    expired, = lease_events("lease.expire")
    assert expired.data["item"] == lapsing.public_id
    assert actions.expire_leases(t0 + LEASE - timedelta(seconds=50)) == 0  # once only
    # The item's page shows it free, with its claim button, not "claimed by".
    page = world.person(new_operator("operator2")).get(f"/review/{lapsing.public_id}/").content.decode()
    assert "Claim and review" in page
    assert "Claimed by" not in page
    # expire_due (the beat task) runs the sweep too.
    assert actions.expire_due(t0 + LEASE + timedelta(seconds=1)) == 0
    held.refresh_from_db()
    assert held.status == "open"


# --- resolving after the lease ran out -------------------------------------------------------


def test_resolving_after_someone_else_claimed_is_a_409_on_the_api_and_a_message_on_the_page(world):
    made = submit(world, "crit", decision_body(0.9))
    a, b = token_client(world.operator), token_client(new_operator("operator2"))
    item = claim(a).json()["id"]
    ReviewItem.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert claim(b).json()["id"] == item
    r = resolve(a, item, action="approve")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    assert "claimed by operator2" in r.json()["error"]["message"]
    # The page: the operator's form comes back with the refusal, nothing done.
    page = csrf_session(world.operator)
    r = page.post(f"/review/{item}/act/", {"op": "approve", "note": "late", "then": "next"})
    assert r.status_code == 409
    assert "laimed by operator2; the item is theirs now" in r.content.decode()
    assert "Nothing was done." in r.content.decode()
    # Their heartbeat says so too, and leaves the item with operator2.
    r = page.post(f"/review/{item}/heartbeat/")
    assert r.status_code == 409
    assert r.json()["error"]["message"].startswith("Claimed by operator2; the item is theirs now")
    assert seen_status(world, made["id"]) == "pending_review"
    assert ReviewItem.objects.get().claimed_by.username == "operator2"


def seen_status(world: Any, decision_id: str) -> str:
    return str(world.client_for("crit").get(f"/api/v1/decisions/{decision_id}").json()["status"])


def test_a_lapsed_lease_nobody_took_must_be_claimed_again_before_resolving(world):
    made = submit(world, "crit", decision_body(0.9))
    op = api_session(world.operator)
    item = send(op, "/api/v1/review/claim").json()["id"]
    ReviewItem.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    r = resolve(op, item, action="approve")
    assert r.status_code == 409
    assert r.json()["error"]["message"] == "your lease ran out; claim it again (nobody else has taken it yet)"
    assert seen_status(world, made["id"]) == "pending_review"
    # The page's next heartbeat (here the API's) takes it again: the lapse and the claim are audited.
    r = send(op, f"/api/v1/review/{item}/heartbeat")
    assert r.status_code == 200
    assert r.json()["claimed_by"] == "operator"
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="lease.").order_by("id")] == [
        "lease.claim", "lease.expire", "lease.claim"]
    assert resolve(op, item, action="approve").status_code == 200
    assert seen_status(world, made["id"]) == "released"


def test_with_the_item_swept_back_to_open_resolving_asks_for_a_claim(world):
    submit(world, "crit", decision_body(0.9))
    item = actions.claim_next(world.operator, now=timezone.now() - LEASE - timedelta(seconds=5))
    assert item is not None
    assert actions.expire_leases() == 1
    with pytest.raises(ActionError) as refused:
        actions.resolve(world.operator, item.id, "reject")
    assert refused.value.code == "conflict"
    assert "claim this item before resolving it" in refused.value.message


# --- the page's heartbeat and give-back ------------------------------------------------------


def test_the_page_heartbeat_renews_and_answers_the_seconds_left(world):
    submit(world, "crit", decision_body(0.9))
    item = actions.claim_next(world.operator, now=timezone.now() - timedelta(seconds=250))
    assert item is not None
    page = csrf_session(world.operator)
    r = page.post(f"/review/{item.public_id}/heartbeat/")
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["claimed_by"], body["lease_s"]) == ("claimed", "operator", actions.LEASE_S)
    assert actions.LEASE_S - 5 <= body["seconds_left"] <= actions.LEASE_S
    item.refresh_from_db()
    assert item.lease_expires_at > timezone.now() + LEASE - timedelta(seconds=5)
    # The item page shows the timer and the keys on the buttons.
    html = page.get(f"/review/{item.public_id}/").content.decode()
    assert 'id="lease"' in html
    assert "left on your lease" in html
    for label in ("Approve (<kbd>A</kbd>)", "Reject (<kbd>R</kbd>)", "Give back (<kbd>G</kbd>)",
                  "Modify the output instead (<kbd>M</kbd>)", "(<kbd>J</kbd>)", "Keys (<kbd>?</kbd>)"):
        assert label in html
    # Without the CSRF token a heartbeat is refused.
    bare = world.person(world.operator)
    assert bare.post(f"/review/{item.public_id}/heartbeat/").status_code == 403


def test_closing_the_page_gives_the_item_back(world):
    submit(world, "crit", decision_body(0.9))
    item = actions.claim_next(world.operator)
    assert item is not None
    page = csrf_session(world.operator)
    r = page.post(f"/review/{item.public_id}/give-back/")  # what navigator.sendBeacon sends
    assert r.status_code == 204
    item.refresh_from_db()
    assert (item.status, item.claimed_by_id) == ("open", None)
    given, = lease_events("lease.give_back")
    assert (given.actor_label, given.reason, given.data["item"]) == (
        "operator", "the item's page was closed", item.public_id)
    r = page.post(f"/review/{item.public_id}/give-back/")  # a second beacon: nothing to give back
    assert r.status_code == 409
    assert r.json()["error"]["message"] == "This item is not claimed."
    assert page.post(f"/review/rev_{'0' * 32}/give-back/").status_code == 404


def test_give_back_by_the_api_and_the_button_is_audited(world):
    submit(world, "crit", decision_body(0.9))
    submit(world, "crit", decision_body(0.9))
    op = token_client(world.operator)
    first = claim(op).json()["id"]
    assert send(op, f"/api/v1/review/{first}/release").status_code == 200
    page = csrf_session(world.operator)
    r = page.post("/review/next/", {"system": "crit"})
    second = r.url.split("/")[2]
    r = page.post(f"/review/{second}/act/", {"op": "release", "system": "crit"})
    assert (r.status_code, r.url) == (302, "/review/?system=crit")  # back to the filtered list
    assert [e.actor_label for e in lease_events("lease.give_back")] == ["operator", "operator"]


# --- the filter stays ------------------------------------------------------------------------


def test_the_filter_stays_through_claim_resolve_next(world):
    for i in range(3):
        submit(world, "crit", decision_body(0.9, subject=f"crit-{i}"))
        submit(world, "sup", decision_body(0.1, subject=f"sup-{i}"))
    page = csrf_session(world.operator)
    r = page.post("/review/next/", {"system": "sup"})
    assert r.status_code == 302
    seen = []
    for _ in range(3):
        assert r.url.startswith("/review/rev_")
        assert r.url.endswith("/?system=sup")
        item = ReviewItem.objects.select_related("system").get(id=r.url.split("/")[2].removeprefix("rev_"))
        assert item.system.slug == "sup"
        seen.append(item.id)
        html = page.get(r.url).content.decode()
        assert 'name="system" value="sup"' in html  # the form carries the filter
        r = page.post(f"/review/{item.public_id}/act/", {"op": "approve", "then": "next", "system": "sup"})
    assert len(set(seen)) == 3
    assert r.url == "/review/?system=sup"  # no more sup items: back to the filtered list
    assert ReviewItem.objects.filter(system__slug="crit", status="open").count() == 3  # crit untouched


def test_next_passes_over_an_item_and_previous_goes_back(world):
    for i in range(3):
        submit(world, "crit", decision_body(0.9, subject=f"crit-{i}"))
    page = csrf_session(world.operator)
    first = page.post("/review/next/", {"system": "crit"}).url.split("/")[2]
    r = page.post(f"/review/{first}/act/", {"op": "approve", "then": "next", "system": "crit"})
    second = r.url.split("/")[2]
    html = page.get(r.url).content.decode()
    assert f'href="/review/{first}/?system=crit" id="previous"' in html  # K: the item resolved before
    # J: the second is given back and not handed out again to this person; the third comes.
    r = page.post("/review/next/", {"system": "crit", "skip": second})
    third = r.url.split("/")[2]
    assert third not in (first, second)
    assert ReviewItem.objects.get(id=second.removeprefix("rev_")).status == "open"
    assert lease_events("lease.give_back")[-1].reason == "passed over for the next item"
    r = page.post("/review/next/", {"system": "crit", "skip": third})
    assert r.url == "/review/?system=crit"  # only passed-over items are left
    # The first item's page has no earlier item to go back to.
    assert 'id="previous"' not in page.get(f"/review/{first}/").content.decode()


def test_an_unknown_system_in_the_filter_is_a_message_not_an_error(world):
    page = csrf_session(world.operator)
    r = page.post("/review/next/", {"system": "<nope>"})
    assert (r.status_code, r.url) == (302, "/review/?system=%3Cnope%3E")


# --- roles -----------------------------------------------------------------------------------


def test_only_operators_renew_or_give_back(world):
    submit(world, "crit", decision_body(0.9))
    item = actions.claim_next(world.operator)
    assert item is not None
    for who in (world.editor, world.nobody):
        page = csrf_session(who)
        assert page.post(f"/review/{item.public_id}/heartbeat/").status_code == 403
        assert page.post(f"/review/{item.public_id}/give-back/").status_code == 403
        assert send(api_session(who), f"/api/v1/review/{item.public_id}/heartbeat").status_code == 403
    key = world.client_for("crit")
    r = send(key, f"/api/v1/review/{item.public_id}/heartbeat")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    r = send(ApiClient(), f"/api/v1/review/{item.public_id}/heartbeat")
    assert r.status_code == 401
    anonymous = csrf_session(world.operator)
    del anonymous.cookies[settings.SESSION_COOKIE_NAME]
    r = anonymous.post(f"/review/{item.public_id}/heartbeat/")
    assert r.status_code == 302
    assert r.url.startswith("/login/")
    item.refresh_from_db()
    assert (item.status, item.claimed_by_id) == ("claimed", world.operator.pk)
    assert not lease_events("lease.give_back")
