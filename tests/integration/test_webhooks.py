"""Webhooks to the client service (API.md, "Webhooks"), received by a real HTTP server on 127.0.0.1.

The end-to-end tests run the real Celery worker: a person resolves or overrides a decision, the
outbox row commits with it, the worker POSTs it, the receiver turns the first tries away (503) and
Oversight keeps trying with the same delivery id until a 2xx. The unit-level tests drive
``webhooks.attempt`` with an injected clock (real POSTs to the receiver, no worker), so hours of
backoff take a second.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone

from oversight import actions, tasks, webhooks
from oversight.decisions import public
from oversight.models import AISystem, AuditEvent, Decision, WebhookDelivery
from tests.conftest import World, api_session, decision_body, free_port

NEW_OUTPUT = {"items": ["calm-1"]}


# --- the receiver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One request the receiver got, and what it answered."""

    delivery: str
    event: str
    signature: str
    content_type: str
    body: bytes
    answered: int

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A client service's webhook endpoint: a real ``http.server`` in a thread, on a free port.

    It turns away (503) the first ``fail_first`` requests of each delivery id, and every request
    while ``down`` is set; otherwise it answers 200."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.down = False
        self.hits: list[Hit] = []
        self._seen: dict[str, int] = {}
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 — http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                delivery = self.headers.get("X-Oversight-Delivery", "")
                with receiver._changed:
                    receiver._seen[delivery] = n = receiver._seen.get(delivery, 0) + 1
                    status = 503 if receiver.down or n <= receiver.fail_first else 200
                    receiver.hits.append(Hit(delivery, self.headers.get("X-Oversight-Event", ""),
                                             self.headers.get("X-Oversight-Signature", ""),
                                             self.headers.get("Content-Type", ""), body, status))
                    receiver._changed.notify_all()
                payload = b"busy, try later" if status == 503 else b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — http.server's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/oversight"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def delivered(self) -> dict[str, list[Hit]]:
        """Every delivery id that got a 2xx, with all the requests that carried it (first to last)."""
        with self._changed:
            done = {h.delivery for h in self.hits if 200 <= h.answered < 300}
            return {d: [h for h in self.hits if h.delivery == d] for d in sorted(done)}

    def wait_delivered(self, n: int, timeout: float) -> dict[str, list[Hit]]:
        """Wait (bounded) until ``n`` delivery ids got a 2xx."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len({h.delivery for h in self.hits if 200 <= h.answered < 300}) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{n} deliveries expected within {timeout} s; got: {self.hits}")
                self._changed.wait(left)
        return self.delivered()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def verify(secret: str, hit: Hit) -> bool:
    """What a receiver does: recompute the HMAC of the raw body and compare in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hit.signature)


# --- helpers --------------------------------------------------------------------------------


def send(client: Any, method: str, path: str, body: Any = None) -> Any:
    data = b"" if body is None else json.dumps(body).encode()
    return getattr(client, method)(path, data, content_type="application/json")


def configure(world: World, slug: str, url: str) -> str:
    """As an admin does through the API: the system's callback URL, then a webhook secret (shown once)."""
    admin = api_session(world.admin)
    r = send(admin, "patch", f"/api/v1/systems/{slug}", {"callback_url": url, "reason": "client wants webhooks"})
    assert r.status_code == 200, r.content
    assert r.json()["callback_url"] == url
    r = send(admin, "post", f"/api/v1/systems/{slug}/webhook-secret")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["system"] == slug
    assert body["secret"].startswith("whsec_")
    shown = send(admin, "get", f"/api/v1/systems/{slug}").json()
    assert shown["webhook_secret_set"] is True
    assert body["secret"] not in json.dumps(shown)  # shown once, never again
    return body["secret"]


def submit(world: World, slug: str, confidence: float, subject: str) -> dict[str, Any]:
    body = json.dumps(decision_body(confidence, subject=subject))
    r = world.client_for(slug).post(f"/api/v1/systems/{slug}/decisions", body, content_type="application/json")
    assert r.status_code == 201, r.content
    return r.json()


