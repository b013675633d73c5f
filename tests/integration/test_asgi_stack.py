"""The ASGI stack under the views: middleware on the event loop, no thread to start a request,
and the config epoch read as a client's decision arrives (``oversight.asgi``).

Django's own middleware hop to a worker thread and back for each hook under ASGI; ours
(``oversight.loopmiddleware``) run on the loop and send to a thread only what can do I/O: saving
a changed session, storing flash messages, serving a static file, loading the user for a page.
The first part checks that shape in this process; the second drives a real uvicorn with httpx
through everything those steps do for a person (log in, CSRF, messages, static files, headers),
so a hook that lost its I/O on the way would show here; the last part checks ``EarlyEpochRead``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from asgiref.sync import SyncToAsync, iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.utils.deprecation import MiddlewareMixin

from oversight import actions, aio, config
from oversight.models import KillSwitch
from oversight.requestthreads import KeptThreads
from tests.conftest import BASE_DIR, World, decision_body, free_port
from tests.conftest import test_database_env as server_env

# --- the shape, in this process ---------------------------------------------------------------


def middleware_chain(handler: ASGIHandler) -> list[Any]:
    """The middleware instances of a handler, outermost first (each is wrapped by Django's
    ``convert_exception_to_response``, whose wrapper keeps it as ``__wrapped__``)."""
    found = []
    step: Any = handler._middleware_chain
    while hasattr(getattr(step, "__wrapped__", None), "get_response"):
        found.append(step.__wrapped__)
        step = step.__wrapped__.get_response
    return found


def test_every_middleware_runs_on_the_event_loop() -> None:
    handler = ASGIHandler()
    chain = middleware_chain(handler)
    names = [f"{type(m).__module__}.{type(m).__qualname__}" for m in chain]
    assert names == settings.MIDDLEWARE
    for mw in chain:
        # Async all the way down: no middleware turns the stack synchronous (one thread for all).
        assert iscoroutinefunction(mw), f"{type(mw).__name__} runs in sync mode under ASGI"
        # And none of them sends its hooks to a thread as MiddlewareMixin does.
        acall = getattr(type(mw), "__acall__", None)
        assert acall is not MiddlewareMixin.__acall__, f"{type(mw).__name__} hops threads for every hook"
    # process_view hooks (CSRF's) are awaited on the loop, not wrapped in sync_to_async by the handler.
    assert handler._view_middleware
    assert all(iscoroutinefunction(hook) and "OnTheLoop" in hook.__qualname__ for hook in handler._view_middleware)


def test_a_request_under_the_asgi_server_starts_without_a_thread() -> None:
    # In a process of its own, as under uvicorn: Django's test client, used by other tests here,
    # connects close_old_connections again after each of its requests.
    probe = """
