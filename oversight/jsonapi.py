"""The JSON API's machinery: one NinjaAPI with its parser, renderer, errors and authentication.

Endpoints live in ``oversight/api.py`` (decisions, systems, kill switches) and the apps' own
``api.py`` modules; each authenticates with ``auth``, asks ``oversight.access`` what the caller
may do, and calls one domain action. Every error is API.md's JSON: ``{"error": {code, message, field}}``.

Over ~400 lines on purpose: the parser, renderer, error handlers, authentication and the OpenAPI
document's error answers all configure the one NinjaAPI object and refer to each other.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
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


# --- the document -------------------------------------------------------------------------

#: The error answers, as the document describes them; every one has the body ``ErrorOut``.
ERROR_ANSWERS: dict[int, str] = {
    400: "Bad request: the body is not valid JSON (malformed, not UTF-8, NaN or Infinity, a number too "
         "large, nested more than 64 levels deep). Code `invalid_json`.",
    401: "Unauthenticated: no credentials, a key or token that is unknown or revoked, or an "
         "`Authorization` header that is neither `Bearer <key>` nor `Token <token>`. Code `unauthenticated`.",
    403: "Forbidden: the caller may not do this — a client service's key on a person's endpoint, a "
         "person on a client service's, a role that does not allow it (code `forbidden`), or a "
         "session's unsafe request without the CSRF header (code `csrf`).",
    404: "Not found: the object named in the path, body or query does not exist, or belongs to another "
         "system than the key's (the two look the same). Code `not_found`.",
    409: "Conflict: the object's state does not allow this now (already claimed, resolved, removed or "
         "running; an idempotency key reused with a different body; a name already taken). The message "
         "says why.",
    413: "Payload too large: the body is over the server's limit (`DATA_UPLOAD_MAX_MEMORY_SIZE`). "
         "Code `too_large`.",
    415: "Unsupported media type: the body is not declared as this operation takes it (JSON: "
         "`Content-Type: application/json`, UTF-8). Code `unsupported_media_type`.",
    422: "Invalid: a field of the body or a query parameter has a wrong type or value; `field` names it "
         "(`a.b.0.c` inside objects and arrays). Codes `invalid`, `batch_too_large`.",
    503: "Unavailable: the database (or the job store) cannot be reached; nothing was done. Retry after "
         "`Retry-After` seconds. Code `unavailable`.",
}
ERROR_REF = "#/components/schemas/ErrorOut"
UNSAFE = ("post", "put", "patch", "delete")


class OversightAPI(NinjaAPI):
    """The NinjaAPI whose document says every answer an operation gives (``document_answers``)."""

    def get_openapi_schema(self, *, path_prefix: str | None = None,
                           path_params: dict[str, Any] | None = None) -> Any:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        document_answers(schema)
        return schema


def _error_schemas() -> dict[str, Any]:
    from oversight.schemas import ErrorOut

    found = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = found.pop("$defs", {})
    return {**defs, "ErrorOut": found}


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _json_schema_bounds(node: Any) -> None:
    """Pydantic leaves a number's bounds under its own names (``ge``, ``le``) when a validator wraps
    the type (``Annotated[float, NotBool, Field(ge=0, le=1)]``); JSON Schema, and so every client and
    tool, knows them as ``minimum`` and ``maximum``."""
    if isinstance(node, dict):
        if node.get("type") in ("number", "integer"):
            for ours, theirs in _BOUNDS.items():
                if ours in node and theirs not in node:
                    node[theirs] = node.pop(ours)
        for value in node.values():
            _json_schema_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _json_schema_bounds(value)


def document_answers(schema: dict[str, Any]) -> None:
    """Adds to every operation of the generated document the error answers it can give, each with
    the ``ErrorOut`` body: 401, 403 and 503 everywhere; 404 where the path names an object; 400 (a
    JSON body), 413, 415 and 422 where there is a body; 422 where there are query parameters. An
    operation declares others itself (409 where a conflict is possible, 404 where its body or query
    names an object) in its ``response=`` mapping. Unsafe methods with a session need the CSRF header
    too, so their session requirement is ``Session`` and ``CSRF`` together."""
    _json_schema_bounds(schema)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, definition in _error_schemas().items():
        schemas.setdefault(name, definition)
    schemes = components.setdefault("securitySchemes", {})
    for path_item in schema.get("paths", {}).values():
        for method, op in path_item.items():
            responses: dict[Any, Any] = op.setdefault("responses", {})
            params = {p.get("in") for p in op.get("parameters", [])}
            body = op.get("requestBody")
            codes = {401, 403, 503} | {int(c) for c in responses if int(c) >= 400}
            if "path" in params:
                codes.add(404)
            if body is not None:
                codes |= {413, 415, 422}
                if "application/json" in body.get("content", {}):
                    codes.add(400)
            if "query" in params:
                codes.add(422)
            for code in codes:
                answer = responses.pop(code, None) or responses.pop(str(code), None) or {}
                responses[code] = {**answer, "description": ERROR_ANSWERS.get(code, answer.get("description", "")),
                                   "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}
                if code == 503:
                    responses[code]["headers"] = {"Retry-After": {
                        "description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
            op["responses"] = dict(sorted(responses.items(), key=lambda kv: int(kv[0])))
            if method in UNSAFE and op.get("security"):
                op["security"] = [
                    {**requirement, "CSRF": []} if "Session" in requirement else requirement
                    for requirement in op["security"]
                ]
                schemes["CSRF"] = CSRF_SCHEME


api = OversightAPI(
    title="Oversight API",
    version="1",
    description=(
        "Human-in-the-loop control plane for AI decisions. See API.md for the contract.\n\n"
        "**Who calls what.** Client services send their system's API key (`Authorization: Bearer <key>`, "
        "scheme `ApiKey`): they submit decisions and outcomes and read their own system. People send a "
        "personal token (`Authorization: Token <token>`, scheme `PersonalToken`) or use their browser "
        "session (scheme `Session`; POST, PUT, PATCH and DELETE also need the `X-CSRFToken` header, "
        "scheme `CSRF`); what they may do follows their role (operator, editor, admin). Each operation "
        "lists the schemes it accepts; another credential is refused with 403.\n\n"
        "**Errors.** Every error is `{\"error\": {\"code\", \"message\", \"field\"}}` (`ErrorOut`), "
        "and each operation lists the statuses it can answer with."
    ),
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
    """Bearer API key, personal Token, or a session (CSRF-checked on unsafe methods).

    The one way the API authenticates. Operations name the credentials they accept with the schemes
    below (``CLIENT``, ``PEOPLE``, ``ANYONE``), which all run this: a credential an operation does
    not take is authenticated all the same and then refused by its rule (403), not taken for none (401).
    """

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __call__(self, request: HttpRequest, held: bool = False) -> access.Principal | None:
        """``held``: a key is looked up in the configuration this process holds, with no round trip
        (only for the decision endpoint, whose INSERT checks the epoch; ``DECIDING``); a key it does
        not know is looked up again on the configuration in PostgreSQL before the 401."""
        header = request.headers.get("Authorization", "")
        if header:
            kind, _, secret = header.partition(" ")
            if kind.lower() == "bearer":
                # The whole request is in before the gate's configuration is read: a kill switch
                # confirmed before the client's last byte arrived stops this decision too.
                request.body  # noqa: B018
                request._oversight_key = secret = secret.strip()  # type: ignore[attr-defined]
                if held:
                    try:
                        return access.client(held_snapshot(request), secret)
                    except ActionError:
                        if getattr(request, "_oversight_checked", False):
                            raise
                        return access.client(refresh(request), secret)  # a key newer than the held snapshot
                return access.client(snapshot(request), secret)
            if kind.lower() == "token":
                return access.person_by_token(secret.strip())
            raise ApiError(401, "unauthenticated", "the Authorization header must be 'Bearer <key>' or 'Token <token>'")
        who = access.person(getattr(request, "user", None))
        if who is not None and request.method not in ("GET", "HEAD", "OPTIONS") and check_csrf(request) is not None:
            raise ApiError(403, "csrf", CSRF_MESSAGE)
        return who


auth = Auth()


class _Scheme(AuthBase):
    """One credential as the document names it; authenticating is ``auth``'s, done once per request."""

    def __init__(self, held: bool = False) -> None:
        self.held = held  # see Auth.__call__
        super().__init__()

    def __call__(self, request: HttpRequest) -> access.Principal | None:
        if getattr(request, "_oversight_authenticated", False):
            return None  # an earlier scheme of the operation's list found no credentials: neither will this
        request._oversight_authenticated = True  # type: ignore[attr-defined]
        return auth(request, self.held)


