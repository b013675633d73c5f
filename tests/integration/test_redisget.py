"""The lean Redis GET (``oversight.redisget``) against the real Redis: values, concurrent GETs in
order, ACL users and database numbers from the URL, and every way Redis can fail to answer."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from django.conf import settings

from oversight.redisget import RedisGet, RedisGetError, supports
from tests.conftest import free_port

T = TypeVar("T")
TIMEOUT = 0.25


def run(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())  # type: ignore[arg-type]


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys: list[str] = []
    client.keys_made = keys  # type: ignore[attr-defined]
    yield client
    if keys:
        client.delete(*keys)
    client.close()


def key(r: redis.Redis) -> str:
    k = f"{settings.REDIS_PREFIX}:redisget-test:{uuid.uuid4().hex}"
    r.keys_made.append(k)  # type: ignore[attr-defined]
    return k


def test_get_reads_values_and_missing_keys(r: redis.Redis) -> None:
    k1, k2, missing = key(r), key(r), key(r)
    r.set(k1, "41")
    r.set(k2, b"\x00binary\r\nvalue")

    async def work() -> list[Any]:
        g = RedisGet(settings.REDIS_URL, TIMEOUT, TIMEOUT)
        try:
            return [await g.get(k1.encode()), await g.get(k2.encode()), await g.get(missing.encode())]
        finally:
            g.close()

    assert run(work) == [b"41", b"\x00binary\r\nvalue", None]


def test_concurrent_gets_on_one_connection_each_get_their_own_value(r: redis.Redis) -> None:
    keys = [key(r) for _ in range(300)]
    r.mset({k: str(i) for i, k in enumerate(keys)})

    async def work() -> tuple[list[Any], int]:
        g = RedisGet(settings.REDIS_URL, TIMEOUT, TIMEOUT)
        try:
            first = await g.get(keys[0].encode())  # connected
            assert first == b"0"
            sent = [g.send(k.encode()) for k in keys]  # written at once, answered in order
            assert all(s is not None for s in sent)
            values = await asyncio.gather(*sent)  # type: ignore[arg-type]
            more = await asyncio.gather(*(g.get(k.encode()) for k in reversed(keys)))
            assert list(more) == [str(i).encode() for i in reversed(range(300))]
            return list(values), id(g._protocol)
        finally:
            g.close()

    values, _ = run(work)
    assert values == [str(i).encode() for i in range(300)]


def test_send_needs_a_live_connection() -> None:
    async def work() -> Any:
        g = RedisGet(settings.REDIS_URL, TIMEOUT, TIMEOUT)
        return g.send(b"anything")

    assert run(work) is None


def test_an_acl_user_and_a_database_number_from_the_url(r: redis.Redis) -> None:
    user = f"oversight-test-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    r.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+get", "+select", "+auth")
    base = settings.REDIS_URL.split("://", 1)[1].split("/", 1)[0].split("@")[-1]
    db3 = redis.Redis.from_url(f"redis://{base}/3")
    k = f"{settings.REDIS_PREFIX}:redisget-test:{uuid.uuid4().hex}"
    db3.set(k, "in three")
    try:
        async def work(url: str) -> Any:
            g = RedisGet(url, TIMEOUT, TIMEOUT)
            try:
                return await g.get(k.encode())
            finally:
                g.close()

        assert run(lambda: work(f"redis://{user}:{password}@{base}/3")) == b"in three"
        assert run(lambda: work(f"redis://{user}:{password}@{base}/0")) is None  # another database
        with pytest.raises(RedisGetError, match="WRONGPASS|invalid"):
            run(lambda: work(f"redis://{user}:wrong@{base}/3"))
    finally:
        r.execute_command("ACL", "DELUSER", user)
        db3.delete(k)
        db3.close()


def test_an_error_reply_fails_that_get_only(r: redis.Redis) -> None:
    a_list, plain = key(r), key(r)
    r.rpush(a_list, "x")
    r.set(plain, "ok")

    async def work() -> Any:
        g = RedisGet(settings.REDIS_URL, TIMEOUT, TIMEOUT)
        try:
            with pytest.raises(RedisGetError, match="WRONGTYPE"):
                await g.get(a_list.encode())
            return await g.get(plain.encode())  # the same connection goes on
        finally:
            g.close()

    assert run(work) == b"ok"


def test_redis_away_fails_at_once() -> None:
    async def work() -> float:
        g = RedisGet(f"redis://127.0.0.1:{free_port()}/0", TIMEOUT, TIMEOUT)
        started = time.monotonic()
        with pytest.raises(RedisGetError, match="could not connect"):
            await g.get(b"k")
        return time.monotonic() - started

    assert run(work) < TIMEOUT + 0.2


def test_a_redis_that_does_not_answer_times_out_and_the_next_get_reconnects(r: redis.Redis) -> None:
    k = key(r)
    r.set(k, "back")

    async def work() -> Any:
        # A server that accepts and never answers; then the real Redis on the same RedisGet.
        silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        g = RedisGet(f"redis://127.0.0.1:{port}/0", TIMEOUT, TIMEOUT)
        try:
            started = time.monotonic()
            pending = [asyncio.ensure_future(g.get(b"k")) for _ in range(3)]
            for p in pending:
                with pytest.raises(RedisGetError, match="did not answer"):
                    await p
            waited = time.monotonic() - started
            assert TIMEOUT - 0.05 < waited < TIMEOUT + 0.3
            assert g._protocol is not None
            assert g._protocol.lost  # dropped: a late answer could not be matched to its GET
            g.params = RedisGet(settings.REDIS_URL, TIMEOUT, TIMEOUT).params  # "Redis is back"
            return await g.get(k.encode())
        finally:
            g.close()
            silent.close()

    assert run(work) == b"back"


def test_a_connection_closed_by_redis_fails_what_waits_and_the_next_get_reconnects(r: redis.Redis) -> None:
    k = key(r)
    r.set(k, "again")

    async def work() -> Any:
        g = RedisGet(settings.REDIS_URL, TIMEOUT, TIMEOUT)
        try:
            assert await g.get(k.encode()) == b"again"
            assert g._protocol is not None
            assert g._protocol.transport is not None
            host, port = g._protocol.transport.get_extra_info("sockname")[:2]
            killed = r.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
            assert killed in (b"OK", "OK", True, 1)
            for _ in range(50):  # the loop notices the close
                if g._protocol.lost:
                    break
                await asyncio.sleep(0.01)
            assert g._protocol.lost
            assert g.send(k.encode()) is None  # nothing is written to a dead connection
            return await g.get(k.encode())
        finally:
            g.close()

    assert run(work) == b"again"


def test_tls_urls_are_left_to_redis_py() -> None:
    assert supports("redis://h:1/0")
    assert supports("unix:///run/redis.sock?db=1")
    assert not supports("rediss://h:1/0")
    with pytest.raises(ValueError, match="rediss"):
        RedisGet("rediss://h:1/0", TIMEOUT, TIMEOUT)


def test_close_fails_what_waits() -> None:
    async def work() -> None:
        silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        g = RedisGet(f"redis://127.0.0.1:{port}/0", 5.0, TIMEOUT)
        pending = asyncio.ensure_future(g.get(b"k"))
        await asyncio.sleep(0.05)
        g.close()
        with pytest.raises(RedisGetError):
            await pending
        silent.close()
        with contextlib.suppress(Exception):
            await silent.wait_closed()

    run(work)


def test_a_connect_whose_gets_were_all_cancelled_is_not_handed_out_again(r: redis.Redis) -> None:
    k = key(r)
    r.set(k, "fresh")

    async def work() -> tuple[Any, float]:
        g = RedisGet(settings.REDIS_URL, TIMEOUT, TIMEOUT)
        try:
            first = asyncio.ensure_future(g.get(k.encode()))
            await asyncio.sleep(0)  # the connect has started
            first.cancel()  # e.g. the request was cancelled when its client went away
            await asyncio.sleep(0.1)  # the connect ends on its own
            assert g._connecting is None
            assert await g.get(k.encode()) == b"fresh"
            assert g._protocol is not None
            assert g._protocol.transport is not None
            host, port = g._protocol.transport.get_extra_info("sockname")[:2]
            r.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
            for _ in range(50):
                if g._protocol.lost:
                    break
                await asyncio.sleep(0.01)
            started = time.monotonic()
            value = await g.get(k.encode())  # a new connection, not the finished attempt's dead one
            return value, time.monotonic() - started
        finally:
            g.close()

    value, took = run(work)
    assert value == b"fresh"
    assert took < TIMEOUT / 2
