"""The decision endpoint through a real uvicorn, as a client service sees it.

The live server (``live_server_url``) is the production stack in a subprocess; this process
commits what it needs (``tworld``) and reads what the server stored. Checked: answers and stored
rows per level, idempotency, kill switches and API keys changed here reaching the server's very
next decision, bad input as API.md errors, and concurrent requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import httpx
import pytest

from oversight import actions
from oversight.models import Decision
from reviewqueue.models import ReviewItem
from tests.conftest import World, decision_body, release_switch

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


@pytest.fixture
def http(live_server_url: str) -> Iterator[httpx.Client]:
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

    actions.set_killswitch(tworld.admin, "system", False, "fixed", "sup")
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

    release_switch(tworld.admin, "global")
    assert decide(http, tworld, "auto", decision_body(0.9))["route"] == "auto"
    assert decide(http, tworld, "crit", decision_body(0.9))["route"] == "human"


def test_a_key_created_after_the_server_loaded_its_snapshot_works_at_once(tworld, http):
    decide(http, tworld, "sup", decision_body(0.9))  # the server now holds a snapshot without the new key
    _, secret = actions.create_api_key(tworld.admin, tworld.supervised, "rotated")
    r = post_decision(http, "sup", decision_body(0.9), secret)
    assert r.status_code == 201, r.text
    assert stored(r.json()["id"]).system_id == tworld.supervised.id


def test_a_system_created_after_the_server_loaded_its_snapshot_takes_decisions_at_once(tworld, http):
    decide(http, tworld, "sup", decision_body(0.9))  # the server now holds a snapshot without the new system
    system = actions.create_system(tworld.admin, {"slug": "fresh", "name": "Fresh", "level": 2,
                                                  "fallback": {"items": ["calm"]}}, "new recommender")
    _, secret = actions.create_api_key(tworld.admin, system, "first key")
    r = post_decision(http, "fresh", decision_body(0.9), secret)
    assert r.status_code == 201, r.text
    assert (r.json()["system"], stored(r.json()["id"]).system_id) == ("fresh", system.id)


def test_a_revoked_key_is_refused_on_the_very_next_request(tworld, http):
    key, secret = actions.create_api_key(tworld.admin, tworld.supervised, "leaked")
    # The server's snapshot now knows the key: only the epoch check on the next request can refuse it.
    assert post_decision(http, "sup", decision_body(0.9), secret).status_code == 201

    actions.revoke_api_key(tworld.admin, key)
    assert_error(post_decision(http, "sup", decision_body(0.9), secret), 401, "unauthenticated")
    assert Decision.objects.count() == 1
    assert decide(http, tworld, "sup", decision_body(0.9))["status"] == "released"  # the system's other key

def test_a_revoked_key_reads_nothing_on_the_very_next_request(tworld, http):
    """Not only decisions: every endpoint a key may call refuses it once it is revoked."""
    key, secret = actions.create_api_key(tworld.admin, tworld.supervised, "leaked")
    decision_id = decide(http, tworld, "sup", decision_body(0.9))["id"]
    assert http.get(f"/api/v1/decisions/{decision_id}", headers=bearer(secret)).status_code == 200

    actions.revoke_api_key(tworld.admin, key)
    assert_error(http.get(f"/api/v1/decisions/{decision_id}", headers=bearer(secret)), 401, "unauthenticated")
    outcome = http.post(f"/api/v1/decisions/{decision_id}/outcome", json={"reward": 1.0}, headers=bearer(secret))
    assert_error(outcome, 401, "unauthenticated")



def raw_post(base_url: str, path: str, secret: str, body: bytes, split_at: int | None = None) -> tuple[int, bytes]:
    """One POST over a plain socket; with ``split_at``, the body goes in two writes, the second only
    once the server has had time to start the request on the first part (so its first body message
    is not the whole body)."""
    import socket
    import time
    from urllib.parse import urlparse

    url = urlparse(base_url)
    head = (f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {secret}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    parts = [body] if split_at is None else [body[:split_at], body[split_at:]]
    with socket.create_connection((url.hostname, url.port), timeout=15) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head + parts[0])
        for part in parts[1:]:
            time.sleep(0.3)
            sock.sendall(part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("split_at", [None, 12], ids=["in-one-write", "in-two-writes"])
def test_a_decision_body_is_read_whole_however_it_arrives(tworld, live_server_url, split_at):
    """The server reads the first part of a body before the request's thread starts
    (oversight.wsgibridge); a body that arrives later in more parts is still read whole."""
    body = decision_body(0.9, idempotency_key=f"parts-{split_at}")
    body["features"] = {"tempo": 171.0, "notes": "x" * 5000}
    status, answer = raw_post(live_server_url, DECISIONS.format("sup"), tworld.keys["sup"], json.dumps(body).encode(),
                              split_at)
    assert status == 201, answer
    row = stored(json.loads(answer)["id"])
    assert (row.idempotency_key, row.features) == (f"parts-{split_at}", body["features"])


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