class ApiKey(_Scheme):
    openapi_type = "http"
    openapi_scheme = "bearer"
    openapi_description = ("A client service's API key: `Authorization: Bearer <key>`. A key belongs to one "
                           "AI system and reaches only that system.")


class PersonalToken(_Scheme):
    openapi_type = "apiKey"
    openapi_in = "header"
    openapi_name = "Authorization"
    openapi_description = ("A person's personal token, with the word Token: `Authorization: Token <token>`. "
                           "It carries that person's role; no CSRF header is needed.")


class Session(_Scheme):
    openapi_type = "apiKey"
    openapi_in = "cookie"
    openapi_name = settings.SESSION_COOKIE_NAME
    openapi_description = ("A logged-in person's browser session (the pages' login). POST, PUT, PATCH and "
                           "DELETE also need the CSRF header (scheme `CSRF`).")


CSRF_SCHEME = {
    "type": "apiKey", "in": "header", "name": "X-CSRFToken",
    "description": f"With a session, unsafe methods send the `{settings.CSRF_COOKIE_NAME}` cookie's value in "
                   "this header (Django's CSRF protection).",
}

#: Who an operation is for: client services only, people only (token or session), or both.
CLIENT: list[AuthBase] = [ApiKey()]
DECIDING: list[AuthBase] = [ApiKey(held=True)]  # POST …/decisions only: its INSERT checks the epoch
PEOPLE: list[AuthBase] = [PersonalToken(), Session()]
ANYONE: list[AuthBase] = [ApiKey(), PersonalToken(), Session()]


