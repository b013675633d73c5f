"""A lean Redis GET for the event loop: what each decision reads the config epoch with.

redis.asyncio takes ~0.15-0.19 ms of the event loop per GET on the 2-core bench machine (its
connection pool, command packing, retry wrapper and parser); this takes ~0.06 ms, which the
request's own handling hides (``aio.EarlyEpochRead`` sends it as the request arrives).

One connection per event loop, GET only, RESP2. Redis answers a connection's commands in order,
so concurrent GETs are written at once and their futures wait in a FIFO. A failure (refused,
reset, no answer within ``timeout``) raises ``RedisGetError`` and drops the connection; the caller
reads PostgreSQL instead and the next GET connects anew. An error reply (a key of another type)
raises for that GET only.

Plain TCP and unix sockets, with a password or an ACL user and a database number from the URL.
A TLS URL (``rediss://``) is not handled here: ``supports(url)`` says so and the caller uses
redis.asyncio for it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from redis.connection import parse_url


class RedisGetError(Exception):
    """Redis could not answer the GET (unreachable, reset, too slow, or an error reply)."""


def supports(url: str) -> bool:
    return urlsplit(url).scheme in ("redis", "unix")


def command(*args: bytes) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


INCOMPLETE = object()


def parse_reply(buf: bytes | bytearray, start: int = 0) -> tuple[Any, int]:
    """One RESP2 reply from ``buf[start:]``: ``(value, end)``, or ``(INCOMPLETE, start)``.

    Simple strings and bulk strings come back as bytes, a null bulk string as None, integers as
    int, an error reply as a ``RedisGetError`` instance (returned, not raised).
    """
    eol = buf.find(b"\r\n", start)
    if eol < 0:
        return INCOMPLETE, start
    kind, line = buf[start:start + 1], bytes(buf[start + 1:eol])
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, eol + 2
        end = eol + 2 + size
        if len(buf) < end + 2:
            return INCOMPLETE, start
        return bytes(buf[eol + 2:end]), end + 2
    if kind == b"+":
        return line, eol + 2
    if kind == b":":
        return int(line), eol + 2
    if kind == b"-":
        return RedisGetError(line.decode(errors="replace")), eol + 2
    raise RedisGetError(f"unexpected reply from Redis: {bytes(buf[start:eol])[:40]!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.buf = bytearray()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        try:
            while self.waiters:
                value, end = parse_reply(buf, pos)
                if value is INCOMPLETE:
                    break
                pos = end
                waiter = self.waiters.popleft()
                if not waiter.done():
                    if isinstance(value, RedisGetError):
                        waiter.set_exception(value)
                    else:
                        waiter.set_result(value)
        except (RedisGetError, ValueError) as exc:
            self.fail(RedisGetError(f"could not read Redis's reply: {exc}"))
            return
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail_waiters(RedisGetError(f"the connection to Redis was lost: {exc or 'closed'}"))

    def send(self, data: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.transport.write(data)
        return waiter

    def fail(self, exc: RedisGetError) -> None:
        """Give up on this connection: every waiting GET fails, and the next one reconnects."""
        self.lost = True
        if self.transport is not None:
            self.transport.abort()
        self._fail_waiters(exc)

    def _fail_waiters(self, exc: RedisGetError) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)


def _expire(protocol: _Protocol, waiter: asyncio.Future[Any], timeout: float) -> None:
    if not waiter.done():
        protocol.fail(RedisGetError(f"Redis did not answer within {timeout:g} s"))


def _settled(timer: asyncio.TimerHandle, waiter: asyncio.Future[Any]) -> None:
    timer.cancel()
    if not waiter.cancelled():
        waiter.exception()  # retrieved: a GET nobody awaits (its request was refused first) fails quietly


class RedisGet:
    """``await RedisGet(url, …).get(key)``: the value (bytes) or None; raises ``RedisGetError``.

    ``send(key)`` writes the GET at once on a live connection and returns the future of its reply.
    """

    def __init__(self, url: str, timeout: float, connect_timeout: float) -> None:
        if not supports(url):
            raise ValueError(f"RedisGet speaks plain TCP and unix sockets, not {urlsplit(url).scheme}://")
        self.params: dict[str, Any] = parse_url(url)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    def send(self, key: bytes) -> asyncio.Future[bytes | None] | None:
        """The GET written now, its reply to come; None when there is no live connection yet."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            return None
        return self._send(protocol, key)

    async def get(self, key: bytes) -> bytes | None:
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connected()
        return await self._send(protocol, key)

    def _send(self, protocol: _Protocol, key: bytes) -> asyncio.Future[bytes | None]:
        waiter = protocol.send(command(b"GET", key))
        timer = asyncio.get_running_loop().call_later(self.timeout, _expire, protocol, waiter, self.timeout)
        waiter.add_done_callback(lambda w: _settled(timer, w))
        return waiter

    async def _connected(self) -> _Protocol:
        # Concurrent first GETs share one connection attempt, which forgets itself when it ends
        # (even if every GET waiting for it was cancelled meanwhile).
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = asyncio.ensure_future(self._connect())
            connecting.add_done_callback(self._connect_ended)
        return await asyncio.shield(connecting)

    def _connect_ended(self, connecting: asyncio.Future[_Protocol]) -> None:
        if self._connecting is connecting:
            self._connecting = None
        if not connecting.cancelled():
            connecting.exception()  # retrieved: the GETs that waited for it raised it already

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        p = self.params
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if "path" in p:
                    _, protocol = await loop.create_unix_connection(_Protocol, p["path"])
                else:
                    _, protocol = await loop.create_connection(_Protocol, p.get("host", "localhost"),
                                                               p.get("port", 6379))
                for step in self._set_up():
                    await protocol.send(step)  # AUTH, SELECT: OK, or an error reply (raised)
        except (TimeoutError, OSError, RedisGetError) as exc:
            if protocol is not None:
                protocol.fail(RedisGetError("connection set-up failed"))
            if isinstance(exc, TimeoutError):
                raise RedisGetError(f"could not connect to Redis within {self.connect_timeout:g} s") from exc
            if isinstance(exc, OSError):
                raise RedisGetError(f"could not connect to Redis: {exc}") from exc
            raise
        self._protocol = protocol
        return protocol

    def _set_up(self) -> list[bytes]:
        p = self.params
        steps = []
        if p.get("password") is not None:
            password = str(p["password"]).encode()
            user = p.get("username")
            steps.append(command(b"AUTH", user.encode(), password) if user else command(b"AUTH", password))
        if p.get("db"):
            steps.append(command(b"SELECT", str(int(p["db"])).encode()))
        return steps

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.fail(RedisGetError("closed"))
            self._protocol = None