import json
import oversight.asgi
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
started, _ = signals.request_started._live_receivers(ASGIHandler)
finished, _ = signals.request_finished._live_receivers(ASGIHandler)
print(json.dumps([[r.__name__ for r in started], [r.__name__ for r in finished]]))
"""
    out = subprocess.run([sys.executable, "-c", probe], env=server_env(), cwd=BASE_DIR,
                         capture_output=True, text=True, timeout=60, check=True)
    started, finished = json.loads(out.stdout.strip().splitlines()[-1])
    assert started == []  # asend would run sync receivers in a new thread before any view
    assert "close_old_connections" in finished  # the end of a request still closes what it opened


# --- a person's requests through the real server --------------------------------------------------


@pytest.fixture
def http_url(live_server_url: str) -> str:
    return live_server_url


@pytest.fixture
def browser(live_server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server_url, timeout=15, follow_redirects=False) as c:
        yield c


def form_token(page: httpx.Response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, "the page has no CSRF form field"
    return match.group(1)


def log_in(c: httpx.Client, username: str, password: str, next_path: str = "/") -> httpx.Response:
    page = c.get("/login/")
    assert page.status_code == 200
    return c.post("/login/", data={"username": username, "password": password, "next": next_path,
                                   "csrfmiddlewaretoken": form_token(page)})


def test_logging_in_and_out_saves_and_ends_the_session(tworld: World, browser: httpx.Client) -> None:
    assert browser.get("/review/").headers["location"] == "/login/?next=/review/"  # user loaded, anonymous
    r = log_in(browser, "operator", "wrong password")
    assert r.status_code == 200
    assert "match" in r.text
    r = log_in(browser, "operator", tworld.password, "/review/")
    assert r.status_code == 302
    assert r.headers["location"] == "/review/"
    assert settings.SESSION_COOKIE_NAME in browser.cookies  # the changed session was saved
    page = browser.get("/review/")
    assert page.status_code == 200
    r = browser.post("/logout/", data={"csrfmiddlewaretoken": form_token(page)})
    assert r.status_code == 302
    assert browser.get("/review/").status_code == 302  # the session is gone on the server too


def test_a_form_post_without_the_csrf_token_is_refused(tworld: World, browser: httpx.Client) -> None:
    log_in(browser, "admin", tworld.password)
    r = browser.post("/killswitch/", data={"scope": "global", "engaged": "true", "reason": "no token"})
    assert r.status_code == 403
    assert not KillSwitch.objects.exists()


def test_a_flash_message_is_shown_once(tworld: World, browser: httpx.Client) -> None:
    log_in(browser, "operator", tworld.password)
    page = browser.get("/review/")
    r = browser.post("/review/next/", data={"csrfmiddlewaretoken": form_token(page)})  # the queue is empty
    assert r.status_code == 302
    assert r.headers["location"] == "/review/"
    assert "the queue is empty" in browser.get("/review/").text
    assert "the queue is empty" not in browser.get("/review/").text  # read, so stored as gone


def test_static_files_are_served_with_the_right_type(browser: httpx.Client) -> None:
    r = browser.get("/static/vendor/plotly.min.js")
    assert r.status_code == 200
    assert "javascript" in r.headers["content-type"]
    assert int(r.headers["content-length"]) == len(r.content) > 1_000_000
    assert browser.get("/static/vendor/no-such-file.js").status_code == 404


def test_api_answers_carry_the_security_headers_and_json_errors(tworld: World, browser: httpx.Client) -> None:
    r = browser.post("/api/v1/systems/auto/decisions", content=json.dumps(decision_body(0.9)),
                     headers={"Authorization": f"Bearer {tworld.keys['auto']}", "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"
    r = browser.get("/api/v1/no-such-endpoint")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = browser.delete("/api/v1/systems/auto/decisions")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"
    big = b'{"subject": "' + b"x" * (settings.MAX_BODY_BYTES + 10) + b'"}'
    r = browser.post("/api/v1/systems/auto/decisions", content=big,
                     headers={"Authorization": f"Bearer {tworld.keys['auto']}", "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"
    # The server is still well after a decision refused before its key was checked (its epoch read unread).
    r = browser.post("/api/v1/systems/auto/decisions", content=json.dumps(decision_body(0.9)),
                     headers={"Authorization": f"Bearer {tworld.keys['auto']}", "Content-Type": "application/json"})
    assert r.status_code == 201


# --- EarlyEpochRead ---------------------------------------------------------------------------


def scope(method: str, path: str, authorization: bytes | None) -> dict[str, Any]:
    headers = [(b"host", b"testserver"), (b"content-type", b"application/json")]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    return {"type": "http", "method": method, "path": path, "headers": headers}


def through_wrapper(s: dict[str, Any], await_read: bool = True,
                    body: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], Any]:
    """Run ``EarlyEpochRead`` around an app that reads the body as Django does, records the scope
    and when the read was started, and awaits the read."""
    seen: dict[str, Any] = {}
    messages = list(body or [{"type": "http.request", "body": b"{}", "more_body": False}])

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def app(inner_scope: Any, receive: Any, send: Any) -> None:
        seen.update(inner_scope)
        holder = inner_scope.get(aio.EPOCH_READ)
        seen["started"] = []
        more = True
        while more:
            seen["started"].append(holder is not None and holder.started is not None)
            message = await receive()
            more = message.get("more_body", False)
        read = holder.started if holder is not None else None
        seen["read"] = read
        if read is not None and await_read:
            seen["value"] = await read

    async def main() -> None:
        try:
            await aio.EarlyEpochRead(app)(s, receive, None)
            await asyncio.sleep(0.05)  # an unread GET finishes in the background
        finally:
            await aio.close()

    asyncio.run(main())
    return seen, seen.get("value")


@pytest.mark.parametrize(
    ("method", "path", "authorization", "read"),
    [
        ("POST", "/api/v1/systems/auto/decisions", b"Bearer ovk_x", True),
        ("POST", "/api/v1/systems/auto/decisions", b"bearer ovk_x", True),
        ("POST", "/api/v1/systems/auto/decisions", b"Token ovt_x", False),  # a person: the sync path
        ("POST", "/api/v1/systems/auto/decisions", None, False),
        ("GET", "/api/v1/systems/auto/decisions", b"Bearer ovk_x", False),
        ("POST", "/api/v1/systems/auto/decisions/batch", b"Bearer ovk_x", False),  # batches run in a thread
        ("POST", "/api/v1/systems", b"Bearer ovk_x", False),
        ("GET", "/review/", None, False),
    ],
)
def test_only_a_clients_decision_reads_the_epoch_early(method: str, path: str, authorization: bytes | None,
                                                       read: bool) -> None:
    s = scope(method, path, authorization)
    seen, _ = through_wrapper(s)
    assert (seen["read"] is not None) is read
    assert aio.EPOCH_READ not in s  # the server's own scope is left as it was


def test_the_early_read_goes_out_when_the_last_of_the_body_is_in(db: None) -> None:
    """Not at the headers: a client may send them, wait (``100 Continue``), then send the body."""
    chunks = [{"type": "http.request", "body": b'{"subj', "more_body": True},
              {"type": "http.request", "body": b'ect": "u"}', "more_body": True},
              {"type": "http.request", "body": b"", "more_body": False}]
    seen, _ = through_wrapper(scope("POST", "/api/v1/systems/auto/decisions", b"Bearer k"), body=chunks)
    assert seen["started"] == [False, False, False]  # nothing sent while the body was on its way
    assert seen["read"] is not None


def test_the_early_read_is_the_epoch_in_redis_when_the_request_arrived(db: None) -> None:
    r = redis.Redis.from_url(settings.REDIS_URL)
    key = settings.REDIS_PREFIX + config.EPOCH_KEY_SUFFIX
    r.set(key, 41)
    assert through_wrapper(scope("POST", "/api/v1/systems/auto/decisions", b"Bearer k"))[1] == 41
    r.set(key, 42)  # a flip confirmed before the next request: that request sees it
    assert through_wrapper(scope("POST", "/api/v1/systems/auto/decisions", b"Bearer k"))[1] == 42


@pytest.mark.parametrize("redis_away", [False, True])
def test_an_early_read_nobody_awaits_ends_quietly(db: None, settings: Any, redis_away: bool,
                                                  recwarn: pytest.WarningsRecorder,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A decision refused before its key check (413, bad JSON) leaves its GET unread: no warning
    about a coroutine never awaited or a reply never retrieved, with Redis there or away."""
    if redis_away:
        settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    config.redis_epoch._down_until = 0.0
    try:
        for _ in range(3):  # the first read connects; later ones are written at once
            seen, _ = through_wrapper(scope("POST", "/api/v1/systems/auto/decisions", b"Bearer k"), await_read=False)
            assert seen["read"].cr_frame is None  # closed by the wrapper
        gc.collect()
    finally:
        config.redis_epoch._down_until = 0.0
    assert not [w for w in recwarn if "never awaited" in str(w.message)]
    assert "never retrieved" not in caplog.text


