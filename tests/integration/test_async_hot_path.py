"""The decision endpoint's async hot path (oversight.aio), as a client sees it and underneath.

Under a real ASGI server ``POST /api/v1/systems/{slug}/decisions`` runs on the event loop: the API
key is checked against the process's snapshot after the config epoch is read (Redis, PostgreSQL as
the fallback), and the decision with its review item is stored by one statement on the loop's own
psycopg pool. Django's test client never takes that path, so:

- the first part drives the real uvicorn subprocess (``live_server_url``) with httpx and checks
  answers, stored rows, kill switches and API keys changed in this process, bad input, and
  concurrent requests;
- the second part runs the async functions in this process on a real event loop
  (``asyncio.run``) to check what cannot be provoked through HTTP: one statement for a decision
  and its review item, Redis away, PostgreSQL away.

Everything is real PostgreSQL, Redis and uvicorn; what this process commits (``tworld``) is what
the server sees.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, OperationalError, connections

from oversight import actions, aio, config, decisions, hooks, ids
from oversight.config import SystemEntry
from oversight.models import Decision
from oversight.schemas import DecisionIn
from reviewqueue.actions import review_items_for
from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body, free_port

T = TypeVar("T")

DECISIONS = "/api/v1/systems/{}/decisions"
FALLBACKS = {"crit": {"decision": "refer"}, "sup": {"items": ["safe"]}, "auto": {"label": "hold"}}
ANSWER_FIELDS = ("id", "system", "status", "route", "output", "confidence", "reasons", "created_at", "occurred_at")


# --- helpers ----------------------------------------------------------------------------------


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def post_decision(http: httpx.Client, slug: str, body: dict[str, Any] | bytes, secret: str | None) -> httpx.Response:
    """POST one decision as a client service would; ``secret=None`` sends no Authorization header."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(bearer(secret) if secret is not None else {})}
    return http.post(DECISIONS.format(slug), content=content, headers=headers)


def decide(http: httpx.Client, world: World, slug: str, body: dict[str, Any]) -> dict[str, Any]:
    """A decision that must be accepted as new (201); its answer."""
    r = post_decision(http, slug, body, world.keys[slug])
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def assert_error(r: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """An API.md error: that status, JSON ``{"error": {"code", "message", "field"}}`` and nothing else."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "field"}
    assert (error["code"], error["field"]) == (code, field)
    assert isinstance(error["message"], str)
    assert error["message"]
    return error  # type: ignore[no-any-return]


def stored(public_id: str) -> Decision:
    return Decision.objects.get(id=public_id.removeprefix("dec_"))


async def post_all(base_url: str, slug: str, secret: str, bodies: Sequence[dict[str, Any]]) -> list[httpx.Response]:
    """All the requests at once, each on its own connection."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        return await asyncio.gather(
            *(http.post(DECISIONS.format(slug), json=body, headers=bearer(secret)) for body in bodies)
        )


