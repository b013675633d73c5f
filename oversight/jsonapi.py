"""The JSON API's machinery: one NinjaAPI with its parser, renderer, errors and authentication.

Endpoints live in ``oversight/api.py`` (decisions, systems, kill switches) and the apps' own
``api.py`` modules; each authenticates with ``auth``, asks ``oversight.access`` what the caller
may do, and calls one domain action. Every error is API.md's JSON: ``{"error": {code, message, field}}``.
"""

from __future__ import annotations

import json
import logging
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.renderers import BaseRenderer
from ninja.responses import NinjaJSONEncoder
from ninja.security.base import AuthBase
from ninja.utils import check_csrf

from oversight import access, config, jsonutil
from oversight.errors import ActionError

log = logging.getLogger(__name__)


# --- errors -------------------------------------------------------------------------------


class ApiError(HttpError):
    """An error answer with API.md's code and field (for rules that only the API has)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(status, message)
        self.code = code
        self.message = message
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "payload", "query", "path")]
    return ".".join(parts)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    first = errors[0]
    field = _loc_to_field(first.get("loc", ())) or None
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        msg = "this field is required"
    text = f"{field}: {msg}" if field else msg
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text, field


MAX_JSON_DEPTH = 64  # objects/arrays inside each other; deeper bodies could not be stored or serialised


def _deeper_than(value: Any, remaining: int) -> bool:
    if type(value) is dict:
        children: Any = value.values()
    elif type(value) is list:
        children = value
    else:
        return False
    if remaining < 0:
        return True
    for child in children:
        kind = type(child)
        if (kind is dict or kind is list) and _deeper_than(child, remaining - 1):
            return True
    return False


def json_depth_over(value: Any, limit: int) -> bool:
    """True when ``value`` nests objects/arrays more than ``limit`` levels deep (parsed JSON only)."""
    return _deeper_than(value, limit - 1)


def _require_json(request: HttpRequest) -> None:
    """A body the API parses is declared JSON (``application/json`` or ``application/…+json``), in UTF-8."""
    media = (request.content_type or "").lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        shown = media or "none"
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as JSON with Content-Type: application/json (this request said {shown})")
    charset = (request.content_params or {}).get("charset", "utf-8").lower().replace("_", "-")
    if charset not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", f"the body must be UTF-8 encoded JSON (this request said "
                                                      f"charset={charset[:20]})")


class StrictJSONParser(Parser):
    """JSON without NaN, Infinity, numbers too large for a float, or nesting deeper than MAX_JSON_DEPTH."""

    def parse_body(self, request: HttpRequest) -> Any:
        _require_json(request)
        try:
            body = request.body
            try:
                value = jsonutil.loads(body)  # fast, and refuses NaN, Infinity and overflowing numbers itself
            except ValueError:
                # Says exactly what is wrong (or accepts what orjson will not); decoded first, as
                # json.loads would otherwise guess UTF-16 or UTF-32 from the bytes.
                value = jsonutil.strict_loads(body.decode("utf-8"))
            # Only a body with enough brackets can be too deep: skip the walk for ordinary ones.
            if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_depth_over(value, MAX_JSON_DEPTH):
                raise ApiError(
                    400, "invalid_json", f"the request body is nested too deeply (more than {MAX_JSON_DEPTH} levels)"
                )
            request._json_body = value  # type: ignore[attr-defined]  # what the client sent, for idempotency
            return value
        except RequestDataTooBig:
            raise
        except UnicodeDecodeError as exc:
            raise ApiError(400, "invalid_json", "the request body must be UTF-8 encoded JSON") from exc
        except json.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from exc
        except ValueError as exc:
            raise ApiError(400, "invalid_json", str(exc)) from exc
        except RecursionError as exc:
            raise ApiError(
                400, "invalid_json", f"the request body is nested too deeply (more than {MAX_JSON_DEPTH} levels)"
            ) from exc


class JSONRenderer(BaseRenderer):
    """The API's one JSON renderer: orjson through ``oversight.jsonutil``, times as Django writes them."""

    media_type = "application/json"
    _default = NinjaJSONEncoder().default

    def render(self, request: HttpRequest | None, data: Any, *, response_status: int) -> bytes:
        return jsonutil.dumps(data, default=self._default)