# --- KeptThreads ------------------------------------------------------------------------------


def test_requests_borrow_kept_threads_one_request_per_thread_at_a_time() -> None:
    seen: list[tuple[str, int]] = []
    gate = asyncio.Event()

    async def app(s: Any, receive: Any, send: Any) -> None:
        if s.get("fail"):
            raise RuntimeError("the app failed")
        seen.append((s["path"], await sync_to_async(threading.get_ident)()))
        if s.get("hold"):
            await gate.wait()
        seen.append((s["path"], await sync_to_async(threading.get_ident)()))  # the same thread all request

    async def main() -> KeptThreads:
        kept = KeptThreads(app, keep=2)
        await kept({"type": "http", "path": "/one"}, None, None)
        await kept({"type": "http", "path": "/two"}, None, None)  # after /one: its thread again
        held = [asyncio.ensure_future(kept({"type": "http", "path": f"/c{i}", "hold": True}, None, None))
                for i in range(3)]
        await asyncio.sleep(0.1)
        gate.set()
        await asyncio.gather(*held)
        assert len(kept.free) == 2  # three were busy at once; ``keep`` of them are kept
        with pytest.raises(RuntimeError):
            await kept({"type": "http", "path": "/fails", "fail": True}, None, None)
        return kept

    kept = asyncio.run(main())
    threads = dict(seen)
    assert len(seen) == 10
    assert all(threads[p] == t for p, t in seen)  # a request's sync code stays on one thread
    assert threads["/one"] == threads["/two"]
    assert len({threads["/c0"], threads["/c1"], threads["/c2"]}) == 3  # concurrent requests never share
    assert threads["/one"] in {threads["/c0"], threads["/c1"], threads["/c2"]}
    assert len(kept.free) == 1  # the failed request's thread was let go, not kept
    for t in kept.free:
        t.shutdown()


