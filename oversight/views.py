"""Pages of the core: health, systems and policies, kill switches, keys, tokens, audit log."""

from __future__ import annotations

import csv
import itertools

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from oversight import access, actions, audit, demo, readiness, stopstate, webhooks
from oversight.access import any_role, person_of, role_required
from oversight.errors import ActionError
from oversight.formfields import add_action_error, error_sentences
from oversight.forms import (
    ApiKeyForm,
    AuditFilterForm,
    DemoScenarioForm,
    KillSwitchForm,
    PolicyEditForm,
    ReadinessForm,
    SystemCreateForm,
    TokenForm,
    keep_secret_once,
    pop_secret,
)
from oversight.models import AISystem, ApiKey, KillSwitch, PersonalToken, PolicyVersion, ReleaseRequest

# --- the demo's scenario ------------------------------------------------------------------


@require_POST
@role_required(access.ADMIN)
def demo_scenario(request: HttpRequest) -> HttpResponse:
    """The overview's demo buttons: switch what the simulated listeners do."""
    form = DemoScenarioForm(request.POST)
    if not demo.is_demo():
        messages.error(request, "this is not the demo: there is no simulator to switch")
    elif form.is_valid():
        try:
            demo.set_scenario(request.user, form.cleaned_data["scenario"])
        except (ActionError, OSError) as exc:
            messages.error(request, f"could not switch the scenario: {exc}")
        else:
            messages.success(request, f"demo scenario: {demo.SCENARIOS[form.cleaned_data['scenario']]}")
    else:
        for text in error_sentences(form):
            messages.error(request, text)
    return redirect("overview")


# --- kill switches ----------------------------------------------------------------------


@require_POST
@role_required(access.ADMIN)
def killswitch(request: HttpRequest) -> HttpResponse:
    """The overview's confirmation dialog posts here; the answer is a message on the page it came from."""
    form = KillSwitchForm(request.POST)
    done: KillSwitch | ReleaseRequest | None = None
    if form.is_valid() and form.checked is not None:
        c = form.checked
        try:
            done = actions.set_killswitch(request.user, c.scope, c.engaged, c.reason, c.system, c.model)
        except ActionError as exc:
            add_action_error(form, exc)
    if form.errors:
        for text in error_sentences(form):
            messages.error(request, text)
        return redirect(form.back())
    assert form.checked is not None
    c = form.checked
    what = "global" if c.scope == "global" else f"{c.scope} {c.system or ''} {c.model}".strip()
    if done is not None and not isinstance(done, KillSwitch):
        messages.info(request, f"release of the {what} kill switch requested ({done.public_id}): it stays engaged "
                               "until a second admin approves it")
    else:
        messages.success(request, f"kill switch {'engaged' if c.engaged else 'released'}: {what}")
    return redirect(form.back())


@role_required(access.ADMIN)
@require_POST
def release_decide(request: HttpRequest, request_id: str, decision: str) -> HttpResponse:
    """The overview's Approve (a second admin) and Withdraw (the requester) buttons."""
    if decision not in ("approve", "withdraw"):
        raise Http404("no such action on a release request")
    try:
        if decision == "approve":
            switch = actions.approve_release(person_of(request), request_id)
            what = "global" if switch.system is None else switch.system.slug
            what += f"/{switch.model}" if switch.model else ""
            messages.success(request, f"release approved: the {what} kill switch is released")
        else:
            actions.withdraw_release(person_of(request), request_id)
            messages.success(request, f"release request {request_id} withdrawn: the kill switch stays engaged")
    except ActionError as exc:
        messages.error(request, exc.message)
    return redirect("overview")


# --- systems and policies ---------------------------------------------------------------


def _status(form: forms.Form) -> int:
    return 422 if form.errors else 200


@role_required(access.ADMIN)
def systems_page(request: HttpRequest) -> HttpResponse:
    form = SystemCreateForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            system = actions.create_system(request.user, form.policy(), form.cleaned_data["reason"])
        except ActionError as exc:
            add_action_error(form, exc)
        else:
            messages.success(request, f"system {system.slug} created (policy version 1)")
            return redirect("system-edit", slug=system.slug)
    stops = stopstate.current().by_slug
    systems = [(s, stops.get(s.slug)) for s in AISystem.objects.all()]
    return render(request, "oversight/systems.html", {"systems": systems, "form": form}, status=_status(form))


