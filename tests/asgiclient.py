"""Django's test-client API, with every request served by the production ASGI application.

``ApiClient`` builds requests as ``django.test.Client`` does (``post(path, data, content_type=…,
HTTP_AUTHORIZATION=…)``, cookies, ``force_login``), but hands each one to
``oversight.asgi.application``, the very object uvicorn serves: Channels' router, Django's
``ASGIHandler``, the middleware, django-ninja and the views. So the API tests exercise the code
path that serves clients, not a WSGI twin.

Like Django's own test clients, it leaves the test's database connection open across requests
(``close_old_connections`` is not run at a request's start and end), and the request's sync code
runs on the test's own thread: the pool of kept threads that serves requests in production
(``oversight.asgi.http_app``) is given an executor that hands each request to the thread blocked
in this client's ``async_to_sync``. So a test's uncommitted data is visible to the views, as with
``django.test.Client``; everything else is the production object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor, Future
from http.cookies import SimpleCookie
from typing import Any

from asgiref.sync import AsyncToSync, async_to_sync
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.http import HttpResponse
from django.test import AsyncClient

from oversight.asgi import application, http_app


class _CallerThreadExecutor(Executor):
    """Runs each request on the thread that waits in ``async_to_sync`` (see the module docstring)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        caller = AsyncToSync.executors.current  # type: ignore[attr-defined]
        return caller.submit(fn, *args, **kwargs)  # type: ignore[no-any-return]


http_app.executor = _CallerThreadExecutor()  # type: ignore[assignment]


async def _serve(scope: dict[str, Any]) -> HttpResponse:
    body_file = scope.pop("_body_file", None)
    body = body_file.read() if body_file is not None else b""
    scope["headers"] = [(k, v) for k, v in scope["headers"] if not (k == b"cookie" and not v)]
    query = scope.get("query_string", b"")
    scope["query_string"] = query.encode("latin1") if isinstance(query, str) else query  # ASGI says bytes
    host, port = scope["server"]
    scope["server"] = (host, int(port))
    delivered = False
    done = asyncio.Event()
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # the server listens for a disconnect while it works: none comes early
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        await application(scope, receive, send)
    finally:
        done.set()
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    start = next(m for m in messages if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    response = HttpResponse(content, status=start["status"])
    del response["Content-Type"]
    for name, value in start.get("headers", []):
        key, text = name.decode("latin1"), value.decode("latin1")
        if key.lower() == "set-cookie":
            response.cookies.load(SimpleCookie(text))
        else:
            response.headers[key] = text
    response.asgi_request = None  # type: ignore[attr-defined]
    return response


class _AsyncApiClient(AsyncClient):
    def __init__(self, **defaults: Any) -> None:
        super().__init__(enforce_csrf_checks=True, **defaults)
        self.handler = _serve  # type: ignore[assignment]

    def _base_scope(self, **request: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._base_scope(**request)
        for key in list(scope):  # the defaults given as META names belong in the headers, not the scope
            if key.isupper():
                del scope[key]
        return scope

    def generic(self, method: str, path: str, *args: Any, **extra: Any) -> Any:
        # Accept Django Client's META spelling (HTTP_AUTHORIZATION=…) as well as plain header names.
        meta = {**self.defaults, **extra}
        headers = {k.removeprefix("HTTP_"): v for k, v in meta.items() if k.isupper() and k not in ("QUERY_STRING",)}
        rest = {k: v for k, v in extra.items() if not k.isupper() or k == "QUERY_STRING"}
        saved, self.defaults = self.defaults, {}
        try:
            return super().generic(method, path, *args, **rest, **headers)
        finally:
            self.defaults = saved


class ApiClient:
    """Synchronous face of ``_AsyncApiClient`` for plain test functions."""

    def __init__(self, **defaults: Any) -> None:
        self._client = _AsyncApiClient(**defaults)

    @property
    def cookies(self) -> SimpleCookie:
        return self._client.cookies

    @property
    def defaults(self) -> dict[str, Any]:
        return self._client.defaults  # type: ignore[no-any-return]

    def force_login(self, user: Any) -> None:
        async_to_sync(self._client.aforce_login)(user)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return async_to_sync(getattr(self._client, method))(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("get", *args, **kwargs)

    def post(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("post", *args, **kwargs)

    def put(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("put", *args, **kwargs)

    def patch(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("patch", *args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("delete", *args, **kwargs)

    def head(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("head", *args, **kwargs)

    def options(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("options", *args, **kwargs)

    def generic(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("generic", *args, **kwargs)