def seen_by_client(world: World, slug: str, decision_id: str) -> dict[str, Any]:
    r = world.client_for(slug).get(f"/api/v1/decisions/{decision_id}")
    assert r.status_code == 200
    return r.json()


def override(world: World, decision_id: str) -> dict[str, Any]:
    r = send(api_session(world.operator), "post", f"/api/v1/decisions/{decision_id}/override",
             {"output": NEW_OUTPUT, "note": "not at this hour"})
    assert r.status_code == 200, r.content
    return r.json()


def overridden_delivery(world: World, url: str, subject: str = "listener-1") -> WebhookDelivery:
    """A released "sup" decision overridden through the API: its outbox row (no worker runs in
    these tests, and the test's transaction never commits, so no task is sent)."""
    actions.update_system(world.admin, "sup", {"callback_url": url}, "tell the client")
    if not world.supervised.webhook_secret:
        webhooks.set_secret(world.supervised, world.admin)
        world.supervised.refresh_from_db()
    made = submit(world, "sup", 0.9, subject)
    override(world, made["id"])
    return WebhookDelivery.objects.select_related("system").get(decision_id=made["id"].removeprefix("dec_"))


def wait_rows_delivered(n: int, timeout: float = 5) -> list[WebhookDelivery]:
    """The worker writes ``delivered_at`` just after the receiver answered: wait for it (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = list(WebhookDelivery.objects.filter(delivered_at__isnull=False))
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def walk(delivery: WebhookDelivery, until: datetime) -> list[tuple[datetime, float | None]]:
    """Attempt the delivery at each time it is due, from its first try until ``until`` or the end
    (delivered or given up): (when, the wait it asked for) per attempt."""
    t = delivery.next_attempt_at
    made: list[tuple[datetime, float | None]] = []
    while t <= until:
        wait = webhooks.attempt(str(delivery.id), now=t)
        made.append((t, wait))
        if wait is None:
            break
        t += timedelta(seconds=wait)
    return made


# --- end to end: the real worker ------------------------------------------------------------


def test_receiver_gets_each_event_once_signed_after_retries(tworld: World, celery_worker_proc: Any) -> None:
    """A level-1 decision resolved and a level-2 one overridden: the receiver turns each delivery's
    first two tries away; it ends up with each event once, with a 2xx, signed, as GET shows it."""
    hook = Receiver(fail_first=2)
    try:
        secrets = {slug: configure(tworld, slug, hook.url) for slug in ("crit", "sup")}

        waiting = submit(tworld, "crit", 0.9, "applicant-1")
        assert waiting["status"] == "pending_review"
        op = api_session(tworld.operator)
        item = send(op, "post", "/api/v1/review/claim", {"system": "crit"}).json()
        assert item["decision"]["id"] == waiting["id"]
        r = send(op, "post", f"/api/v1/review/{item['id']}/resolve", {"action": "approve", "note": "checked"})
        assert r.status_code == 200, r.content

        released = submit(tworld, "sup", 0.9, "listener-1")
        assert released["status"] == "released"
        override(tworld, released["id"])

        # 2 s and 4 s of backoff: the third try of each lands about 6 s after its event.
        got = hook.wait_delivered(2, timeout=30)
    finally:
        hook.close()

    expected = {
        waiting["id"]: ("crit", "decision.resolved", seen_by_client(tworld, "crit", waiting["id"])),
        released["id"]: ("sup", "decision.overridden", seen_by_client(tworld, "sup", released["id"])),
    }
    assert expected[released["id"]][2]["status"] == "overridden"
    assert expected[waiting["id"]][2]["status"] == "released"
    by_decision: dict[str, str] = {}
    for delivery, hits in got.items():
        assert [h.answered for h in hits] == [503, 503, 200]  # the same id on every retry, one 2xx
        first = hits[0]
        assert all(h.body == first.body and h.signature == first.signature for h in hits)
        sent = first.json()
        slug, event, now = expected[sent["decision"]["id"]]
        assert sent == {"event": event, "decision": now}
        assert first.event == event
        assert first.content_type == "application/json"
        assert verify(secrets[slug], first)
        assert not verify(secrets["sup" if slug == "crit" else "crit"], first)  # each system's own secret
        by_decision[sent["decision"]["id"]] = delivery
    assert set(by_decision) == set(expected)  # each event once, nothing else
    assert len(hook.hits) == 6

    rows = {str(w.id): w for w in wait_rows_delivered(2)}
    assert set(rows) == set(got) == {str(w.id) for w in WebhookDelivery.objects.all()}
    for w in rows.values():
        assert w.delivered_at is not None
        assert (w.attempts, w.last_status, w.last_error, w.given_up_at) == (3, 200, "", None)


def test_the_sweep_sends_a_delivery_whose_task_was_lost(tworld: World, celery_worker_proc: Any,
                                                        receiver: Receiver) -> None:
    """An outbox row with no task behind it (Redis was away when its transaction committed): the
    beat's sweep finds it once it is overdue and the worker delivers it."""
    secret = configure(tworld, "sup", receiver.url)
    made = submit(tworld, "sup", 0.9, "listener-2")
    d = Decision.objects.select_related("system").get(id=made["id"].removeprefix("dec_"))
    lost = WebhookDelivery.objects.create(
        system=d.system, decision=d, event=webhooks.OVERRIDDEN, url=receiver.url,
        body=json.dumps({"event": webhooks.OVERRIDDEN, "decision": public(d, "sup")}),
        next_attempt_at=timezone.now() - timedelta(seconds=60),
    )
    assert tasks.sweep_webhooks() == 1  # what the beat runs every 30 s
    got = receiver.wait_delivered(1, timeout=15)
    assert list(got) == [str(lost.id)]
    assert [h.answered for h in got[str(lost.id)]] == [200]
    assert verify(secret, got[str(lost.id)][0])
    assert [str(w.id) for w in wait_rows_delivered(1)] == [str(lost.id)]
    assert tasks.sweep_webhooks() == 0