def principal(request: HttpRequest) -> access.Principal:
    return request.auth  # type: ignore[attr-defined]


def snapshot(request: HttpRequest) -> config.Snapshot:
    """The gate's configuration for this request, as of now: checked once (one Redis GET), then kept
    on it. A client's key, taken on the configuration this process held, is checked again on it."""
    snap: config.Snapshot | None = getattr(request, "_oversight_snapshot", None)
    if snap is not None and getattr(request, "_oversight_checked", False):
        return snap
    return _adopt(request, config.cache.current())


def held_snapshot(request: HttpRequest) -> config.Snapshot:
    """The configuration this process holds, not checked against the epoch (no round trip): for a
    decision, whose INSERT checks the epoch itself (``decisions.submit_one``'s ``as_of``), and for
    authentication, which asks ``snapshot`` again before it refuses."""
    snap: config.Snapshot | None = getattr(request, "_oversight_snapshot", None)
    if snap is None:
        snap = request._oversight_snapshot = config.cache.held()  # type: ignore[attr-defined]
    return snap


def refresh(request: HttpRequest) -> config.Snapshot:
    """After a decision found the held configuration outdated, or before a refusal made on it: the
    one in PostgreSQL now (not Redis's copy, which may lag a failed raise by up to a second), the
    client's key checked against it again (401 if it was revoked meanwhile)."""
    return _adopt(request, config.cache.from_database())


def _adopt(request: HttpRequest, snap: config.Snapshot) -> config.Snapshot:
    before: config.Snapshot | None = getattr(request, "_oversight_snapshot", None)
    request._oversight_snapshot, request._oversight_checked = snap, True  # type: ignore[attr-defined]
    key: str | None = getattr(request, "_oversight_key", None)
    if before is not None and before.epoch != snap.epoch and key is not None:
        request.auth = access.client(snap, key)  # type: ignore[attr-defined]
    return snap


def require_person(request: HttpRequest, *wanted: str) -> access.Principal:
    return access.require_person(principal(request), *wanted)


def in_utc(value: datetime | None) -> datetime | None:
    """A time of a request body, in UTC (a pydantic ``AfterValidator``): PostgreSQL refuses offsets
    beyond ±15:59, which Python parses (``+20:39``)."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


_SERIAL = re.compile(r"[0-9]{1,18}")  # ASCII digits only (str.isdigit() also takes '³' and '٣', int() not all)


def numbered(value: str, prefix: str, what: str) -> str:
    """``value`` when it can name a row (``<prefix>_12`` or ``12``); anything else is unknown: the API's 404,
    before a domain rule turns it into a number."""
    if _SERIAL.fullmatch(value.removeprefix(f"{prefix}_")) is None:
        raise ApiError(404, "not_found", f"no {what} {value[:80]!r} (they look like {prefix}_12)")
    return value


def system_for(request: HttpRequest, slug: str, *, client_only: bool = False, held: bool = False) -> config.SystemEntry:
    """The system ``slug`` names, if the caller may use it (404/403 otherwise). ``held``: on the
    configuration this process holds (``held_snapshot``), for a decision; a refusal is then given
    only once the configuration in PostgreSQL agrees (the system may be newer than the snapshot)."""
    if held:
        try:
            return access.system_for(principal(request), held_snapshot(request), slug, client_only=client_only)
        except ActionError:
            if getattr(request, "_oversight_checked", False):
                raise
            snap = refresh(request)  # first: it may take the client's key again
            return access.system_for(principal(request), snap, slug, client_only=client_only)
    snap = snapshot(request)  # first: it may take the client's key again
    return access.system_for(principal(request), snap, slug, client_only=client_only)
