"""Monitoring endpoints (API.md, "Monitoring"): a system's drift reference.

``PUT /systems/{system}/reference`` takes the raw file as the body (CSV or JSON lines, by
``Content-Type`` or ``?format=``); ``POST …/reference/from-decisions`` uses a past window of the
system's decisions; ``GET …/reference`` shows the one in use. The rules are in
``dashboards/references.py``.
"""

from __future__ import annotations

from typing import Annotated

from django.http import HttpRequest, HttpResponse
from ninja import Router
from pydantic import AfterValidator, AwareDatetime, Field

from dashboards import references
from oversight import access
from oversight.jsonapi import ANYONE, PEOPLE, ApiError, in_utc, json_response, require_person, system_for
from oversight.models import AISystem
from oversight.schemas import In, ReferenceOut

router = Router(tags=["monitoring"], auth=PEOPLE)

#: Content types of an upload, and the format each one means.
UPLOAD_TYPES: dict[str, references.Format] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
}
_ACCEPTED = "text/csv (CSV), application/x-ndjson or application/jsonl (JSON lines); or ?format=csv|jsonl"


def _format(request: HttpRequest) -> references.Format:
    asked = request.GET.get("format")
    if asked is not None:
        if asked not in ("csv", "jsonl"):
            raise ApiError(422, "invalid", f"format must be csv or jsonl, not {asked!r}", "format")
        return "csv" if asked == "csv" else "jsonl"
    kind = (request.content_type or "").lower()
    fmt = UPLOAD_TYPES.get(kind)
    if fmt is None:
        shown = f"Content-Type {kind!r}" if kind else "no Content-Type"
        raise ApiError(415, "unsupported_media_type", f"{shown} is not a reference format; send {_ACCEPTED}")
    return fmt


def _names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]


_UPLOAD_BODY = {"type": "string", "description": "the sample: CSV with a header row, or one JSON object per line"}
_UPLOAD_DOC = {
    "requestBody": {"required": True, "content": {kind: {"schema": _UPLOAD_BODY} for kind in UPLOAD_TYPES}},
    "parameters": [
        {"name": "format", "in": "query", "required": False, "schema": {"type": "string", "enum": ["csv", "jsonl"]},
         "description": "the body's format, whatever its Content-Type says"},
        {"name": "categorical", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "comma-separated columns to treat as categorical"},
        {"name": "note", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "kept with the reference"},
    ],
}


@router.put("/systems/{system}/reference", response={201: ReferenceOut}, openapi_extra=_UPLOAD_DOC)
def put_reference(request: HttpRequest, system: str) -> HttpResponse:
    """Upload a reference sample (the raw file is the body). Admin only.

    Bodies over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` get a 413 from the API's handler (reading
    ``request.body`` raises ``RequestDataTooBig``). ``?categorical=a,b`` forces columns to be
    categorical; ``?note=`` is kept with the reference.
    """
    who = require_person(request, access.ADMIN)
    entry = system_for(request, system)
    fmt = _format(request)
    body = request.body
    target = AISystem.objects.get(id=entry.id)
    ref = references.store_upload(target, body, fmt, who.user, categorical=_names(request.GET.get("categorical")),
                                  note=request.GET.get("note", ""))
    return json_response(references.describe(ref), 201)


class FromDecisionsIn(In):
    since: Annotated[AwareDatetime, AfterValidator(in_utc)]
    until: Annotated[AwareDatetime, AfterValidator(in_utc)]
    note: str = Field(default="", max_length=200)


@router.post("/systems/{system}/reference/from-decisions", response={201: ReferenceOut})
def reference_from_decisions(request: HttpRequest, system: str, payload: FromDecisionsIn) -> HttpResponse:
    """Use the system's decisions with ``since`` ≤ ``occurred_at`` < ``until`` as its reference. Admin only."""
    who = require_person(request, access.ADMIN)
    entry = system_for(request, system)
    target = AISystem.objects.get(id=entry.id)
    ref = references.reference_from_decisions(target, payload.since, payload.until, who.user, note=payload.note)
    return json_response(references.describe(ref), 201)


@router.get("/systems/{system}/reference", response=ReferenceOut, auth=ANYONE)
def get_reference(request: HttpRequest, system: str) -> HttpResponse:
    """The reference in use (any person with a role, or the system's own key)."""
    entry = system_for(request, system)
    ref = references.current(entry.id)
    if ref is None:
        raise ApiError(404, "not_found", f"system {entry.slug!r} has no reference yet; an admin can upload one "
                       f"(PUT /api/v1/systems/{entry.slug}/reference) or take a past window of decisions")
    return json_response(references.describe(ref))
