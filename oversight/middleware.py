"""The API's own request rules, run before any view: answers in API.md's JSON, never HTML."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from oversight import jsonutil
from oversight.jsonapi import error_body

API_PREFIX = "/api/"
# The API and /metrics answer 401 themselves: they take keys and tokens, not only sessions.
OWN_AUTH_PREFIXES = (API_PREFIX, "/metrics")


def _json(status: int, code: str, message: str) -> HttpResponse:
    return HttpResponse(jsonutil.dumps(error_body(code, message)), status=status, content_type="application/json")


class PagesLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Django's ``LoginRequiredMiddleware`` for pages: the API and /metrics authenticate themselves.

    Public pages (login, health checks) are marked with ``login_not_required`` as Django intends.
    """

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., HttpResponseBase], view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        if request.path_info.startswith(OWN_AUTH_PREFIXES):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)


class ApiRequestMiddleware:
    """Under /api/: a body must say its length (411), and the URL resolver's and method checks'
    HTML 404/405 answers become API.md JSON errors. (The size limit itself is Django's
    ``DATA_UPLOAD_MAX_MEMORY_SIZE``: a larger body gets a 413 from the API.)
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        if (
            request.method in ("POST", "PUT", "PATCH")
            and not request.META.get("CONTENT_LENGTH")
            and request.META.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        ):
            return _json(411, "length_required", "send the Content-Length header (chunked bodies are not accepted)")
        response = self.get_response(request)
        if response.status_code in (404, 405) and not response.get("Content-Type", "").startswith("application/json"):
            if response.status_code == 404:
                return _json(404, "not_found", f"no API endpoint at {request.path}; see /api/v1/docs")
            allowed = response.get("Allow", "")
            json_response = _json(405, "method_not_allowed",
                                  f"{request.method} is not allowed here" + (f"; use {allowed}" if allowed else ""))
            if allowed:
                json_response["Allow"] = allowed
            return json_response
        return response



def server_error(request: HttpRequest) -> HttpResponse:
    """Django's 500 handler (``handler500``), wherever the error arose (a view or a middleware, like
    the session's first query): a database that is away or stuck is a 503 with Retry-After and a
    sentence, as the API answers it; anything else stays a plain 500."""
    import sys

    from django.db import InterfaceError, OperationalError

    error = sys.exc_info()[1]
    if isinstance(error, OperationalError | InterfaceError):
        if request.path_info.startswith(OWN_AUTH_PREFIXES):
            response = _json(503, "unavailable", "the database cannot be reached; retry shortly")
        else:
            response = HttpResponse(
                "<!doctype html><title>Unavailable · Oversight</title><h1>Oversight is unavailable</h1>"
                "<p>The database cannot be reached. This page works again once it can: try again in a few "
                "seconds.</p>", status=503, content_type="text/html; charset=utf-8")
        response["Retry-After"] = "5"
        return response
    if request.path_info.startswith(OWN_AUTH_PREFIXES):
        return _json(500, "server_error", "something went wrong on our side; it has been logged")
    return HttpResponse("<!doctype html><title>Error · Oversight</title><h1>Something went wrong</h1>"
                        "<p>It has been logged.</p>", status=500, content_type="text/html; charset=utf-8")
