"""The JSON API (API.md): thin endpoints that authenticate, validate, call an action, answer."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Router
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.security.base import AuthBase
from ninja.utils import check_csrf
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from oversight import access, actions, aio, bulk, config, credentials, decisions
from oversight.models import AISystem, Decision, KillSwitch, PersonalToken
from oversight.schemas import (
    BatchIn,
    BatchOut,
    DecisionIn,
    DecisionOut,
    ErrorOut,
    KillSwitchIn,
    KillSwitchState,
    OutcomeIn,
    OutcomeOut,
    SystemIn,
    SystemOut,
    SystemPatch,
    raw_text_storable,
)

log = logging.getLogger(__name__)


# --- errors -------------------------------------------------------------------------------


class ApiError(HttpError):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(status, message)
        self.code = code
        self.message = message
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


ACTION_STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "forbidden": 403}


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
MAX_INT_DIGITS = 4000  # Python refuses to parse longer integers (sys.get_int_max_str_digits)


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


class StrictJSONParser(Parser):
    """JSON without NaN, Infinity, numbers too large for a float, or nesting deeper than MAX_JSON_DEPTH."""

    @staticmethod
    def _no_constant(name: str) -> float:
        raise ValueError(f"{name} is not a valid JSON number; send a finite number or null")

    @staticmethod
    def _finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"the number {text} is too large; send a finite number")
        return value

    @staticmethod
    def _int(text: str) -> int:
        if len(text) > MAX_INT_DIGITS:
            raise ValueError(f"an integer with {len(text)} digits is too large; send at most {MAX_INT_DIGITS} digits")
        return int(text)

    def _strict_loads(self, body: bytes) -> Any:
        return json.loads(body, parse_constant=self._no_constant, parse_float=self._finite, parse_int=self._int)

    def parse_body(self, request: HttpRequest) -> Any:
        try:
            body = request.body
            try:
                value = orjson.loads(body)  # fast, and refuses NaN, Infinity and overflowing numbers itself
            except orjson.JSONDecodeError:
                value = self._strict_loads(body)  # says exactly what is wrong (or accepts what orjson will not)
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


api = NinjaAPI(
    title="Oversight API",
    version="1",
    description="Human-in-the-loop control plane for AI decisions. See API.md for the contract.",
    parser=StrictJSONParser(),
    urls_namespace="api",
    docs_decorator=login_required,
)


def _json_error(request: HttpRequest, status: int, code: str, message: str, field: str | None = None) -> HttpResponse:
    return api.create_response(request, error_body(code, message, field), status=status)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return _json_error(request, exc.status_code, exc.code, exc.message, exc.field)


@api.exception_handler(actions.ActionError)
def _action_error(request: HttpRequest, exc: actions.ActionError) -> HttpResponse:
    return _json_error(request, ACTION_STATUS.get(exc.code, 400), exc.code, exc.message, exc.field)


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
        message = "CSRF check failed: send the X-CSRFToken header with the csrftoken cookie's value"
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
        request, 413, "too_large", f"the request body is over the limit of {settings.MAX_BODY_BYTES} bytes"
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


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a client service (bound to one system) or a person with roles."""

    system_id: int | None
    user: Any
    roles: frozenset[str]
    snapshot: config.Snapshot | None = None

    @property
    def is_client(self) -> bool:
        return self.system_id is not None


class Auth(AuthBase):
    """Bearer API key, personal Token, or a session (CSRF-checked on unsafe methods)."""

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __call__(self, request: HttpRequest) -> Principal | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")  # not request.headers: it copies every header
        if header:
            kind, _, secret = header.partition(" ")
            secret = secret.strip()
            if kind.lower() == "bearer":
                return client_principal(config.cache.current(), credentials.digest(secret))
            if kind.lower() == "token":
                token = (
                    PersonalToken.objects.select_related("user")
                    .filter(digest=credentials.digest(secret), revoked_at__isnull=True, user__is_active=True)
                    .first()
                )
                if token is None:
                    raise ApiError(401, "unauthenticated", "the personal token is not valid (mistyped or revoked)")
                return Principal(None, token.user, access.roles_of(token.user))
            raise ApiError(401, "unauthenticated", "the Authorization header must be 'Bearer <key>' or 'Token <token>'")
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        if request.method not in ("GET", "HEAD", "OPTIONS") and check_csrf(request) is not None:
            raise ApiError(
                403, "csrf", "CSRF check failed: send the X-CSRFToken header with the csrftoken cookie's value"
            )
        return Principal(None, user, access.roles_of(user))


