"""ASGI entry point: Django for HTTP, Channels for WebSockets (session-authenticated)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402
from django.core import signals  # noqa: E402
from django.db import close_old_connections, reset_queries  # noqa: E402

# Under an ASGI server a request's sync code runs on a thread of its own (oversight.requestthreads),
# whose database connections were closed when its previous request finished (CONN_MAX_AGE = 0):
# when a request starts there is nothing to close and no query log to reset. Sent anyway, these
# two sync receivers made every request hop to a thread and back before any view ran (~0.5 ms on
# the 2-core bench machine), and the decision endpoint needs no thread until its request ends.
# ``request_finished`` still closes what a request opened.
signals.request_started.disconnect(close_old_connections)
if not settings.DEBUG:  # with DEBUG on, a kept thread's query log is still emptied per request
    signals.request_started.disconnect(reset_queries)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from dashboards.routing import websocket_urlpatterns  # noqa: E402
from oversight.aio import EarlyEpochRead  # noqa: E402
from oversight.requestthreads import KeptThreads  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": KeptThreads(EarlyEpochRead(django_asgi_app)),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Load the URL configuration now, then move everything loaded so far out of the garbage
# collector's reach: full collections over ~150k long-lived objects took 60-90 ms and were the
# decision endpoint's p99 (measured by `make bench`).
import gc  # noqa: E402

from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018
gc.collect()
gc.freeze()
