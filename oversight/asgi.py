"""ASGI entry point: Django's HTTP handler on a pool of kept threads, Channels for WebSockets.

Every view and middleware of this project is sync. Under Django's ``ASGIHandler`` each request
would hop between the event loop and a new thread for the middleware chain, back to the loop, and
to the thread again for the view: on the 2-core bench machine that doubled the CPU a request
costs (3.3-3.5 ms against 1.5 ms for a bare view, ``make bench``). a2wsgi runs Django's WSGI
handler on a pool of kept threads instead, one hop per request, as a threaded WSGI server would;
uvicorn still serves HTTP and Channels the WebSockets (session-authenticated, same origin).
The request body is read on the event loop before the thread starts (``oversight.wsgibridge``).
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

django_app = get_wsgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from dashboards.routing import websocket_urlpatterns  # noqa: E402
from oversight.wsgibridge import BodyFirstWSGIMiddleware  # noqa: E402
from oversight.wsorigin import SameOriginValidator  # noqa: E402

http_app = BodyFirstWSGIMiddleware(django_app, workers=settings.WEB_THREADS)  # type: ignore[arg-type]
http: object = http_app
if settings.BENCH_BASELINE:  # `make bench` measures the body read on the loop against a2wsgi's own
    from oversight.benchviews import body_switch

    http = body_switch(http_app, django_app)

application = ProtocolTypeRouter(
    {
        "http": http,
        # Only this site's own pages (scheme, host and port: oversight.wsorigin), then the session.
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Load the URL configuration now, then move everything loaded so far out of the garbage
# collector's reach: full collections over ~150k long-lived objects took 60-90 ms and were the
# decision endpoint's p99 (measured by `make bench`).
get_resolver().url_patterns  # noqa: B018
gc.collect()
gc.freeze()
