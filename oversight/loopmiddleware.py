"""Django's middleware, run on the event loop under an ASGI server.

Under ASGI, Django's ``MiddlewareMixin`` sends each middleware's ``process_request`` and
``process_response`` to a worker thread and back (``sync_to_async``), and a middleware that is
not async-capable at all (WhiteNoise's) makes the whole stack above it sync: every request,
the decision endpoint's included, would cross threads several times before and after its view.
The hooks of the middleware below are plain CPU work on the request and the response, so here
they run on the loop itself. The few steps that can touch the database or a file go to a thread,
as before:

- saving a session that was changed (login, logout),
- storing flash messages that were added or read (they may live in the session),
- serving a static file (opening it),
- the CSRF check of a form post (it may parse the form; a refusal renders a template from disk).

Under WSGI (and Django's test client) each class is the original, unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.middleware import clickjacking, common, csrf, security
from whitenoise import middleware as whitenoise

AsyncHandler = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class OnTheLoop:
    """For a ``MiddlewareMixin`` middleware whose hooks do no I/O: under ASGI they run on the loop.

    ``request_needs_thread``, ``view_needs_thread`` and ``response_needs_thread`` name the
    requests and responses whose hook may do I/O; those still go to a thread. ``process_view``
    (called by Django's handler, not by ``__acall__``) is made a coroutine too, or the handler
    would wrap it in ``sync_to_async``.
    """

    async_mode: bool
    get_response: AsyncHandler

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)  # type: ignore[call-arg]
        view_hook = getattr(self, "process_view", None)
        if self.async_mode and view_hook is not None:

            async def process_view(request: HttpRequest, view: Any, args: Any, kwargs: Any) -> HttpResponseBase | None:
                if self.view_needs_thread(request, view):
                    return await sync_to_async(view_hook, thread_sensitive=True)(request, view, args, kwargs)  # type: ignore[no-any-return]
                return view_hook(request, view, args, kwargs)  # type: ignore[no-any-return]

            self.process_view = process_view

    def request_needs_thread(self, request: HttpRequest) -> bool:
        return False

    def view_needs_thread(self, request: HttpRequest, view: Any) -> bool:
        return False

    def response_needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        return False

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        process_request = getattr(self, "process_request", None)
        if process_request is not None:
            if self.request_needs_thread(request):
                response = await sync_to_async(process_request, thread_sensitive=True)(request)
            else:
                response = process_request(request)
        response = response or await self.get_response(request)
        process_response = getattr(self, "process_response", None)
        if process_response is not None:
            if self.response_needs_thread(request, response):
                response = await sync_to_async(process_response, thread_sensitive=True)(request, response)
            else:
                response = process_response(request, response)
        return response  # type: ignore[no-any-return]


class SecurityMiddleware(OnTheLoop, security.SecurityMiddleware):
    pass


class CommonMiddleware(OnTheLoop, common.CommonMiddleware):
    pass


class CsrfViewMiddleware(OnTheLoop, csrf.CsrfViewMiddleware):
    """Reads the token from the cookie (``CSRF_USE_SESSIONS`` stays off). Checking an unsafe
    request may parse a form body (uploads spill to temporary files) and a refusal renders a
    template from disk: those go to a thread. Safe methods and exempt views (the API's own CSRF
    check, a client's decision) stay on the loop."""

    def __init__(self, get_response: Any) -> None:
        if settings.CSRF_USE_SESSIONS:  # pragma: no cover - a guard against a settings change
            raise ValueError("CSRF_USE_SESSIONS would load the session on the event loop")
        super().__init__(get_response)

    def view_needs_thread(self, request: HttpRequest, view: Any) -> bool:
        return request.method not in ("GET", "HEAD", "OPTIONS", "TRACE") and not getattr(view, "csrf_exempt", False)


class AuthenticationMiddleware(OnTheLoop, auth.AuthenticationMiddleware):
    """Sets the lazy ``request.user`` / ``request.auser``: nothing is loaded until a view asks."""


class XFrameOptionsMiddleware(OnTheLoop, clickjacking.XFrameOptionsMiddleware):
    pass


class SessionMiddleware(OnTheLoop, sessions.SessionMiddleware):
    """The session is loaded lazily by whoever reads it; only saving a changed one needs a thread."""

    def response_needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class MessageMiddleware(OnTheLoop, messages.MessageMiddleware):
    """Messages that were neither added nor read are not stored, so nothing is written."""

    def response_needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class WhiteNoiseMiddleware(whitenoise.WhiteNoiseMiddleware):
    """WhiteNoise is sync-only; here the lookup runs on the loop and serving a file in a thread."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, settings: Any = settings) -> None:
        super().__init__(get_response, settings)
        self.async_mode = get_response is not None and iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)  # as MiddlewareMixin does: Django then awaits it

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)  # DEBUG: looks on disk
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)  # type: ignore[no-any-return]
        return await self.get_response(request)