def client_principal(snap: config.Snapshot, digest: str) -> Principal:
    system_id = snap.key_systems.get(digest)
    if system_id is None:
        raise ApiError(401, "unauthenticated", "the API key is not valid (mistyped, revoked or unknown)")
    return Principal(system_id, None, frozenset(), snap)


class AsyncAuth(Auth):
    """``Auth`` for async endpoints: an API key is checked on the event loop, without a thread.

    Under an ASGI server (``aio.available``) the config epoch is read on the loop, with its own
    Redis client; tokens and sessions, which need the ORM, are checked on a thread as before.
    """

    async def __call__(self, request: HttpRequest) -> Principal | None:  # type: ignore[override]
        kind, _, secret = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if kind.lower() != "bearer":
            return await sync_to_async(self._person)(request)
        digest = credentials.digest(secret.strip())
        if aio.available(request):
            return client_principal(await config.cache.acurrent(aio.epoch_read(request)), digest)
        return client_principal(await sync_to_async(config.cache.current)(), digest)

    def _person(self, request: HttpRequest) -> Principal | None:
        who = Auth.__call__(self, request)
        return replace(who, snapshot=config.cache.current()) if who is not None else None


auth = Auth()
async_auth = AsyncAuth()


def principal(request: HttpRequest) -> Principal:
    return request.auth  # type: ignore[attr-defined,no-any-return]


def require_person(request: HttpRequest, *wanted: str) -> Principal:
    who = principal(request)
    if who.is_client:
        raise ApiError(403, "forbidden", "this endpoint is for people, not client services")
    if wanted and not who.roles & set(wanted):
        raise ApiError(403, "forbidden", f"this needs the {' or '.join(wanted)} role")
    if not who.roles:
        raise ApiError(403, "forbidden", "your account has no role yet; ask an admin for one")
    return who


def system_for(request: HttpRequest, slug: str, *, client_only: bool = False) -> config.SystemEntry:
    """The system named in the path, if the caller may act on it (a key reaches only its own)."""
    who = principal(request)
    snap = who.snapshot or config.cache.current()
    entry = snap.systems_by_slug.get(slug)
    if who.is_client:
        if entry is None or entry.id != who.system_id:
            # Same answer for "unknown" and "not yours": a key learns nothing about other systems.
            raise ApiError(404, "not_found", f"no system {slug!r} for this API key")
        return entry
    if client_only:
        raise ApiError(403, "forbidden", "only the system's client service (API key) can submit here")
    require_person(request)
    if entry is None:
        raise ApiError(404, "not_found", f"no system {slug!r}")
    return entry


# --- decisions (client service) -----------------------------------------------------------

client = Router(tags=["decisions"], auth=auth)


def json_response(body: Any, status: int = 200) -> HttpResponse:
    """Render an answer whose shape the endpoint built itself (skips re-validating it on the hot path)."""
    try:
        content = orjson.dumps(body, default=DjangoJSONEncoder().default)
    except TypeError:  # what orjson refuses (integers over 64 bits): the standard library
        content = json.dumps(body, cls=DjangoJSONEncoder, ensure_ascii=False).encode()
    return HttpResponse(content, status=status, content_type="application/json")