# --- attempts with an injected clock (no worker) ---------------------------------------------


def test_a_delivery_is_signed_and_carries_what_get_returns(world: World, receiver: Receiver) -> None:
    row = overridden_delivery(world, receiver.url)
    assert row.event == webhooks.OVERRIDDEN
    assert webhooks.attempt(str(row.id), now=row.next_attempt_at) is None  # delivered: nothing more to do
    [hit] = receiver.hits
    assert (hit.delivery, hit.event, hit.answered) == (str(row.id), "decision.overridden", 200)
    made_id = f"dec_{row.decision_id.hex}"
    assert hit.json() == {"event": "decision.overridden", "decision": seen_by_client(world, "sup", made_id)}
    world.supervised.refresh_from_db()
    assert verify(world.supervised.webhook_secret, hit)
    row.refresh_from_db()
    assert (row.attempts, row.last_status, row.state) == (1, 200, "delivered")
    # Delivered means done: a repeated task (or the sweep) sends nothing again.
    assert webhooks.attempt(str(row.id), now=row.next_attempt_at + timedelta(hours=1)) is None
    assert len(receiver.hits) == 1
    assert webhooks.due(now=timezone.now() + timedelta(days=2)) == []


def test_backoff_doubles_from_2_s_to_a_10_minute_cap(world: World, receiver: Receiver) -> None:
    row = overridden_delivery(world, receiver.url)
    receiver.down = True
    t = row.next_attempt_at
    waits = []
    for _ in range(12):
        wait = webhooks.attempt(str(row.id), now=t)
        assert wait is not None
        waits.append(wait)
        # Not due yet (another worker, a repeated task, the sweep): nothing is sent.
        before = len(receiver.hits)
        assert webhooks.attempt(str(row.id), now=t + timedelta(seconds=wait) - timedelta(milliseconds=1)) is None
        assert len(receiver.hits) == before
        t += timedelta(seconds=wait)
    assert waits == [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600]
    assert len(receiver.hits) == 12
    assert {(h.delivery, h.body, h.answered) for h in receiver.hits} == {(str(row.id), receiver.hits[0].body, 503)}
    row.refresh_from_db()
    assert (row.attempts, row.last_status, row.next_attempt_at, row.state) == (12, 503, t, "retrying")
    assert row.last_error.startswith("HTTP 503")
    assert row.delivered_at is None
    assert row.given_up_at is None


