"""Request guards that run before any view."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from oversight.loopmiddleware import OnTheLoop

# The API and /metrics answer 401 themselves (they take keys and tokens, not only sessions).
PUBLIC_PREFIXES = ("/login/", "/healthz", "/readyz", "/static/", "/api/", "/metrics", "/favicon.ico")


class BodySizeLimitMiddleware(OnTheLoop, MiddlewareMixin):
    """413 with a JSON error before reading a body that is announced as too large.

    (Under ASGI the server has read the body by now; this still answers before anything parses it.)
    """

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        length = request.META.get("CONTENT_LENGTH")
        if (
            not length
            and request.method in ("POST", "PUT", "PATCH")
            and request.path.startswith("/api/")
            and request.META.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        ):
            # Without a length the size limit cannot be checked before the body is read.
            return _json(411, "length_required", "send the Content-Length header (chunked bodies are not accepted)")
        if length:
            try:
                size = int(length)
            except ValueError:
                size = -1
            if size < 0:
                return _json(400, "bad_request", "the Content-Length header is not a number")
            if size > settings.MAX_BODY_BYTES:
                return _json(413, "too_large", f"the request body is over the limit of {settings.MAX_BODY_BYTES} bytes")
        return None


def _json(status: int, code: str, message: str) -> HttpResponse:
    body = json.dumps({"error": {"code": code, "message": message, "field": None}})
    return HttpResponse(body, status=status, content_type="application/json")


class LoginRequiredPagesMiddleware(OnTheLoop, MiddlewareMixin):
    """Every page needs a login except the login page and health checks (the API has its own auth)."""

    def request_needs_thread(self, request: HttpRequest) -> bool:
        return not request.path.startswith(PUBLIC_PREFIXES)  # loading the user reads the session

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if not request.path.startswith(PUBLIC_PREFIXES) and not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return None


class JsonApiErrorsMiddleware(OnTheLoop, MiddlewareMixin):
    """Under /api/, errors the URL resolver or a method check answer in HTML become API.md JSON errors."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            response.status_code in (404, 405)
            and request.path.startswith("/api/")
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            if response.status_code == 404:
                return _json(404, "not_found", f"no API endpoint at {request.path}; see /api/v1/docs")
            allowed = response.get("Allow", "")
            hint = f"; use {allowed}" if allowed else ""
            json_response = _json(405, "method_not_allowed", f"{request.method} is not allowed here{hint}")
            if allowed:
                json_response["Allow"] = allowed
            return json_response
        return response
