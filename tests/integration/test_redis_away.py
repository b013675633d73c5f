"""When Redis cannot be reached, the gate reads the config epoch from PostgreSQL: kill switches still
take effect on the very next decision, and /readyz says what is missing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from django.test import Client

from oversight import actions, config
from tests.conftest import decision_body, free_port


@pytest.fixture
def redis_away() -> Iterator[str]:
    """Point the gate's Redis client at a port where nothing listens (a real, failing connection)."""
    port = free_port()
    saved = config.redis_epoch._client
    config.redis_epoch._client = redis.Redis(host="127.0.0.1", port=port, **config.FAIL_FAST)
    config.redis_epoch._down_until = 0.0
    yield f"redis://127.0.0.1:{port}/0"
    config.redis_epoch._client = saved
    config.redis_epoch._down_until = 0.0


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