@client.post(
    "/systems/{system}/decisions", auth=async_auth, response={200: DecisionOut, 201: DecisionOut, 409: ErrorOut}
)
async def submit_decision(request: HttpRequest, system: str, payload: DecisionIn) -> HttpResponse:
    """The hot path: on the event loop under an ASGI server (see ``oversight.aio``)."""
    entry = system_for(request, system, client_only=True)
    raw = getattr(request, "_json_body", None)
    if not aio.available(request):
        result = await sync_to_async(decisions.submit_one)(entry, payload, raw)
    else:
        d, rows = decisions.prepare_one(entry, payload, raw)
        result = await decisions.astore_one(entry, d, rows)
    if result.error is not None:
        raise ApiError(409, "idempotency_conflict", str(result.error), "idempotency_key")
    assert result.decision is not None
    return json_response(decisions.public(result.decision, entry.slug), 200 if result.replayed else 201)


_DECISION_LIST = TypeAdapter(list[DecisionIn])


def _validate_items(
    items: list[Any], context: dict[str, Any] | None = None
) -> tuple[list[DecisionIn], list[Any], list[dict[str, Any] | None]]:
    """Validate a batch in one call; only when something is wrong, item by item to say which."""
    try:
        return _DECISION_LIST.validate_python(items, context=context), items, [None] * len(items)
    except PydanticValidationError:
        pass
    valid: list[DecisionIn] = []
    raws: list[Any] = []
    slots: list[dict[str, Any] | None] = []
    for i, raw in enumerate(items):
        try:
            valid.append(DecisionIn.model_validate(raw))
            raws.append(raw)
            slots.append(None)
        except PydanticValidationError as exc:
            message, field = validation_message(exc.errors())  # type: ignore[arg-type]
            slots.append(error_body("invalid", f"items[{i}]: {message}", field))
    return valid, raws, slots


@client.post("/systems/{system}/decisions/batch", response={200: BatchOut})
def submit_batch(request: HttpRequest, system: str, payload: BatchIn) -> HttpResponse:
    entry = system_for(request, system, client_only=True)
    if len(payload.items) > settings.MAX_BATCH_ITEMS:
        raise ApiError(
            422, "batch_too_large",
            f"a batch holds at most {settings.MAX_BATCH_ITEMS} items; this one has {len(payload.items)}: split it",
            "items",
        )
    checked = {"text_checked": True} if raw_text_storable(request.body) else None
    with bulk.gc_paused():  # the items, their rows and the answer stay alive together
        valid, raws, slots = _validate_items(payload.items, checked)
        submitted = iter(decisions.submit(entry, valid, raws) if valid else [])
        results: list[dict[str, Any]] = []
        for slot in slots:
            if slot is not None:
                results.append(slot)
                continue
            r = next(submitted)
            if r.error is not None:
                results.append(error_body("idempotency_conflict", str(r.error), "idempotency_key"))
            else:
                assert r.decision is not None
                body = decisions.public(r.decision, entry.slug)
                body["replayed"] = r.replayed
                results.append(body)
        return json_response({"results": results})


def _decision_for(request: HttpRequest, decision_id: str) -> tuple[Decision, str]:
    uid = decisions.parse_public_id(decision_id)
    if uid is None:
        raise ApiError(404, "not_found", f"{decision_id!r} is not a decision id (they look like dec_…)")
    who = principal(request)
    if not who.is_client:
        require_person(request)
    decision = Decision.objects.select_related("system").filter(id=uid).first()
    if decision is None or (who.is_client and decision.system_id != who.system_id):
        raise ApiError(404, "not_found", f"no decision {decision_id!r}")
    return decision, decision.system.slug


@client.get("/decisions/{decision_id}", response=DecisionOut)
def get_decision(request: HttpRequest, decision_id: str) -> dict[str, Any]:
    decision, slug = _decision_for(request, decision_id)
    return decisions.public(decision, slug)