def docs_access(view: Any) -> Any:
    """The API's document (``/api/v1/openapi.json``) and its browser (``/api/v1/docs``): for anyone
    who may call the API — a client service's key, a person's token, or a logged-in person with a
    role. Anonymous people are sent to log in (the JSON document answers 401), a person with no role
    gets 403, as on every other page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        wants_json = request.path.endswith(".json")
        try:
            who = auth(request)
        except (ApiError, ActionError) as exc:
            status = exc.status_code if isinstance(exc, ApiError) else exc.status
            return json_response(error_body(exc.code, exc.message), status)
        if who is None:
            if wants_json:
                return json_response(error_body("unauthenticated", "log in, or send 'Authorization: Bearer <key>' "
                                                "or 'Authorization: Token <token>'"), 401)
            return redirect_to_login(request.get_full_path())
        if not who.is_client and not who.roles:
            message = "your account has no role yet; ask an admin for one"
            if wants_json:
                return json_response(error_body("forbidden", message), 403)
            return render(request, "403.html", {"needed": "operator, editor or admin"}, status=403)
        return view(request, *args, **kwargs)

    return wrapper


api = NinjaAPI(
    title="Oversight API",
    version="1",
    description="Human-in-the-loop control plane for AI decisions. See API.md for the contract.",
    parser=StrictJSONParser(),
    renderer=JSONRenderer(),
    urls_namespace="api",
    docs_decorator=docs_access,
)


def json_response(body: Any, status: int = 200) -> HttpResponse:
    """An answer whose shape the endpoint built itself, through the API's renderer (no re-validation)."""
    return HttpResponse(JSONRenderer().render(None, body, response_status=status), status=status,
                        content_type="application/json")


def _json_error(request: HttpRequest, status: int, code: str, message: str, field: str | None = None) -> HttpResponse:
    return api.create_response(request, error_body(code, message, field), status=status)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return _json_error(request, exc.status_code, exc.code, exc.message, exc.field)


@api.exception_handler(ActionError)
def _action_error(request: HttpRequest, exc: ActionError) -> HttpResponse:
    return _json_error(request, exc.status, exc.code, exc.message, exc.field)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _json_error(
        request, 401, "unauthenticated",
        "authentication required: send 'Authorization: Bearer <api key>' (client service), "
        "'Authorization: Token <personal token>', or log in",
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    cause = exc.__cause__
    if isinstance(cause, ApiError):
        return _api_error(request, cause)
    if isinstance(cause, RequestDataTooBig):
        return _too_big(request, cause)
    code = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "error"
    )
    message = str(exc)
    if exc.status_code == 403 and "CSRF" in message:
        message = CSRF_MESSAGE
    return _json_error(request, exc.status_code, code, message)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    message, field = validation_message(list(exc.errors))
    return _json_error(request, 422, "invalid", message, field)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _json_error(request, 404, "not_found", str(exc) or "not found")


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: Exception) -> HttpResponse:
    return _json_error(
        request, 413, "too_large", f"the request body is over the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"
    )


@api.exception_handler(OperationalError)
def _db_down(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.error("database unavailable: %s", exc)
    response = _json_error(request, 503, "unavailable", "the database cannot be reached; retry shortly")
    response["Retry-After"] = "5"
    return response


api.exception_handler(InterfaceError)(_db_down)


@api.exception_handler(DatabaseError)
def _db_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("database error")
    return _json_error(request, 500, "internal", "the server failed to store this request; it was not acknowledged")


# --- authentication -----------------------------------------------------------------------

CSRF_MESSAGE = "CSRF check failed: send the X-CSRFToken header with the csrftoken cookie's value"


class Auth(AuthBase):
    """Bearer API key, personal Token, or a session (CSRF-checked on unsafe methods)."""

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __call__(self, request: HttpRequest) -> access.Principal | None:
        header = request.headers.get("Authorization", "")
        if header:
            kind, _, secret = header.partition(" ")
            if kind.lower() == "bearer":
                # The whole request is in before the gate's configuration is read: a kill switch
                # confirmed before the client's last byte arrived stops this decision too.
                request.body  # noqa: B018
                return access.client(snapshot(request), secret.strip())
            if kind.lower() == "token":
                return access.person_by_token(secret.strip())
            raise ApiError(401, "unauthenticated", "the Authorization header must be 'Bearer <key>' or 'Token <token>'")
        who = access.person(getattr(request, "user", None))
        if who is not None and request.method not in ("GET", "HEAD", "OPTIONS") and check_csrf(request) is not None:
            raise ApiError(403, "csrf", CSRF_MESSAGE)
        return who


auth = Auth()


def principal(request: HttpRequest) -> access.Principal:
    return request.auth  # type: ignore[attr-defined]


def snapshot(request: HttpRequest) -> config.Snapshot:
    """The gate's configuration for this request: read once (one Redis GET), then kept on it."""
    snap: config.Snapshot | None = getattr(request, "_oversight_snapshot", None)
    if snap is None:
        snap = request._oversight_snapshot = config.cache.current()  # type: ignore[attr-defined]
    return snap


def require_person(request: HttpRequest, *wanted: str) -> access.Principal:
    return access.require_person(principal(request), *wanted)


def system_for(request: HttpRequest, slug: str, *, client_only: bool = False) -> config.SystemEntry:
    return access.system_for(principal(request), snapshot(request), slug, client_only=client_only)