def policy_history(versions: list[PolicyVersion]) -> list[tuple[PolicyVersion, str]]:
    """Each version (newest first) with what it changed from the one before, in words."""
    out = []
    for i, v in enumerate(versions):
        older = versions[i + 1].policy if i + 1 < len(versions) else None
        if older is None:
            words = "first version: " + "; ".join(
                f"{k.replace('_', ' ')}: {audit.plain(x)}" for k, x in v.policy.items() if k != "slug")
        else:
            changed = [f"{k.replace('_', ' ')}: {audit.plain(older.get(k))} → {audit.plain(x)}"
                       for k, x in v.policy.items() if older.get(k) != x]
            words = "; ".join(changed) or "no change"
        out.append((v, words))
    return out


@role_required(access.ADMIN)
def system_edit(request: HttpRequest, slug: str) -> HttpResponse:
    system = get_object_or_404(AISystem, slug=slug)
    policy_form = PolicyEditForm(initial=system.policy_dict())
    key_form = ApiKeyForm(prefix="key")
    assessment = actions.current_readiness(system.id)
    readiness_form = ReadinessForm(initial=assessment.answers if assessment else None)
    if request.method == "POST":
        op = request.POST.get("op", "policy")
        if op == "policy":
            policy_form = PolicyEditForm(request.POST, initial=system.policy_dict())
            if policy_form.is_valid():
                try:
                    before = system.policy_version
                    system = actions.update_system(
                        request.user, slug, policy_form.changes(), policy_form.cleaned_data["reason"]
                    )
                except ActionError as exc:
                    add_action_error(policy_form, exc)
                else:
                    if system.policy_version != before:
                        messages.success(request, f"policy saved as version {system.policy_version}")
                    else:
                        messages.info(request, "nothing changed")
                    return redirect("system-edit", slug=slug)
        elif op == "create_key":
            key_form = ApiKeyForm(request.POST, prefix="key")
            if key_form.is_valid():
                key, secret = actions.create_api_key(request.user, system, key_form.cleaned_data["name"])
                keep_secret_once(request.session, "api_key", system.slug, secret)
                messages.success(request, f"key {key.prefix}… created")
                return redirect("system-edit", slug=slug)
        elif op == "revoke_key":
            key = get_object_or_404(ApiKey, pk=_int_or_404(request.POST.get("key")), system=system)
            actions.revoke_api_key(request.user, key)
            messages.success(request, f"key {key.prefix}… revoked")
            return redirect("system-edit", slug=slug)
        elif op == "webhook_secret":
            keep_secret_once(request.session, "webhook", system.slug, webhooks.set_secret(system, request.user))
            messages.success(request, "new webhook secret made: deliveries are signed with it from now on")
            return redirect(reverse("system-edit", kwargs={"slug": slug}) + "#webhooks")
        elif op == "readiness":
            readiness_form = ReadinessForm(request.POST)
            if readiness_form.is_valid() and _assess(request, slug, readiness_form):
                return redirect(reverse("system-edit", kwargs={"slug": slug}) + "#readiness")
        else:
            return redirect("system-edit", slug=slug)
    new_key = pop_secret(request.session, "api_key", system.slug) if request.method == "GET" else None
    new_webhook_secret = pop_secret(request.session, "webhook", system.slug) if request.method == "GET" else None
    response = render(
        request, "oversight/system_edit.html",
        {
            "system": system,
            "form": policy_form,
            "key_form": key_form,
            "new_key": new_key,
            "new_webhook_secret": new_webhook_secret,
            "webhook_give_up_h": round(webhooks.give_up_after_s() / 3600),
            "deliveries": system.webhook_deliveries.select_related("decision").order_by("-created_at")[:10],
            "keys": system.api_keys.order_by("-created_at"),
            "versions": policy_history(list(system.policy_versions.select_related("created_by")[:21]))[:20],
            "readiness_form": readiness_form,
            "assessment": assessment,
            "assessment_missing": readiness.missing(assessment.answers) if assessment else [],
            "assessments": system.readiness_assessments.select_related("assessed_by")[:10],
            "readiness_rules": {"max": readiness.MAX_SCORE, "level_3": readiness.LEVEL_3_MIN_SCORE,
                                "hold": readiness.hold_reason(assessment.score if assessment else None)},
        },
        status=max(_status(policy_form), _status(key_form), _status(readiness_form)),
    )
    if new_key:
        add_never_cache_headers(response)  # the back button must not show the secret again
    return response