def test_websocket_scopes_pass_through_untouched() -> None:
    got: list[Any] = []

    async def app(s: Any, receive: Any, send: Any) -> None:
        got.append(SyncToAsync.thread_sensitive_context.get(None))

    kept = KeptThreads(app)
    asyncio.run(kept({"type": "websocket", "path": "/ws/overview/"}, None, None))
    assert got == [None]
    assert kept.free == []


@pytest.mark.parametrize("expect_continue", [True, False])
def test_a_flip_confirmed_between_a_decisions_headers_and_its_body_stops_it(
    tworld: World, http_url: str, expect_continue: bool
) -> None:
    with httpx.Client(base_url=http_url, timeout=15) as c:  # the server's snapshot is fresh
        r = c.post("/api/v1/systems/sup/decisions", content=json.dumps(decision_body(0.9)),
                   headers={"Authorization": f"Bearer {tworld.keys['sup']}", "Content-Type": "application/json"})
        assert r.status_code == 201, r.text
    u = urlsplit(http_url)
    body = json.dumps(decision_body(0.9)).encode()
    head = (f"POST /api/v1/systems/sup/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {tworld.keys['sup']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Expect: 100-continue\r\n" if expect_continue else "") + "\r\n")
    with socket.create_connection((u.hostname, u.port), timeout=15) as sock:
        sock.sendall(head.encode())
        if expect_continue:
            assert sock.recv(100).startswith(b"HTTP/1.1 100")  # the server asked for the body
        else:
            time.sleep(0.1)  # the headers are in, the body is not
        actions.set_killswitch(tworld.admin, "system", True, "stop before the body", "sup")  # confirmed
        sock.sendall(body)
        answer = b""
        while not (b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}")):
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    decided = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert (decided["route"], decided["status"]) == ("killed", "fallback")


def test_an_epoch_read_older_than_the_snapshot_keeps_the_snapshot(world: World) -> None:
    """A request whose GET went out just before another request loaded a newer snapshot uses that
    snapshot (epochs only grow), rather than loading the configuration again."""
    held = config.cache.current()

    async def older() -> int:
        return held.epoch - 1

    assert asyncio.run(config.cache.acurrent(older())) is held
