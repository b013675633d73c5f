"""Pages of the core: health, systems and policies, kill switches, keys, tokens, audit log."""

from __future__ import annotations

import json
from typing import Any

import redis
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from oversight import access, actions, config
from oversight.access import any_role, role_required
from oversight.models import AISystem, ApiKey, AuditEvent, KillSwitch, PersonalToken
from oversight.schemas import SystemIn, SystemPatch


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        checks["postgresql"] = "ok"
    except Exception as exc:
        checks["postgresql"] = f"unreachable: {exc.__class__.__name__}"
    try:
        redis.Redis.from_url(settings.REDIS_URL, **config.FAIL_FAST).ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


# --- kill switches ----------------------------------------------------------------------


@require_POST
@role_required(access.ADMIN)
def killswitch(request: HttpRequest) -> HttpResponse:
    scope = request.POST.get("scope", "")
    engaged = request.POST.get("engaged") == "true"
    back = request.POST.get("next") or "/"
    if not back.startswith("/") or back.startswith("//"):
        back = "/"
    if scope not in KillSwitch.Scope.values:
        messages.error(request, "unknown kill-switch scope")
        return redirect(back)
    try:
        actions.set_killswitch(
            request.user, scope, engaged, request.POST.get("reason", ""),
            request.POST.get("system") or None, request.POST.get("model", ""),
        )
    except actions.ActionError as exc:
        messages.error(request, exc.message)
        return redirect(back)
    target = f"{request.POST.get('system', '')} {request.POST.get('model', '')}"
    what = "global" if scope == "global" else f"{scope} {target}"
    messages.success(request, f"kill switch {'engaged' if engaged else 'released'}: {what.strip()}")
    return redirect(back)


# --- systems and policies ---------------------------------------------------------------


def _policy_form(post: Any) -> tuple[dict[str, Any], dict[str, str]]:
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field, cast in (
        ("level", int), ("confidence_threshold", float), ("audit_sample_rate", float),
        ("override_window_s", int), ("review_sla_s", int),
    ):
        raw = post.get(field, "").strip()
        if raw == "":
            continue
        try:
            data[field] = cast(raw)
        except ValueError:
            errors[field] = f"{raw!r} is not a number"
    for field in ("slug", "name"):
        if post.get(field) is not None:
            data[field] = post.get(field, "").strip()
    raw_fallback = post.get("fallback", "").strip()
    if raw_fallback:
        try:
            data["fallback"] = json.loads(raw_fallback)
        except ValueError as exc:
            errors["fallback"] = f"not valid JSON: {exc}"
    return data, errors


def _pydantic_errors(exc: Any) -> dict[str, str]:
    return {".".join(str(p) for p in e["loc"]) or "form": e["msg"] for e in exc.errors()}


@role_required(access.ADMIN)
def systems_page(request: HttpRequest) -> HttpResponse:
    errors: dict[str, str] = {}
    form: dict[str, Any] = {}
    if request.method == "POST":
        form, errors = _policy_form(request.POST)
        if not errors:
            from pydantic import ValidationError

            try:
                payload = SystemIn.model_validate(form)
                system = actions.create_system(request.user, payload.model_dump(), request.POST.get("reason", ""))
                messages.success(request, f"system {system.slug} created (policy version 1)")
                return redirect("system-edit", slug=system.slug)
            except ValidationError as exc:
                errors = _pydantic_errors(exc)
            except actions.ActionError as exc:
                errors = {exc.field or "form": exc.message}
    return render(
        request, "oversight/systems.html",
        {"systems": AISystem.objects.all(), "errors": errors, "form": form},
        status=422 if errors else 200,
    )


@role_required(access.ADMIN)
def system_edit(request: HttpRequest, slug: str) -> HttpResponse:
    system = get_object_or_404(AISystem, slug=slug)
    errors: dict[str, str] = {}
    new_key: str | None = None
    if request.method == "POST":
        op = request.POST.get("op", "policy")
        if op == "policy":
            form, errors = _policy_form(request.POST)
            form.pop("slug", None)
            if not errors:
                from pydantic import ValidationError

                try:
                    patch = SystemPatch.model_validate(form)
                    changes = patch.model_dump(exclude_unset=True, exclude={"reason"})
                    before = system.policy_version
                    system = actions.update_system(request.user, slug, changes, request.POST.get("reason", ""))
                    if system.policy_version != before:
                        messages.success(request, f"policy saved as version {system.policy_version}")
                    else:
                        messages.info(request, "nothing changed")
                    return redirect("system-edit", slug=slug)
                except ValidationError as exc:
                    errors = _pydantic_errors(exc)
        elif op == "create_key":
            _, new_key = actions.create_api_key(request.user, system, request.POST.get("name", "").strip()[:100])
        elif op == "revoke_key":
            key = get_object_or_404(ApiKey, pk=_int_or_404(request.POST.get("key")), system=system)
            actions.revoke_api_key(request.user, key)
            messages.success(request, f"key {key.prefix}… revoked")
            return redirect("system-edit", slug=slug)
    return render(
        request, "oversight/system_edit.html",
        {
            "system": system,
            "fallback_json": json.dumps(system.fallback),
            "errors": errors,
            "new_key": new_key,
            "keys": system.api_keys.order_by("-created_at"),
            "versions": system.policy_versions.select_related("created_by")[:20],
            "levels": [(1, "1 · critical: a person approves every decision"),
                       (2, "2 · supervised: low confidence waits for a person"),
                       (3, "3 · autonomous: released, audited after the fact")],
        },
        status=422 if errors else 200,
    )


def _int_or_404(value: str | None) -> int:
    if value is None or not value.isdigit():
        raise Http404("no such key or token")
    return int(value)


# --- personal tokens --------------------------------------------------------------------


@any_role
def tokens_page(request: HttpRequest) -> HttpResponse:
    new_token = None
    if request.method == "POST":
        if request.POST.get("op") == "revoke":
            token = get_object_or_404(PersonalToken, pk=_int_or_404(request.POST.get("token")), user=request.user)
            actions.revoke_personal_token(request.user, token)  # type: ignore[arg-type]
            messages.success(request, f"token {token.prefix}… revoked")
            return redirect("tokens")
        _, new_token = actions.create_personal_token(request.user, request.POST.get("name", "").strip()[:100])  # type: ignore[arg-type]
    tokens = PersonalToken.objects.filter(user=request.user).order_by("-created_at")
    return render(request, "oversight/tokens.html", {"tokens": tokens, "new_token": new_token})


# --- audit log --------------------------------------------------------------------------


@role_required(access.ADMIN)
def audit_page(request: HttpRequest) -> HttpResponse:
    qs = AuditEvent.objects.select_related("system")
    system = request.GET.get("system")
    if system:
        qs = qs.filter(system__slug=system)
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    return render(request, "oversight/audit.html", {"page": page, "system": system or ""})