def test_a_refused_connection_is_retried(world: World) -> None:
    nobody_listens = f"http://127.0.0.1:{free_port()}/hooks"
    row = overridden_delivery(world, nobody_listens)
    assert webhooks.attempt(str(row.id), now=row.next_attempt_at) == 2.0
    row.refresh_from_db()
    assert row.last_status is None
    assert "ConnectError" in row.last_error
    assert (row.attempts, row.state) == (1, "retrying")


def test_receiver_down_for_an_hour_loses_nothing(world: World, receiver: Receiver) -> None:
    """Retries keep coming (never more than 10 minutes apart) while the receiver is down; the first
    one after it is back delivers, once."""
    assert webhooks.give_up_after_s() >= 3600  # API.md: retried for at least an hour
    row = overridden_delivery(world, receiver.url)
    start = row.next_attempt_at
    receiver.down = True
    down = walk(row, until=start + timedelta(hours=1))
    assert all(wait is not None for _, wait in down)
    times = [t for t, _ in down]
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= timedelta(seconds=600)
    assert times[-1] > start + timedelta(minutes=50)
    row.refresh_from_db()
    assert (row.given_up_at, row.delivered_at) == (None, None)
    assert webhooks.due(now=start + timedelta(hours=2)) == [str(row.id)]  # the sweep would still send it

    receiver.down = False
    back = walk(row, until=start + timedelta(hours=2))
    assert [wait for _, wait in back] == [None]  # the next try after the hour delivers
    assert back[0][0] - start <= timedelta(hours=1, minutes=10)
    assert [h.answered for h in receiver.hits] == [503] * len(down) + [200]
    assert {h.delivery for h in receiver.hits} == {str(row.id)}
    row.refresh_from_db()
    assert row.delivered_at == back[0][0]
    assert row.attempts == len(down) + 1


def test_gives_up_after_the_configured_time_and_audits_it(world: World, receiver: Receiver, settings: Any) -> None:
    """Down for good: tried until WEBHOOK_GIVE_UP_S (24 h by default; 3 h here, which keeps the
    walk short), then given up, audited."""
    settings.WEBHOOK_GIVE_UP_S = 3 * 3600.0
    give_up = timedelta(seconds=settings.WEBHOOK_GIVE_UP_S)
    row = overridden_delivery(world, receiver.url)
    receiver.down = True
    made = walk(row, until=row.created_at + give_up + timedelta(hours=1))
    assert made[-1][1] is None  # the last attempt asked for no more
    assert all(wait is not None for _, wait in made[:-1])
    assert made[-2][0] < row.created_at + give_up <= made[-1][0] <= row.created_at + give_up + timedelta(seconds=600)
    row.refresh_from_db()
    assert row.state == "given up"
    assert row.given_up_at == made[-1][0]
    assert row.attempts == len(made) == len(receiver.hits)
    assert all(h.answered == 503 for h in receiver.hits)
    event = AuditEvent.objects.get(action="webhook.give_up")
    assert event.target == f"dec_{row.decision_id.hex}"
    assert event.data == {"delivery": str(row.id), "event": "decision.overridden"}
    assert f"after {row.attempts} attempts" in event.reason
    # Given up is final: no attempt, no sweep.
    assert webhooks.attempt(str(row.id), now=made[-1][0] + timedelta(days=1)) is None
    assert len(receiver.hits) == row.attempts
    assert webhooks.due(now=made[-1][0] + timedelta(days=1)) == []