def _assess(request: HttpRequest, slug: str, form: ReadinessForm) -> bool:
    """Record the page's assessment; False (with the rule's error on the form) when it is refused."""
    try:
        row = actions.assess_readiness(request.user, slug, form.answers(), form.cleaned_data["note"])
    except ActionError as exc:
        form.add_action_error(exc)
        return False
    messages.success(request, f"readiness assessment saved: score {row.score} of {readiness.MAX_SCORE}")
    return True


def _int_or_404(value: str | None) -> int:
    if value is None or not (value.isascii() and value.isdigit() and len(value) < 19):
        raise Http404("no such key or token")
    return int(value)


# --- personal tokens --------------------------------------------------------------------


@any_role
def tokens_page(request: HttpRequest) -> HttpResponse:
    person = person_of(request)
    form = TokenForm()
    if request.method == "POST":
        if request.POST.get("op") == "revoke":
            token = get_object_or_404(PersonalToken, pk=_int_or_404(request.POST.get("token")), user=person)
            actions.revoke_personal_token(person, token)
            messages.success(request, f"token {token.prefix}… revoked")
            return redirect("tokens")
        form = TokenForm(request.POST)
        if form.is_valid():
            token, secret = actions.create_personal_token(person, form.cleaned_data["name"])
            keep_secret_once(request.session, "token", "tokens", secret)
            messages.success(request, f"token {token.prefix}… created")
            return redirect("tokens")
    new_token = pop_secret(request.session, "token", "tokens") if request.method == "GET" else None
    tokens = PersonalToken.objects.filter(user=person).order_by("-created_at")
    response = render(
        request, "oversight/tokens.html", {"tokens": tokens, "form": form, "new_token": new_token},
        status=_status(form),
    )
    if new_token:
        add_never_cache_headers(response)
    return response


# --- audit log --------------------------------------------------------------------------


def _audit_filter(request: HttpRequest) -> AuditFilterForm:
    systems = list(AISystem.objects.order_by("slug").values_list("slug", flat=True))
    return AuditFilterForm(request.GET, actions=audit.actions_present(), systems=systems)


@role_required(access.ADMIN)
def audit_page(request: HttpRequest) -> HttpResponse:
    """The log, filtered; each event's details in words; a CSV of the same rows; a chain check on demand."""
    form = _audit_filter(request)
    page = Paginator(audit.events(**form.filters()), 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    rows = [(e, audit.describe(e)) for e in page]
    return render(request, "oversight/audit.html", {
        "form": form, "page": page, "rows": rows, "query": query.urlencode(), "time_zone": settings.TIME_ZONE,
    })


class _Echo:
    def write(self, value: str) -> str:
        return value


@role_required(access.ADMIN)  # type: ignore[arg-type]  # access.View says HttpResponse; this one streams
def audit_export(request: HttpRequest) -> StreamingHttpResponse:
    """The filtered events as CSV, streamed row by row from a server-side cursor."""
    events = audit.events(**_audit_filter(request).filters())
    writer = csv.writer(_Echo())
    lines = itertools.chain(
        [writer.writerow(audit.CSV_HEADER)],
        (writer.writerow(audit.csv_row(e)) for e in events.iterator(chunk_size=2000)),
    )
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="audit.csv"'
    return response


@require_POST
@role_required(access.ADMIN)
def audit_verify(request: HttpRequest) -> HttpResponse:
    """Recompute the whole chain (as ``manage.py verify_audit``) and say the result."""
    report = audit.verify_log()
    (messages.success if report.intact else messages.error)(request, report.message)
    return redirect("audit")
