"""The Redis config epoch for the async hot path, read with Redis's client tracking.

Every decision must be gated with the kill-switch state that is current when it arrives
(ARCHITECTURE.md: the in-process cache is checked against the Redis config epoch on every
request). A GET per request costs a round trip to Redis: on this 2-core machine, with Redis
idle between requests, ~0.15-0.25 ms of a decision's latency.

This reader asks Redis to *tell* it when the epoch changes instead (RESP3, ``CLIENT TRACKING
ON``): after one GET, Redis pushes an ``invalidate`` message on the same connection the moment
the key is written, before it answers the writer. Every request then checks that connection with
a non-blocking read (a system call, no round trip): no push means the value it holds is still
Redis's value; a push, a closed connection or an error means a fresh GET. Because Redis sends the
push before it confirms the write, a kill switch whose flip has been confirmed is seen by the
next decision, as with a GET.

Safety nets: a held value is used for at most ``MAX_AGE_S`` before a fresh GET (a connection
that died without closing cannot hide a change for longer), and every process still reads the
PostgreSQL epoch once a second (``config.DB_CHECK_EVERY_S``). When Redis cannot be reached,
``epoch()`` returns None and the caller reads PostgreSQL, as on the sync path.

One reader per event loop (``oversight.aio``); only RESP over TCP or a unix socket
(``redis://``, ``unix://``). For other URLs (TLS) ``supported()`` is False and the caller does a
plain GET per request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

MAX_AGE_S = 1.0
TIMEOUT_S = 0.25  # as the sync client's FAIL_FAST: a Redis that is away costs milliseconds
RETRY_AFTER_S = 1.0


class Incomplete(Exception):
    """The buffer ends inside a frame: read more."""


class Push:
    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


class RedisError(Exception):
    pass


def parse(buf: bytes | bytearray, pos: int = 0) -> tuple[Any, int]:
    """One RESP2/RESP3 frame from ``buf`` at ``pos``: (value, position after it)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    kind, line, pos = buf[pos : pos + 1], bytes(buf[pos + 1 : end]), end + 2
    if kind in (b"+", b"("):
        return line, pos
    if kind == b"-" or kind == b"!":
        if kind == b"!":  # blob error: the length, then the text
            n = int(line)
            if len(buf) < pos + n + 2:
                raise Incomplete
            line, pos = bytes(buf[pos : pos + n]), pos + n + 2
        return RedisError(line.decode(errors="replace")), pos
    if kind == b":":
        return int(line), pos
    if kind == b",":
        return float(line), pos
    if kind == b"#":
        return line == b"t", pos
    if kind == b"_":
        return None, pos
    if kind in (b"$", b"="):
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise Incomplete
        return bytes(buf[pos : pos + n]), pos + n + 2
    if kind in (b"*", b">", b"~", b"%", b"|"):
        n = int(line)
        if n < 0:
            return None, pos
        count = n * 2 if kind in (b"%", b"|") else n
        items = []
        for _ in range(count):
            item, pos = parse(buf, pos)
            items.append(item)
        if kind == b"|":  # attributes come before the value they describe: skip them
            return parse(buf, pos)
        if kind == b">":
            return Push(items), pos
        return items, pos
    raise RedisError(f"unexpected RESP frame type {kind!r}")


def command(*args: str | bytes | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def supported(url: str) -> bool:
    return urlparse(url).scheme in ("redis", "unix")


class EpochWatch:
    """The value of one Redis key, held between writes, for one event loop."""

    def __init__(self, url: str, key: str) -> None:
        parsed = urlparse(url)
        self.key = key.encode()
        self.unix = parsed.path if parsed.scheme == "unix" else None
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None
        if self.unix:
            db = dict(p.split("=", 1) for p in parsed.query.split("&") if "=" in p).get("db", "0")
        else:
            db = parsed.path.lstrip("/") or "0"
        self.db = int(db)
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.valid = False  # True while no invalidation arrived since the last GET
        self.value: int | None = None
        self.fetched_at = 0.0
        self.down_until = 0.0
        self.lock = asyncio.Lock()
        self.gets = 0  # GETs sent (the tests check that a held value needs none)

    async def epoch(self) -> int | None:
        """The epoch Redis holds now; None when Redis is away or has no epoch."""
        if self.valid and not self.lock.locked():
            self._drain()
            if self.valid and time.monotonic() - self.fetched_at < MAX_AGE_S:
                return self.value
        if time.monotonic() < self.down_until:
            return None
        async with self.lock:
            if self.valid and time.monotonic() - self.fetched_at < MAX_AGE_S:
                self._drain()  # another caller fetched while this one waited for the lock
                if self.valid:
                    return self.value
            try:
                return await asyncio.wait_for(self._fetch(), TIMEOUT_S)
            except (OSError, RedisError, TimeoutError, ValueError) as exc:
                self.close()
                self.down_until = time.monotonic() + RETRY_AFTER_S
                log.warning("Redis unreachable for the config epoch (%r); reading PostgreSQL", exc)
                return None

    def _drain(self) -> None:
        """Read whatever Redis sent since (never blocks); an invalidation drops the held value."""
        assert self.sock is not None
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:  # closed by Redis
                    self.close()
                    return
                self.buf += data
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close()
            return
        try:
            while self.buf:
                frame, pos = parse(self.buf)
                del self.buf[:pos]
                if not isinstance(frame, Push):  # nothing was asked: the stream is out of step
                    self.close()
                    return
                self._on_push(frame)
        except Incomplete:
            pass
        except (RedisError, ValueError):
            self.close()

    def _on_push(self, push: Push) -> None:
        if push.items and push.items[0] == b"invalidate":
            self.valid = False

    async def _fetch(self) -> int | None:
        if self.sock is None:
            await self._connect()
        self.valid = True  # from the moment the GET is sent: a push after it invalidates
        self.gets += 1
        reply = await self._call(command("GET", self.key))
        if isinstance(reply, RedisError):
            raise reply
        self.value = int(reply) if reply is not None else None
        self.fetched_at = time.monotonic()
        return self.value

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        if self.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = self.unix
        else:
            info = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            family, _, _, _, address = info[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        self.sock, self.buf, self.valid = sock, bytearray(), False
        hello: list[str | bytes | int] = ["HELLO", 3]
        if self.password is not None:
            hello += ["AUTH", self.username or "default", self.password]
        setup = [command(*hello), command("CLIENT", "TRACKING", "ON")]
        if self.db:
            setup.insert(1, command("SELECT", self.db))
        for cmd in setup:
            reply = await self._call(cmd)
            if isinstance(reply, RedisError):
                raise reply

    async def _call(self, cmd: bytes) -> Any:
        """Send one command, return its reply; pushes read on the way are handled."""
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self.sock, cmd)
        while True:
            try:
                while self.buf:
                    frame, pos = parse(self.buf)
                    del self.buf[:pos]
                    if isinstance(frame, Push):
                        self._on_push(frame)
                        continue
                    return frame
            except Incomplete:
                pass
            data = await loop.sock_recv(self.sock, 65536)
            if not data:
                raise ConnectionResetError("Redis closed the connection")
            self.buf += data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf, self.valid = None, bytearray(), False