def test_the_sweep_lists_only_overdue_undelivered_rows(world: World, receiver: Receiver) -> None:
    rows = [overridden_delivery(world, receiver.url, subject=f"listener-{n}") for n in range(4)]
    now = timezone.now() + timedelta(minutes=5)
    lost_long_ago, lost, on_time, delivered = rows
    WebhookDelivery.objects.filter(id=lost_long_ago.id).update(next_attempt_at=now - timedelta(minutes=20))
    WebhookDelivery.objects.filter(id=lost.id).update(next_attempt_at=now - timedelta(seconds=31))
    WebhookDelivery.objects.filter(id=on_time.id).update(next_attempt_at=now - timedelta(seconds=29))
    WebhookDelivery.objects.filter(id=delivered.id).update(next_attempt_at=now - timedelta(hours=1), delivered_at=now)
    assert webhooks.due(now=now) == [str(lost_long_ago.id), str(lost.id)]  # oldest first
    WebhookDelivery.objects.filter(id=lost.id).update(given_up_at=now)
    assert webhooks.due(now=now) == [str(lost_long_ago.id)]
    assert webhooks.due(now=now + timedelta(seconds=5)) == [str(lost_long_ago.id), str(on_time.id)]


def test_no_callback_url_queues_nothing(world: World) -> None:
    made = submit(world, "sup", 0.9, "listener-9")
    override(world, made["id"])
    assert not WebhookDelivery.objects.exists()


def test_a_callback_url_that_cannot_be_requested_is_a_failed_attempt(world: World) -> None:
    """An address the HTTP client refuses outright (an empty label in the host name: the API refuses
    it now, but one saved before that check may remain) fails its attempts like a refused connection:
    recorded, retried, given up in the end. (An exception out of the attempt would leave the row
    leased, unexplained, and swept again and again, never given up.)"""
    url = "http://hooks..client.example/oversight"
    r = send(api_session(world.admin), "patch", "/api/v1/systems/sup", {"callback_url": url, "reason": "hooks"})
    assert r.status_code == 422  # refused when saved now
    AISystem.objects.filter(slug="sup").update(callback_url=url)  # as an older version saved it
    row = overridden_delivery(world, url)
    assert row.url == "http://hooks..client.example/oversight"
    assert webhooks.attempt(str(row.id), now=row.next_attempt_at) == 2.0
    row.refresh_from_db()
    assert (row.attempts, row.last_status, row.state) == (1, None, "retrying")
    assert "hooks..client.example" in row.last_error or "idna" in row.last_error
    late = row.created_at + timedelta(seconds=webhooks.give_up_after_s())
    assert webhooks.attempt(str(row.id), now=late) is None
    row.refresh_from_db()
    assert row.state == "given up"
    assert AuditEvent.objects.filter(action="webhook.give_up", target=f"dec_{row.decision_id.hex}").exists()


def test_which_resolutions_tell_the_client(world: World, receiver: Receiver,
                                           django_capture_on_commit_callbacks: Any) -> None:
    """A gate item resolved: ``decision.resolved``. An after-the-fact audit item rejected or
    modified: ``decision.overridden``. An audit item approved changes nothing the client has: no
    event."""
    with django_capture_on_commit_callbacks(execute=True):
        actions.update_system(world.admin, "crit", {"callback_url": receiver.url}, "tell the client")
        actions.update_system(world.admin, "auto", {"callback_url": receiver.url, "audit_sample_rate": 1.0},
                              "tell the client")
    gate = submit(world, "crit", 0.9, "applicant-1")
    kept = submit(world, "auto", 0.9, "listener-1")
    changed = submit(world, "auto", 0.9, "listener-2")
    op = api_session(world.operator)
    actions_for = {gate["id"]: {"action": "reject", "note": "no"}, kept["id"]: {"action": "approve"},
                   changed["id"]: {"action": "modify", "output": {"label": "ok"}}}
    for _ in actions_for:
        item = send(op, "post", "/api/v1/review/claim").json()
        r = send(op, "post", f"/api/v1/review/{item['id']}/resolve", actions_for[item["decision"]["id"]])
        assert r.status_code == 200, r.content
    queued = {f"dec_{w.decision_id.hex}": w for w in WebhookDelivery.objects.all()}
    assert {d: w.event for d, w in queued.items()} == {gate["id"]: "decision.resolved",
                                                       changed["id"]: "decision.overridden"}
    for decision_id, w in queued.items():
        slug = "crit" if decision_id == gate["id"] else "auto"
        assert json.loads(w.body) == {"event": w.event, "decision": seen_by_client(world, slug, decision_id)}
    assert seen_by_client(world, "auto", changed["id"])["output"] == {"label": "ok"}
