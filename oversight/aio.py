"""Connections for the async hot path: one psycopg pool and one Redis client per event loop.

Under an ASGI server each worker process runs one event loop for its whole life, so these are
made once per process, on first use, and the decision endpoint talks to PostgreSQL and Redis
without leaving the loop (no hop to a worker thread and back). Under WSGI, or Django's test
client, a request runs on a throw-away loop: ``available()`` says no and the endpoint takes the
sync path on Django's own connection instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

import psycopg
import redis.asyncio as aredis
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connections, utils
from django.http import HttpRequest
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from oversight import config, redisget

log = logging.getLogger(__name__)

POOL_MIN = 1
# The sync client's settings (a Redis that is away costs milliseconds, not retries), with the
# asyncio client's own kind of Retry.
FAIL_FAST: dict[str, object] = {**config.FAIL_FAST, "retry": Retry(NoBackoff(), 0)}


class HotConnection(psycopg.AsyncConnection[Any]):
    """The hot path's connection: one cursor kept for its whole life (a cursor per statement costs
    ~10 µs of CPU on each decision)."""

    __slots__ = ("_hot_cursor",)

    def hot_cursor(self) -> psycopg.AsyncCursor[Any]:
        try:
            return self._hot_cursor
        except AttributeError:
            self._hot_cursor: psycopg.AsyncCursor[Any] = self.cursor()
            return self._hot_cursor


class _LoopResources:
    def __init__(self) -> None:
        params: dict[str, Any] = connections["default"].get_connection_params()
        for django_only in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(django_only, None)  # server-side binding; statements prepared unless turned off
        if not settings.ASYNC_DB_PREPARE:
            params["prepare_threshold"] = None  # behind PgBouncer in transaction mode before 1.21
        params["autocommit"] = True
        self.pool: AsyncConnectionPool[HotConnection] = AsyncConnectionPool(
            kwargs=params,
            connection_class=HotConnection,
            min_size=POOL_MIN,
            max_size=max(POOL_MIN, settings.ASYNC_DB_POOL_MAX),
            timeout=settings.DATABASE_POOL_TIMEOUT,
            open=False,
            name="oversight-async",
        )
        self.redis: aredis.Redis = aredis.Redis.from_url(settings.REDIS_URL, **FAIL_FAST)
        self.redis_get = (
            redisget.RedisGet(settings.REDIS_URL, config.REDIS_TIMEOUT_S, config.REDIS_TIMEOUT_S)
            if redisget.supports(settings.REDIS_URL) else None
        )
        self.opened = False
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        async with self.lock:
            if not self.opened:
                await self.pool.open(wait=False)
                self.opened = True


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopResources] = weakref.WeakKeyDictionary()


def available(request: HttpRequest) -> bool:
    """True when the request came through an ASGI server (uvicorn, daphne: one long-lived loop per
    process). Django's sync test client makes WSGI requests and takes the sync path. (Its
    ``AsyncClient`` would come here, on a loop of its own per test; call ``close()`` there.)"""
    return settings.ASYNC_HOT_PATH and isinstance(request, ASGIRequest)


def _resources() -> _LoopResources:
    loop = asyncio.get_running_loop()
    res = _by_loop.get(loop)
    if res is None:
        res = _by_loop[loop] = _LoopResources()
    return res


async def pool() -> AsyncConnectionPool[HotConnection]:
    res = _resources()
    if not res.opened:
        await res.open()
    return res.pool


def redis_client() -> aredis.Redis:
    return _resources().redis


def redis_get(key: str) -> Awaitable[bytes | None]:
    """GET on this loop's lean connection (``oversight.redisget``); redis.asyncio for a TLS URL.

    On a live lean connection the GET is written before this returns: await the reply later.
    The reply raises ``redisget.RedisGetError`` or ``redis.RedisError`` when Redis cannot answer."""
    res = _resources()
    if res.redis_get is not None:
        sent = res.redis_get.send(key.encode())
        if sent is not None:
            return sent
        reply = asyncio.ensure_future(res.redis_get.get(key.encode()))  # connects first
    else:
        reply = asyncio.ensure_future(res.redis.get(key))
    reply.add_done_callback(_retrieved)
    return reply


def _retrieved(reply: asyncio.Future[Any]) -> None:
    if not reply.cancelled():
        reply.exception()  # a reply nobody awaits (its request was refused first) fails quietly


_DJANGO_ERRORS = (
    utils.DataError, utils.OperationalError, utils.IntegrityError, utils.InternalError,
    utils.ProgrammingError, utils.NotSupportedError, utils.DatabaseError, utils.InterfaceError, utils.Error,
)


def django_error(exc: psycopg.Error) -> utils.Error:
    """The Django exception Django's own wrapper would raise for this psycopg error."""
    for kind in _DJANGO_ERRORS:
        if isinstance(exc, getattr(psycopg, kind.__name__)):
            return kind(*exc.args)
    return utils.Error(*exc.args)  # pragma: no cover - every psycopg error is a psycopg.Error


