"""The async hot path's config-epoch reader (oversight/epochwatch.py) against a real Redis:
one GET, then Redis's invalidation pushes; a write is seen by the very next read."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from oversight import epochwatch
from oversight.epochwatch import EpochWatch
from tests.conftest import free_port


@pytest.fixture
def key() -> Iterator[str]:
    name = f"{settings.REDIS_PREFIX}:watch-test:{uuid.uuid4().hex}"
    yield name
    redis.Redis.from_url(settings.REDIS_URL).delete(name)


def run(body: Callable[[EpochWatch], Awaitable[Any]], url: str, key: str) -> Any:
    async def main() -> Any:
        watch = EpochWatch(url, key)
        try:
            return await body(watch)
        finally:
            watch.close()

    return asyncio.run(main())


def test_a_held_value_needs_no_get_and_a_write_is_seen_by_the_next_read(key):
    writer = redis.Redis.from_url(settings.REDIS_URL)
    writer.set(key, 41)

    async def body(watch: EpochWatch) -> None:
        assert await watch.epoch() == 41
        for _ in range(200):
            assert await watch.epoch() == 41
        assert watch.gets == 1  # one GET; after that only Redis's pushes are read
        for value in (42, 43, 44):
            writer.set(key, value)  # confirmed by Redis: its push to the watch was sent before
            assert await watch.epoch() == value  # the very next read, no waiting
        assert watch.gets == 4
        writer.delete(key)
        assert await watch.epoch() is None

    run(body, settings.REDIS_URL, key)


def test_a_killed_connection_is_replaced_and_a_change_meanwhile_is_not_missed(key):
    writer = redis.Redis.from_url(settings.REDIS_URL)
    writer.set(key, 7)

    async def body(watch: EpochWatch) -> None:
        assert await watch.epoch() == 7
        assert watch.sock is not None
        port = watch.sock.getsockname()[1]
        writer.execute_command("CLIENT", "KILL", "ADDR", f"127.0.0.1:{port}")
        writer.set(key, 8)  # no push can reach a killed connection
        assert await watch.epoch() == 8
        assert await watch.epoch() == 8

    run(body, settings.REDIS_URL, key)


def test_a_held_value_is_read_again_after_max_age(key, monkeypatch):
    writer = redis.Redis.from_url(settings.REDIS_URL)
    writer.set(key, 1)
    monkeypatch.setattr(epochwatch, "MAX_AGE_S", 0.05)

    async def body(watch: EpochWatch) -> None:
        assert await watch.epoch() == 1
        await asyncio.sleep(0.06)
        assert await watch.epoch() == 1
        assert watch.gets == 2

    run(body, settings.REDIS_URL, key)


def test_redis_away_answers_none_at_once_and_does_not_retry_for_a_second(key):
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def body(watch: EpochWatch) -> tuple[Any, Any, float]:
        started = time.monotonic()
        first = await watch.epoch()
        second = await watch.epoch()  # inside RETRY_AFTER_S: no new connection attempt
        return first, second, time.monotonic() - started

    first, second, took = run(body, url, key)
    assert first is None
    assert second is None
    assert took < 0.5


def test_concurrent_reads_on_one_loop_share_the_connection(key):
    writer = redis.Redis.from_url(settings.REDIS_URL)
    writer.set(key, 5)

    async def body(watch: EpochWatch) -> None:
        values = await asyncio.gather(*(watch.epoch() for _ in range(50)))
        assert set(values) == {5}
        assert watch.gets == 1
        writer.set(key, 6)
        values = await asyncio.gather(*(watch.epoch() for _ in range(50)))
        assert set(values) == {6}

    run(body, settings.REDIS_URL, key)


def test_only_plain_resp_urls_are_watched():
    assert epochwatch.supported("redis://127.0.0.1:6379/0")
    assert epochwatch.supported("unix:///tmp/redis.sock?db=1")
    assert not epochwatch.supported("rediss://cache.example:6380/0")
