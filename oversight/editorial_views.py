"""The editor page: a system's curated picks and blocked items, forms to add and remove them, and the
preview of what a segment would receive now.

Anyone with a role may look (and preview); editors and admins change (others get the 403 page).
Times show in the browser's time zone once ``static/js/editorial.js`` has set the ``tz`` cookie,
in the server's before that, always with the zone's name.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from oversight import access, editorial, jsonutil, picks
from oversight.access import any_role, person_of, role_required
from oversight.editorial_forms import CurationForm, PickForm, PreviewForm, zone
from oversight.errors import ActionError
from oversight.models import AISystem, BlockedItem, Pick

ENDED_SHOWN = 50
KINDS = ("pick", "block")
can_change = role_required(access.EDITOR, access.ADMIN)


@any_role
def index(request: HttpRequest) -> HttpResponse:
    """Every system with how many picks and blocks are in force or to come."""
    now = timezone.now()
    systems = list(AISystem.objects.order_by("slug"))
    counts: dict[int, dict[str, int]] = {s.id: {"picks": 0, "blocks": 0} for s in systems}
    for key, kind in (("picks", Pick), ("blocks", BlockedItem)):
        for sid in (kind._default_manager.filter(removed_at__isnull=True).exclude(ends_at__lte=now)
                    .values_list("system_id", flat=True)):
            counts[sid][key] += 1
    rows = [{"system": s, "list_output": picks.curated_items(s.fallback) is not None, **counts[s.id]}
            for s in systems]
    return render(request, "editorial/index.html", {"rows": rows})


def _split(found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {"active": [], "scheduled": [], "done": []}
    for r in found:
        groups[r["state"] if r["state"] in ("active", "scheduled") else "done"].append(r)
    groups["done"] = groups["done"][:ENDED_SHOWN]
    return groups


def _shown(output: Any) -> dict[str, Any]:
    """An output for the preview: its item list, or its JSON."""
    items = picks.curated_items(output)
    return {"items": items, "json": "" if items is not None else jsonutil.dumps(output).decode()}


def _page(request: HttpRequest, system: AISystem, *, pick_form: PickForm | None = None,
          block_form: CurationForm | None = None, status: int = 200) -> HttpResponse:
    now = timezone.now()
    where = zone(unquote(request.COOKIES.get("tz", "")))
    preview_form = PreviewForm(request.GET if "preview" in request.GET else None)
    shown = None
    if preview_form.is_bound and preview_form.is_valid():
        ctx = preview_form.decision_context()
        result = editorial.preview(system, ctx, now)
        shown = {"match": picks.describe_match(picks.Rule(
            id="", item="", segment=str(ctx.get("segment", "")), starts_at=now, ends_at=None,
            context={k: v for k, v in ctx.items() if k != "segment"})), "result": result,
            "base": _shown(result.base), "curated": _shown(result.curated)}
    context = {
        "system": system,
        "list_output": picks.curated_items(system.fallback) is not None,
        "picks": _split(editorial.listing(Pick, system, now, include_ended=True)),
        "blocks": _split(editorial.listing(BlockedItem, system, now, include_ended=True)),
        "pick_form": pick_form or PickForm(prefix="pick"),
        "block_form": block_form or CurationForm(prefix="block"),
        "preview_form": preview_form, "preview": shown,
        "can_change": access.has_role(request.user, access.EDITOR, access.ADMIN),
        "tz_name": where.key,
    }
    with timezone.override(where):
        return render(request, "editorial/system.html", context, status=status)


@any_role
def system_page(request: HttpRequest, slug: str) -> HttpResponse:
    return _page(request, get_object_or_404(AISystem, slug=slug))


@require_POST
@can_change
def add(request: HttpRequest, slug: str, kind: str) -> HttpResponse:
    """Add a pick (``kind`` "pick") or a block ("block"); the page again with the errors when refused."""
    if kind not in KINDS:
        raise Http404("no such kind of rule")
    system = get_object_or_404(AISystem, slug=slug)
    person = person_of(request)
    form: CurationForm = PickForm(request.POST, prefix="pick") if kind == "pick" else CurationForm(
        request.POST, prefix="block")
    if form.is_valid():
        try:
            if isinstance(form, PickForm):
                row: Pick | BlockedItem = editorial.create_pick(
                    person, slug, position=form.cleaned_data["position"], **form.fields_for_action())
            else:
                row = editorial.create_block(person, slug, **form.fields_for_action())
        except ActionError as exc:
            form.refused(exc)
        else:
            said = editorial.describe_one(type(row), row, timezone.now())
            text = (f"pick {said['id']}: {row.item} at position {said['position']} for {said['match']}"
                    if kind == "pick" else f"block {said['id']}: {row.item} for {said['match']}")
            messages.success(request, text + (f" — {said['overlap_note']}" if said.get("overlap_note") else ""))
            return redirect("editorial-system", slug=slug)
    forms_shown = {"pick_form": form} if kind == "pick" else {"block_form": form}
    return _page(request, system, status=422, **forms_shown)  # type: ignore[arg-type]


@require_POST
@can_change
def remove(request: HttpRequest, slug: str, kind: str, rule_id: str) -> HttpResponse:
    if kind not in KINDS:
        raise Http404("no such kind of rule")
    person = person_of(request)
    try:
        if kind == "pick":
            editorial.remove_pick(person, rule_id, system=slug)
        else:
            editorial.remove_block(person, rule_id, system=slug)
    except ActionError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{rule_id} removed")
    return redirect("editorial-system", slug=slug)
