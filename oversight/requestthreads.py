"""Threads for a request's sync code, kept from one request to the next (ASGI).

Under an ASGI server Django runs a request's sync code (a sync view, saving a session, the end of
the request) on a thread of that request's own: asgiref makes a thread when the request first
needs one, and after the request another thread to join it. That is two threads started per
request, the decision endpoint's included, which needs a thread only to end its request. Here
each request borrows a thread from those kept by its worker process, as a threaded WSGI server
does, and gives it back when it is done: the closed-loop decision rate rose by ~30 %
(`make bench`).

What a thread holds between requests is what it holds in a threaded WSGI server: Django closes
a request's database connections when the request finishes (``CONN_MAX_AGE = 0``, with the
connection pool), and request state lives in context variables, not in the thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class KeptThreads:
    """ASGI wrapper: each HTTP request runs its sync code on a kept thread (one at a time each)."""

    def __init__(self, app: ASGIApp, keep: int = 32) -> None:
        self.app = app
        self.keep = keep
        self.free: list[ThreadPoolExecutor] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        thread = self.free.pop() if self.free else ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        done = False
        try:
            # The outermost context decides: Django's own ThreadSensitiveContext inside finds this one.
            async with ThreadSensitiveContext(executor=thread):
                await self.app(scope, receive, send)
            done = True
        finally:
            if done and len(self.free) < self.keep:
                self.free.append(thread)  # idle: Django waited for the request's sync work
            else:
                thread.shutdown(wait=False)  # after an error the thread may still be busy: let it end
