"""Which pages may open a WebSocket: this site's own, exactly (scheme, host and port).

Channels' ``AllowedHostsOriginValidator`` compares the Origin's host with ``ALLOWED_HOSTS`` and
ignores the port, so a page served by anything else on the same host (``http://localhost:9999``)
could open a session-authenticated socket. Here the Origin must equal the origin the browser used
to reach this server — the request's scheme and its ``Host`` header, which itself must be an
allowed host — or be listed in ``CSRF_TRUSTED_ORIGINS`` (a TLS proxy in front: ``https://…``), the
same rule Django's CSRF check applies to forms.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

_HTTP = {"ws": "http", "wss": "https"}


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            try:
                return str(value.decode("latin1"))
            except UnicodeDecodeError:
                return None
    return None


def _canonical(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case with the default port left out; None if malformed."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    default = 80 if parts.scheme == "http" else 443
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def allowed(scope: dict[str, Any]) -> bool:
    origin = _header(scope, b"origin")
    host = _header(scope, b"host")
    if not origin or not host:
        return False
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    wanted = _canonical(origin)
    if wanted is None:
        return False
    own = _canonical(f"{_HTTP.get(scope.get('scheme', 'ws'), 'http')}://{host}")
    trusted = {_canonical(o) for o in settings.CSRF_TRUSTED_ORIGINS}
    return wanted == own or wanted in trusted


class SameOriginValidator:
    """ASGI middleware for the WebSocket router: a socket from another origin is refused (403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