class connection:  # noqa: N801 - used as ``async with aio.connection() as conn``
    """A connection of this loop's pool (autocommit); psycopg errors come out as Django's.

    A plain class rather than ``psycopg_pool``'s generator-based context manager wrapped in another:
    on the hot path each layer of those cost more than taking and returning the connection.
    """

    __slots__ = ("conn", "pool")

    async def __aenter__(self) -> HotConnection:
        self.pool = await pool()
        try:
            self.conn = await self.pool.getconn()
        except psycopg.Error as exc:
            raise django_error(exc) from exc
        return self.conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            await self.pool.putconn(self.conn)  # the pool checks it: a broken connection is replaced
        except Exception:
            if exc is None:
                raise
            log.exception("could not return a connection to the pool after: %r", exc)
        if isinstance(exc, psycopg.Error):
            raise django_error(exc) from exc


async def close() -> None:
    """Close this loop's pool and Redis client (tests, and loops that end before the process)."""
    res = _by_loop.pop(asyncio.get_running_loop(), None)
    if res is not None:
        if res.opened:
            await res.pool.close()
        if res.redis_get is not None:
            res.redis_get.close()
        await res.redis.aclose()


# --- the config epoch, read as the request arrives ------------------------------------------

EPOCH_READ = "oversight.epoch_read"  # the scope key of the GET sent for this request
_DECISION_PATH = re.compile(r"/api/v1/systems/[^/]+/decisions\Z")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class EarlyEpochRead:
    """ASGI wrapper: a client's decision sends its config-epoch GET as soon as its body is in.

    The API key check needs the epoch (``config.cache.acurrent``). Sent here, when the last of the
    body is received (before Django builds the request, runs the middleware and resolves the URL),
    the Redis round trip overlaps that work instead of following it. It is sent once the whole
    request has arrived, not at its headers: a flip confirmed before the request's last byte is
    seen (a client may send its headers, wait for ``100 Continue``, then the body). Only a POST to
    the decision endpoint with a Bearer key gets one; every other request passes through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and settings.ASYNC_HOT_PATH
            and _DECISION_PATH.search(scope["path"])
            and _has_bearer(scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        read = _Read()

        async def receive_and_read() -> Any:
            message = await receive()
            if read.started is None and message["type"] == "http.request" and not message.get("more_body"):
                read.started = config.redis_epoch.start_read()  # the request is in: the GET goes out now
            return message

        try:
            await self.app({**scope, EPOCH_READ: read}, receive_and_read, send)  # ASGI: copy a scope to add to it
        finally:
            if read.started is not None:
                read.started.close()  # unread when the request was refused before its key check; else a no-op


class _Read:
    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started: Coroutine[Any, Any, int | None] | None = None


def epoch_read(request: HttpRequest) -> Awaitable[int | None] | None:
    """The epoch GET ``EarlyEpochRead`` sent for this request, if any."""
    scope = getattr(request, "scope", None)
    read = scope.get(EPOCH_READ) if scope is not None else None
    return read.started if read is not None else None


def _has_bearer(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"authorization":
            return value[:7].lower() == b"bearer "
    return False