def on_a_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` on a new event loop, then close that loop's pool and Redis client (oversight.aio)
    and the Django connection ``sync_to_async`` may have opened on its worker thread."""

    async def main() -> T:
        try:
            return await work
        finally:
            await aio.close()
            await sync_to_async(connections.close_all)()

    return asyncio.run(main())


def gate_entry(slug: str) -> SystemEntry:
    """The system as the gate sees it, loaded afresh from the database."""
    config.cache.clear()
    return config.cache.current().systems_by_slug[slug]


def prepared(slug: str, body: dict[str, Any]) -> tuple[SystemEntry, Decision, list[Any]]:
    entry = gate_entry(slug)
    d, rows = decisions.prepare_one(entry, DecisionIn.model_validate(body))
    return entry, d, rows


@pytest.fixture
def http(live_server_url: str) -> Iterator[httpx.Client]:
    # The server is started with this process's environment: it serves decisions on the event loop too.
    assert settings.ASYNC_HOT_PATH, "OVERSIGHT_ASYNC_HOT_PATH is off: the live server would take the sync path"
    with httpx.Client(base_url=live_server_url, timeout=15) as client:
        yield client


# --- through the live server: answers and stored rows -----------------------------------------


def test_level_3_decision_is_released_stored_and_readable(tworld, http):
    body = decide(http, tworld, "auto", decision_body(0.05))
    assert body["id"].startswith("dec_")
    assert (body["system"], body["status"], body["route"]) == ("auto", "released", "auto")
    assert body["output"] == {"items": ["t1", "t9"]}
    assert body["reasons"] == ["level 3 (autonomous): released"]

    got = http.get(f"/api/v1/decisions/{body['id']}", headers=bearer(tworld.keys["auto"]))
    assert got.status_code == 200, got.text
    assert {f: got.json()[f] for f in ANSWER_FIELDS} == {f: body[f] for f in ANSWER_FIELDS}

    row = stored(body["id"])
    assert row.system_id == tworld.autonomous.id
    assert (row.status, row.route, row.output) == ("released", "auto", {"items": ["t1", "t9"]})
    assert (row.subject, row.context, row.features) == ("user-1", {"hour": 23}, {"tempo": 171.0})
    assert row.released_at == row.created_at
    assert not ReviewItem.objects.exists()


def test_level_1_decision_waits_with_exactly_one_gate_review_item(tworld, http):
    body = decide(http, tworld, "crit", decision_body(0.99))
    assert (body["status"], body["route"], body["output"]) == ("pending_review", "human", None)
    row = stored(body["id"])
    assert (row.system_id, row.status, row.released_at) == (tworld.critical.id, "pending_review", None)
    items = list(ReviewItem.objects.filter(decision=row))
    assert len(items) == 1
    assert (items[0].kind, items[0].status, items[0].system_id) == ("gate", "open", tworld.critical.id)
    assert items[0].due_at == row.created_at + timedelta(seconds=tworld.critical.review_sla_s)
    assert ReviewItem.objects.count() == 1


def test_idempotency_key_replays_the_same_body_and_refuses_another(tworld, http):
    key = tworld.keys["sup"]
    body = decision_body(0.62, idempotency_key="req-async-1")
    first = post_decision(http, "sup", body, key)
    assert first.status_code == 201, first.text
    again = post_decision(http, "sup", body, key)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    # The same JSON with its keys in another order is the same body.
    reordered = json.dumps(dict(reversed(list(body.items())))).encode()
    assert post_decision(http, "sup", reordered, key).json()["id"] == first.json()["id"]
    assert Decision.objects.count() == 1

    conflict = post_decision(http, "sup", decision_body(0.10, idempotency_key="req-async-1"), key)
    error = assert_error(conflict, 409, "idempotency_conflict", "idempotency_key")
    assert "'req-async-1'" in error["message"]
    assert Decision.objects.count() == 1
    assert stored(first.json()["id"]).confidence == 0.62


# --- through the live server: changes made in this process reach the very next request ---------


def test_system_kill_switch_reaches_the_very_next_decision(tworld, http):
    assert decide(http, tworld, "sup", decision_body(0.9))["route"] == "auto"  # the server holds a snapshot

    actions.set_killswitch(tworld.admin, "system", True, "drift on tempo", "sup")
    killed = decide(http, tworld, "sup", decision_body(0.9))
    assert (killed["status"], killed["route"], killed["output"]) == ("fallback", "killed", FALLBACKS["sup"])
    assert killed["reasons"][0] == "system kill switch engaged: drift on tempo"
    assert stored(killed["id"]).route == "killed"
    assert decide(http, tworld, "auto", decision_body(0.9))["route"] == "auto"  # other systems go on

    actions.set_killswitch(tworld.admin, "system", False, "", "sup")
    restored = decide(http, tworld, "sup", decision_body(0.9))
    assert (restored["status"], restored["route"], restored["output"]) == ("released", "auto", {"items": ["t1", "t9"]})


def test_global_kill_switch_reaches_the_very_next_decision_of_every_system(tworld, http):
    for slug in FALLBACKS:
        decide(http, tworld, slug, decision_body(0.9))

    actions.set_killswitch(tworld.admin, "global", True, "incident 42")
    for slug, fallback in FALLBACKS.items():
        body = decide(http, tworld, slug, decision_body(0.99))
        assert (body["status"], body["route"], body["output"]) == ("fallback", "killed", fallback)
        assert body["reasons"][0] == "global kill switch engaged: incident 42"
    assert ReviewItem.objects.count() == 1  # the level-1 decision before the switch; the killed one is not queued

    actions.set_killswitch(tworld.admin, "global", False, "")
    assert decide(http, tworld, "auto", decision_body(0.9))["route"] == "auto"
    assert decide(http, tworld, "crit", decision_body(0.9))["route"] == "human"


def test_a_key_created_after_the_server_loaded_its_snapshot_works_at_once(tworld, http):
    decide(http, tworld, "sup", decision_body(0.9))  # the server now holds a snapshot without the new key
    _, secret = actions.create_api_key(tworld.admin, tworld.supervised, "rotated")
    r = post_decision(http, "sup", decision_body(0.9), secret)
    assert r.status_code == 201, r.text
    assert stored(r.json()["id"]).system_id == tworld.supervised.id


def test_a_revoked_key_is_refused_on_the_very_next_request(tworld, http):
    key, secret = actions.create_api_key(tworld.admin, tworld.supervised, "leaked")
    # The server's snapshot now knows the key: only the epoch check on the next request can refuse it.
    assert post_decision(http, "sup", decision_body(0.9), secret).status_code == 201

    actions.revoke_api_key(tworld.admin, key)
    assert_error(post_decision(http, "sup", decision_body(0.9), secret), 401, "unauthenticated")
    assert Decision.objects.count() == 1
    assert decide(http, tworld, "sup", decision_body(0.9))["status"] == "released"  # the system's other key


# --- through the live server: bad input gets API.md errors, never a 500 ------------------------


@pytest.mark.parametrize(
    ("url_slug", "key_of", "body", "status", "code", "field"),
    [
        pytest.param("sup", "sup", b'{"prediction": {"output": 1, ', 400, "invalid_json", None, id="malformed-json"),
        pytest.param("sup", "sup", decision_body("high"), 422, "invalid", "prediction.confidence", id="bad-confidence"),
        pytest.param("nope", "sup", decision_body(0.9), 404, "not_found", None, id="unknown-system"),
        pytest.param("sup", None, decision_body(0.9), 401, "unauthenticated", None, id="no-authorization"),
        pytest.param("sup", "wrong", decision_body(0.9), 401, "unauthenticated", None, id="wrong-key"),
        pytest.param("sup", "auto", decision_body(0.9), 404, "not_found", None, id="another-systems-key"),
    ],
)
def test_bad_requests_get_api_errors(tworld, http, url_slug, key_of, body, status, code, field):
    decide(http, tworld, "sup", decision_body(0.9))  # the server holds a snapshot that knows this world's keys
    secrets: dict[str | None, str | None] = {**tworld.keys, "wrong": "ovk_not-a-key-of-anyone", None: None}
    secret = secrets[key_of]
    assert_error(post_decision(http, url_slug, body, secret), status, code, field)
    assert Decision.objects.count() == 1


# --- through the live server: concurrent requests -------------------------------------------


def test_concurrent_decisions_are_all_stored(tworld, live_server_url):
    bodies = [decision_body(0.9 if i % 2 else 0.2, idempotency_key=f"burst-{i}") for i in range(40)]
    answers = asyncio.run(post_all(live_server_url, "sup", tworld.keys["sup"], bodies))
    assert [r.status_code for r in answers] == [201] * 40, [r.text for r in answers if r.status_code != 201]
    sent = {r.json()["id"]: body for r, body in zip(answers, bodies, strict=True)}
    assert len(sent) == 40
    rows = {d.public_id: d for d in Decision.objects.filter(system=tworld.supervised)}
    assert rows.keys() == sent.keys()
    assert all(rows[i].idempotency_key == body["idempotency_key"] for i, body in sent.items())
    pending = {i for i, r in rows.items() if r.status == "pending_review"}
    assert len(pending) == 20
    assert {f"dec_{item.decision_id.hex}" for item in ReviewItem.objects.all()} == pending


def test_concurrent_retries_with_one_key_store_one_decision(tworld, live_server_url):
    body = decision_body(0.2, idempotency_key="retry-storm")  # pending: a review item is written too
    answers = asyncio.run(post_all(live_server_url, "sup", tworld.keys["sup"], [body] * 10))
    assert sorted(r.status_code for r in answers) == [200] * 9 + [201], [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    row = Decision.objects.get()
    assert row.public_id == answers[0].json()["id"]
    assert ReviewItem.objects.get().decision_id == row.id


# --- in this process, on a real event loop ----------------------------------------------------


def one_clashing_review_item(system: SystemEntry, chosen: Sequence[Decision]) -> list[ReviewItem]:
    """A row source whose row takes the review item's primary key (with ``ids.uuid7`` fixed)."""
    return review_items_for(system, chosen)[:1]


def test_astore_one_writes_a_decision_and_its_review_item_in_one_statement(tworld, monkeypatch):
    monkeypatch.setattr(hooks, "decision_rows", [*hooks.decision_rows, (one_clashing_review_item, lambda d: True)])
    monkeypatch.setattr(ids, "uuid7", lambda: uuid.UUID(int=7))
    entry, d, rows = prepared("crit", decision_body(0.9))
    assert [(type(r), r.id) for r in rows] == [(ReviewItem, uuid.UUID(int=7))] * 2

    with pytest.raises(IntegrityError):
        on_a_loop(decisions.astore_one(entry, d, rows))
    assert not Decision.objects.exists()  # the review items failed, so the decision was not written either
    assert not ReviewItem.objects.exists()

    monkeypatch.undo()
    entry, d, rows = prepared("crit", decision_body(0.9))
    result = on_a_loop(decisions.astore_one(entry, d, rows))
    assert (result.decision, result.replayed, result.error) == (d, False, None)
    assert Decision.objects.get().id == d.id
    assert ReviewItem.objects.get().decision_id == d.id


def test_redis_away_the_async_epoch_check_reads_postgresql(tworld, settings):
    held = config.cache.current()  # what this process holds before the change
    assert held.systems_by_slug["sup"].kills.system_reason is None
    actions.set_killswitch(tworld.admin, "system", True, "Redis is down and so is trust", "sup")
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # the new loop's Redis client connects here
    config.redis_epoch._down_until = 0.0

    async def check_twice() -> tuple[config.Snapshot, config.Snapshot, bool]:
        first = await config.cache.acurrent()
        redis_marked_away = config.redis_epoch._down_until > time.monotonic()
        return first, await config.cache.acurrent(), redis_marked_away

    started = time.monotonic()
    try:
        first, second, redis_marked_away = on_a_loop(check_twice())
        elapsed = time.monotonic() - started
    finally:
        config.redis_epoch._down_until = 0.0
        config.cache.clear()
    assert redis_marked_away  # the epoch could only come from PostgreSQL
    assert elapsed < 1.0  # a Redis that is away costs milliseconds, not retries
    assert first.epoch > held.epoch
    assert first.systems_by_slug["sup"].kills.system_reason == "Redis is down and so is trust"
    assert first.systems_by_slug["auto"].kills.system_reason is None
    assert second is first


def test_postgresql_away_astore_one_raises_djangos_operational_error(tworld, settings, monkeypatch):
    entry, d, rows = prepared("auto", decision_body(0.9))
    settings.DATABASE_POOL_TIMEOUT = 0.5
    # aio's pool takes its parameters from the connection object's settings_dict (the very dict of
    # settings.DATABASES["default"]); the settings fixture would not put a nested value back.
    monkeypatch.setitem(connections["default"].settings_dict, "PORT", str(free_port()))
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError) as caught:
            on_a_loop(decisions.astore_one(entry, d, rows))
    finally:
        monkeypatch.undo()  # before the ORM runs again
    assert time.monotonic() - started < 3
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)  # translated, so the API answers 503
    assert not Decision.objects.exists()
