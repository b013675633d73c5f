"""When Redis cannot be reached, the gate reads the config epoch from PostgreSQL: kill switches still
take effect on the very next decision, and /readyz says what is missing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.test import Client

from oversight import actions, config, events
from tests.conftest import api_session, decision_body, free_port


@pytest.fixture
def redis_away() -> Iterator[str]:
    """Point the gate's Redis client at a port where nothing listens (a real, failing connection)."""
    port = free_port()
    saved = config.redis_epoch._client
    config.redis_epoch._client = redis.Redis(host="127.0.0.1", port=port, **config.FAIL_FAST)
    config.redis_epoch.down_until = 0.0
    yield f"redis://127.0.0.1:{port}/0"
    config.redis_epoch._client = saved
    config.redis_epoch.down_until = 0.0


def test_kill_switch_reaches_the_next_decision_without_redis(world, redis_away, django_capture_on_commit_callbacks):
    started = time.monotonic()
    client = world.client_for("sup")
    url = "/api/v1/systems/sup/decisions"
    assert client.post(url, decision_body(0.9), content_type="application/json").json()["route"] == "auto"
    assert time.monotonic() - started < 3  # a Redis that is away costs milliseconds, not retries
    with django_capture_on_commit_callbacks(execute=True):  # raising the Redis copy fails: PostgreSQL has it
        actions.set_killswitch(world.admin, "system", True, "Redis is down and so is trust", "sup")
    r = client.post(url, decision_body(0.9), content_type="application/json")
    assert r.status_code == 201
    assert r.json()["route"] == "killed"
    assert r.json()["output"] == {"items": ["safe"]}
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_killswitch(world.admin, "system", False, "fixed", "sup")
    assert client.post(url, decision_body(0.9), content_type="application/json").json()["route"] == "auto"
    assert time.monotonic() - started < 3  # a Redis that is away costs milliseconds, not retries


def test_readyz_reports_redis_unreachable(db, settings, redis_away):
    settings.REDIS_URL = redis_away
    r = Client().get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["postgresql"] == "ok"
    assert r.json()["checks"]["redis"].startswith("unreachable")


class BlackHole:
    """A TCP server that accepts connections and never answers: Redis stopped (SIGSTOP), not dead."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[Any] = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.open:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # read nothing, answer nothing

    def close(self) -> None:
        self.open = False
        for c in self.held:
            c.close()
        self.sock.close()


@pytest.fixture
def redis_hung(settings: Any) -> Iterator[BlackHole]:
    from channels.layers import channel_layers

    hole = BlackHole()
    url = f"redis://127.0.0.1:{hole.port}/0"
    saved = config.redis_epoch._client
    config.redis_epoch._client = redis.Redis.from_url(url, **config.FAIL_FAST)
    config.redis_epoch.down_until = 0.0
    layer = settings.CHANNEL_LAYERS["default"]
    hung = {**layer["CONFIG"]["hosts"][0], "address": url}  # production's options, the hung server's address
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": [hung]}}}
    channel_layers.backends.clear()  # the layer is made again, against the hung server
    events._quiet_until = 0.0
    yield hole
    events._quiet_until = 0.0
    config.redis_epoch._client = saved
    config.redis_epoch.down_until = 0.0
    channel_layers.backends.clear()
    hole.close()


def test_a_kill_switch_flip_answers_in_under_a_second_while_redis_hangs(tworld, redis_hung):
    """The flip commits in PostgreSQL; the Redis copy of the epoch and the live pushes are best effort
    after the commit, each bounded (0.25 s, 0.5 s), so an admin is not kept waiting; the very next
    decision honours the switch (the gate falls back to PostgreSQL's epoch)."""
    admin = api_session(tworld.admin)
    started = time.monotonic()
    r = admin.post("/api/v1/killswitches", {"scope": "system", "system": "sup", "engaged": True,
                                            "reason": "Redis hangs and so does the model"},
                   content_type="application/json")
    took = time.monotonic() - started
    assert r.status_code == 200, r.content
    assert took < 1.0, took
    client = tworld.client_for("sup")
    d = client.post("/api/v1/systems/sup/decisions", decision_body(0.9), content_type="application/json")
    assert d.status_code == 201
    assert d.json()["route"] == "killed"


def test_a_page_handshake_gives_up_quickly_while_redis_hangs(tworld, redis_hung):
    """The page's WebSocket cannot join its groups on a Redis that accepts and never answers: the
    handshake is closed with 1013 (try again; the page reconnects later) within a few seconds, not
    after the channel layer's 15 s read timeout, twice, and no error escapes the consumer."""
    from asgiref.sync import async_to_sync
    from channels.testing import WebsocketCommunicator

    from dashboards.consumers import TRY_AGAIN
    from oversight.asgi import application
    from tests.integration.test_websocket import headers_for

    headers = headers_for(tworld.operator)

    async def handshake() -> tuple[bool, object]:
        comm = WebsocketCommunicator(application, "/ws/overview/", headers=headers)
        accepted, detail = await comm.connect(timeout=10)
        return accepted, detail

    started = time.monotonic()
    accepted, code = async_to_sync(handshake)()
    took = time.monotonic() - started
    assert (accepted, code) == (False, TRY_AGAIN)
    assert took < 6.0, took


def test_rate_guarded_decisions_wait_on_a_hung_redis_once_not_each_time(tworld, redis_hung,
                                                                       django_capture_on_commit_callbacks):
    """A level-3 system with a rate per minute counts in Redis; when Redis hangs, the first decision
    pays the 0.25 s timeout and is let through uncounted, and the next ones within the second do not
    wait at all (the same back-off as the epoch's client)."""
    with django_capture_on_commit_callbacks(execute=True):
        actions.update_system(tworld.admin, "auto", {"guardrails": {"rate_per_minute": 100}}, reason="rate")
    config.redis_epoch.down_until = 0.0  # the change's own epoch raise met the hung server: start afresh
    client = tworld.client_for("auto")
    took = []
    for _ in range(3):
        started = time.monotonic()
        r = client.post("/api/v1/systems/auto/decisions", decision_body(0.9), content_type="application/json")
        took.append(time.monotonic() - started)
        assert (r.status_code, r.json()["status"]) == (201, "released"), r.content
    assert 0.2 < took[0] < 1.0, took
    assert max(took[1:]) < 0.15, took
