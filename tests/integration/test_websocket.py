"""WebSockets through the real ASGI application and the real Redis channel layer.

Consumers read the session and the user in worker threads, so everything they must see is
committed (``tworld`` / ``transactional_db``). Events are sent on commit, so the kill switch is
flipped through the action itself, in its own (durable) transaction.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from oversight import actions, events
from oversight.asgi import application
from tests.conftest import World, release_switch

ORIGIN = (b"origin", b"http://localhost")
TIMEOUT = 5



def session_cookie(user: Any) -> str:
    """A real session for ``user``, as the login view would store it."""
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    assert store.session_key
    return store.session_key


def headers_for(user: Any | None, origin: tuple[bytes, bytes] = ORIGIN, host: bytes = b"localhost"
                ) -> list[tuple[bytes, bytes]]:
    headers = [origin, (b"host", host)]
    if user is not None:
        headers.append((b"cookie", f"sessionid={session_cookie(user)}".encode()))
    return headers


def connect(path: str, headers: list[tuple[bytes, bytes]]) -> tuple[bool, Any, Any]:
    """Connect, and return (accepted, close code or subprotocol, first message when accepted)."""

    async def run() -> tuple[bool, Any, Any]:
        comm = WebsocketCommunicator(application, path, headers=headers)
        accepted, detail = await comm.connect(timeout=TIMEOUT)
        first = None
        if accepted:
            first = await comm.receive_json_from(timeout=TIMEOUT)
            await comm.disconnect()
        return accepted, detail, first

    return async_to_sync(run)()


def test_anonymous_connection_is_refused(tworld: World) -> None:
    accepted, code, _ = connect("/ws/overview/", headers_for(None))
    assert accepted is False
    assert code == 4403


def test_a_user_without_a_role_is_refused(tworld: World) -> None:
    accepted, code, _ = connect("/ws/overview/", headers_for(tworld.nobody))
    assert accepted is False
    assert code == 4403
    accepted, code, _ = connect("/ws/systems/crit/", headers_for(tworld.nobody))
    assert (accepted, code) == (False, 4403)


def test_a_stale_session_is_refused(tworld: World) -> None:
    headers = headers_for(tworld.operator)
    tworld.operator.set_password("a-new-password-for-this-test")
    tworld.operator.save()  # the session's auth hash no longer matches: logged out everywhere
    accepted, code, _ = connect("/ws/overview/", headers)
    assert (accepted, code) == (False, 4403)


def test_a_foreign_origin_is_refused(tworld: World) -> None:
    accepted, _, _ = connect("/ws/overview/", headers_for(tworld.operator, (b"origin", b"http://evil.example")))
    assert accepted is False


@pytest.mark.parametrize(("origin", "host", "ok"), [
    (b"http://localhost:8000", b"localhost:8000", True),  # the page's own origin, exactly
    (b"http://LOCALHOST:8000", b"localhost:8000", True),  # case does not matter in a host name
    (b"http://localhost:9999", b"localhost:8000", False),  # another server on the same host
    (b"http://localhost", b"localhost:8000", False),  # the port left out is port 80, not 8000
    (b"https://localhost:8000", b"localhost:8000", False),  # another scheme
    (b"http://localhost:8000", b"evil.example:8000", False),  # a Host not in ALLOWED_HOSTS
    (b"null", b"localhost:8000", False),  # a sandboxed frame or a file
    (b"http://localhost:8000/path", b"localhost:8000", False),  # not an origin at all
])
def test_the_origin_must_be_this_site_exactly(tworld: World, origin: bytes, host: bytes, ok: bool) -> None:
    accepted, _, _ = connect("/ws/overview/", headers_for(tworld.operator, (b"origin", origin), host))
    assert accepted is ok


def test_a_trusted_origin_is_accepted_behind_a_tls_proxy(tworld: World, settings: Any) -> None:
    """The proxy speaks https to the browser and ws to us: CSRF_TRUSTED_ORIGINS names its origin."""
    settings.CSRF_TRUSTED_ORIGINS = ["https://oversight.example"]
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "oversight.example"]
    accepted, _, _ = connect("/ws/overview/", headers_for(tworld.operator, (b"origin", b"https://oversight.example"),
                                                         b"oversight.example"))
    assert accepted is True
    refused, _, _ = connect("/ws/overview/", headers_for(tworld.operator, (b"origin", b"https://other.example"),
                                                        b"oversight.example"))
    assert refused is False


def test_operator_is_accepted_on_the_overview(tworld: World) -> None:
    accepted, _, first = connect("/ws/overview/", headers_for(tworld.operator))
    assert accepted is True
    assert first == {"type": "hello", "groups": [events.OVERVIEW_GROUP]}


@pytest.mark.parametrize("who", ["operator", "editor", "admin"])
def test_every_role_is_accepted_on_a_system_page(tworld: World, who: str) -> None:
    accepted, _, first = connect("/ws/systems/sup/", headers_for(getattr(tworld, who)))
    assert accepted is True
    assert first == {"type": "hello", "groups": [events.system_group("sup")]}


def test_unknown_system_is_refused_with_4404(tworld: World) -> None:
    accepted, code, _ = connect("/ws/systems/no-such-system/", headers_for(tworld.operator))
    assert (accepted, code) == (False, 4404)


def test_ping_is_answered(tworld: World) -> None:
    headers = headers_for(tworld.operator)

    async def run() -> dict[str, Any]:
        comm = WebsocketCommunicator(application, "/ws/overview/", headers=headers)
        accepted, _ = await comm.connect(timeout=TIMEOUT)
        assert accepted
        await comm.receive_json_from(timeout=TIMEOUT)
        await comm.send_json_to({"type": "ping"})
        reply = await comm.receive_json_from(timeout=TIMEOUT)
        await comm.disconnect()
        return reply

    assert async_to_sync(run)() == {"type": "pong"}


async def _next_of_type(comm: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    """The next message of this type (other pushes, e.g. queue depths, may come first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        left = deadline - loop.time()
        assert left > 0, f"no {kind!r} message within {TIMEOUT} s"
        message = await comm.receive_json_from(timeout=left)
        if message.get("type") == kind:
            return message


def test_kill_switch_flip_is_pushed_to_overview_and_system_pages(tworld: World) -> None:
    overview_headers = headers_for(tworld.operator)
    system_headers = headers_for(tworld.editor)

    async def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        overview = WebsocketCommunicator(application, "/ws/overview/", headers=overview_headers)
        crit_page = WebsocketCommunicator(application, "/ws/systems/crit/", headers=system_headers)
        sup_page = WebsocketCommunicator(application, "/ws/systems/sup/", headers=system_headers)
        for comm in (overview, crit_page, sup_page):
            accepted, _ = await comm.connect(timeout=TIMEOUT)
            assert accepted
            assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
        set_killswitch = database_sync_to_async(actions.set_killswitch)
        await set_killswitch(tworld.admin, "system", True, "bad model release", "crit")
        engaged_overview = await _next_of_type(overview, "killswitch")
        engaged_system = await _next_of_type(crit_page, "killswitch")
        await set_killswitch(tworld.admin, "global", True, "incident 42")
        global_overview = await _next_of_type(overview, "killswitch")
        await database_sync_to_async(release_switch)(tworld.admin, "system", "crit")
        released_overview = await _next_of_type(overview, "killswitch")
        released_system = await _next_of_type(crit_page, "killswitch")
        # The other system's page hears nothing of crit's switch.
        assert await sup_page.receive_nothing(timeout=0.3)
        for comm in (overview, crit_page, sup_page):
            await comm.disconnect()
        return engaged_overview, engaged_system, global_overview, released_overview, released_system

    engaged, engaged_sys, glob, released, released_sys = async_to_sync(run)()
    assert engaged["scope"] == "system"
    assert engaged["system"] == "crit"
    assert engaged["engaged"] is True
    assert engaged["reason"] == "bad model release"
    assert engaged["by"] == "admin"
    assert engaged_sys == engaged
    assert glob["scope"] == "global"
    assert glob["system"] is None
    assert glob["engaged"] is True
    assert glob["reason"] == "incident 42"
    assert released["engaged"] is False
    assert released["system"] == "crit"
    assert released_sys == released


def test_an_idle_page_keeps_its_socket_and_still_gets_the_next_push(tworld: World) -> None:
    """A page left open with nothing happening for longer than the channel layer's blocking read
    (5 s) keeps its WebSocket and receives the next push on it. redis-py 8 reads with a 5 s
    ``socket_timeout`` by default, which ended channels-redis's 5 s blocking pop with an error and
    closed every idle page's socket (1011) every 5 s; the layer's connections now read for longer."""
    headers = headers_for(tworld.operator)

    async def run() -> dict[str, Any]:
        comm = WebsocketCommunicator(application, "/ws/overview/", headers=headers)
        accepted, _ = await comm.connect(timeout=TIMEOUT)
        assert accepted
        assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
        await asyncio.sleep(7)  # idle past one whole blocking pop and its old 5 s read timeout
        flip = database_sync_to_async(actions.set_killswitch)
        await flip(tworld.admin, "system", True, "after a quiet spell", "crit")
        pushed = await _next_of_type(comm, "killswitch")
        await comm.disconnect()
        return pushed

    pushed = async_to_sync(run)()
    assert (pushed["system"], pushed["engaged"], pushed["reason"]) == ("crit", True, "after a quiet spell")


def test_a_refused_flip_pushes_nothing(tworld: World) -> None:
    """Events go out on commit only: an action that fails leaves the live pages untouched."""
    headers = headers_for(tworld.operator)

    async def run() -> tuple[str, bool]:
        comm = WebsocketCommunicator(application, "/ws/overview/", headers=headers)
        accepted, _ = await comm.connect(timeout=TIMEOUT)
        assert accepted
        await comm.receive_json_from(timeout=TIMEOUT)
        try:
            await database_sync_to_async(actions.set_killswitch)(tworld.admin, "system", True, "   ", "crit")
        except actions.ActionError as exc:
            error = exc.code
        else:
            error = "none"
        quiet = await comm.receive_nothing(timeout=0.5)
        await comm.disconnect()
        return error, quiet

    error, quiet = async_to_sync(run)()
    assert error == "invalid"
    assert quiet is True


class RestartableProxy:
    """A TCP proxy to the real Redis whose ``restart`` drops every open connection, as a Redis
    restart does to the clients' pooled connections (new connections work again at once)."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket
        import threading

        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.pairs: list[tuple[Any, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def restart(self) -> None:
        import socket

        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.restart()
        self.sock.close()


def test_handshakes_survive_a_redis_restart(tworld: World, settings: Any) -> None:
    """After Redis restarts, the layer's pooled connections are dead: the next handshake still
    succeeds (the consumer tries the layer again on a fresh connection) instead of failing."""
    from urllib.parse import urlsplit

    from channels.layers import channel_layers

    real = urlsplit(settings.REDIS_URL)
    proxy = RestartableProxy((real.hostname or "127.0.0.1", real.port or 6379))
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {
        **layer["CONFIG"], "hosts": [{**layer["CONFIG"]["hosts"][0],
                                      "address": f"redis://127.0.0.1:{proxy.port}{real.path or '/0'}"}]}}}
    channel_layers.backends.clear()
    headers = headers_for(tworld.operator)

    async def three_handshakes() -> list[Any]:
        # One event loop, as one web process serves them: the layer keeps its connections between them.
        seen = []
        for _ in range(3):
            comm = WebsocketCommunicator(application, "/ws/overview/", headers=headers)
            accepted, _ = await comm.connect(timeout=TIMEOUT)
            seen.append((accepted, (await comm.receive_json_from(timeout=TIMEOUT))["type"] if accepted else None))
            if accepted:
                await comm.disconnect()
            await asyncio.get_running_loop().run_in_executor(None, proxy.restart)
        return seen

    try:
        assert async_to_sync(three_handshakes)() == [(True, "hello")] * 3
    finally:
        channel_layers.backends.clear()
        proxy.close()