@client.post("/decisions/{decision_id}/outcome", response={201: OutcomeOut})
def post_outcome(request: HttpRequest, decision_id: str, payload: OutcomeIn) -> tuple[int, dict[str, Any]]:
    if payload.label is None and payload.reward is None:
        raise ApiError(422, "invalid", "send a label or a reward (0.0–1.0)", "label")
    if not principal(request).is_client:
        raise ApiError(403, "forbidden", "outcomes come from the system's client service (API key)")
    decision, _ = _decision_for(request, decision_id)
    outcome = decisions.record_outcome(decision, payload)
    return 201, {
        "id": outcome.id,
        "decision": decision.public_id,
        "label": outcome.label,
        "reward": outcome.reward,
        "observed_at": outcome.observed_at,
    }


# --- systems and policies -----------------------------------------------------------------

systems = Router(tags=["systems"], auth=auth)


def _switch_state(k: KillSwitch) -> dict[str, Any]:
    return {
        "scope": k.scope,
        "system": k.system.slug if k.system else None,
        "model": k.model,
        "engaged": k.engaged,
        "reason": k.reason,
        "changed_by": k.changed_by.get_username() if k.changed_by else None,
        "changed_at": k.changed_at,
    }


def system_out(s: AISystem, switches: list[KillSwitch], global_switch: KillSwitch | None) -> dict[str, Any]:
    own = [k for k in switches if k.system_id == s.id]
    engaged = [k for k in ([global_switch] if global_switch else []) + own if k.engaged and k.scope != "model"]
    return {
        **s.policy_dict(),
        "policy_version": s.policy_version,
        "killed": bool(engaged),
        "kill_reason": engaged[0].reason if engaged else None,
        "killswitches": [_switch_state(k) for k in own],
    }


def _switches() -> tuple[list[KillSwitch], KillSwitch | None]:
    switches = list(KillSwitch.objects.select_related("system", "changed_by"))
    glob = next((k for k in switches if k.scope == "global"), None)
    return switches, glob


@systems.get("/systems", response=list[SystemOut])
def list_systems(request: HttpRequest) -> list[dict[str, Any]]:
    require_person(request)
    switches, glob = _switches()
    return [system_out(s, switches, glob) for s in AISystem.objects.all()]


@systems.get("/systems/{system}", response=SystemOut)
def get_system(request: HttpRequest, system: str) -> dict[str, Any]:
    entry = system_for(request, system)
    switches, glob = _switches()
    return system_out(AISystem.objects.get(id=entry.id), switches, glob)


@systems.post("/systems", response={201: SystemOut})
def create_system(request: HttpRequest, payload: SystemIn) -> tuple[int, dict[str, Any]]:
    who = require_person(request, access.ADMIN)
    created = actions.create_system(who.user, payload.model_dump())
    switches, glob = _switches()
    return 201, system_out(created, switches, glob)


@systems.patch("/systems/{system}", response=SystemOut)
def patch_system(request: HttpRequest, system: str, payload: SystemPatch) -> dict[str, Any]:
    who = require_person(request, access.ADMIN)
    changes = payload.model_dump(exclude_unset=True, exclude={"reason"})
    if "fallback" not in payload.model_fields_set:
        changes.pop("fallback", None)
    changes = {k: v for k, v in changes.items() if v is not None or k == "fallback"}
    updated = actions.update_system(who.user, system, changes, payload.reason)
    switches, glob = _switches()
    return system_out(updated, switches, glob)


@systems.get("/killswitches", response=list[KillSwitchState])
def list_killswitches(request: HttpRequest) -> list[dict[str, Any]]:
    require_person(request)
    return [_switch_state(k) for k in KillSwitch.objects.select_related("system", "changed_by")]


@systems.post("/killswitches", response=KillSwitchState)
def flip_killswitch(request: HttpRequest, payload: KillSwitchIn) -> dict[str, Any]:
    who = require_person(request, access.ADMIN)
    switch = actions.set_killswitch(
        who.user, payload.scope, payload.engaged, payload.reason, payload.system, payload.model
    )
    return _switch_state(KillSwitch.objects.select_related("system", "changed_by").get(pk=switch.pk))


api.add_router("", client)
api.add_router("", systems)
