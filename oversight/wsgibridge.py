"""a2wsgi's bridge from uvicorn to Django's WSGI handler, with the request body read on the event loop.

a2wsgi starts a request's thread at once and hands it a ``wsgi.input`` that, on each read, asks the
event loop for the next body message and blocks until the loop answers: one thread-to-loop-and-back
hop per message. For a small POST (a decision, an outcome, any form) that hop, on the request's
path between two waits for the network, cost 0.1-0.3 ms at p50 on the 2-core bench machine, a
tenth of a decision (measured by ``make bench``, which runs the decision with and without this
in the same interleaved blocks).

Here the first body message is awaited on the loop, before the thread starts (uvicorn has it, or
it arrives while no thread is held). When it holds the whole body (every GET, every small POST),
the thread reads it from memory. A longer body streams as before, its first part handed over again.
Everything else (threads, the response's way back, errors) is a2wsgi's own.
"""

from __future__ import annotations

import io
from typing import Any

from a2wsgi import WSGIMiddleware
from a2wsgi.wsgi import WSGIResponder


class BodyFirstResponder(WSGIResponder):
    """One request: the first body message read on the loop, then a2wsgi's responder."""

    whole_body: bytes | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        first = await receive()
        if first.get("type") == "http.request" and not first.get("more_body", False):
            self.whole_body = first.get("body", b"")
            return await super().__call__(scope, receive, send)
        handed_over = False

        async def receive_again() -> Any:
            nonlocal handed_over
            if not handed_over:
                handed_over = True
                return first
            return await receive()

        return await super().__call__(scope, receive_again, send)

    def wsgi(self, environ: Any, start_response: Any) -> None:
        if self.whole_body is not None:
            environ["wsgi.input"] = io.BytesIO(self.whole_body)
        super().wsgi(environ, start_response)


class BodyFirstWSGIMiddleware(WSGIMiddleware):
    """``a2wsgi.WSGIMiddleware`` whose HTTP requests go through ``BodyFirstResponder``."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            responder = BodyFirstResponder(self.app, self.executor, self.send_queue_size)
            return await responder(scope, receive, send)
        return await super().__call__(scope, receive, send)
