"""The monitoring pages: the overview (every system) and one page per system; their data for resyncs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboards import alerts, drill_report, hosted_card, monitoring, references, rollout_card
from dashboards.forms import BreakerForm, DrillForm, FromDecisionsForm, MitigationForm, ReferenceUploadForm
from dashboards.models import Alert, DriftResult
from dashboards.system_state import system_state
from oversight import access, actions, breaker_actions, demo, drills, mitigation, stopstate
from oversight.access import any_role, role_required
from oversight.errors import ActionError
from oversight.formfields import error_sentences, sentence
from oversight.models import AISystem

#: The overview's time ranges: how far back the chart goes, and the bar width.
RANGES: dict[str, tuple[timedelta, str]] = {
    "15m": (timedelta(minutes=15), "minute"),
    "1h": (timedelta(hours=1), "minute"),
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "hour"),
}
DEFAULT_RANGE = "1h"


def _worst_drift() -> dict[int, dict[str, Any]]:
    """Per system, the most severe primary result of its newest window with results: per system one
    walk down the (system, window_start) index, not a scan of every stored result (the overview
    re-reads this on every push)."""
    table = DriftResult._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            "SELECT s.id, r.feature, r.severity, r.drifted, r.window_start "  # noqa: S608
            f"FROM {AISystem._meta.db_table} s CROSS JOIN LATERAL (SELECT * FROM {table} d "
            f"WHERE d.system_id = s.id AND d.\"primary\" AND d.window_start = (SELECT max(window_start) "
            f"FROM {table} m WHERE m.system_id = s.id AND m.\"primary\") "
            "ORDER BY d.severity DESC NULLS LAST, d.feature LIMIT 1) r"
        )
        return {sid: {"feature": f, "severity": sev, "drifted": d, "window_start": w.isoformat()}
                for sid, f, sev, d, w in cur.fetchall()}


def _newest_alerts() -> dict[int, dict[str, Any]]:
    alerts = (Alert.objects.filter(state=Alert.State.OPEN).order_by("system_id", "-opened_at", "-id")
              .distinct("system_id"))
    return {a.system_id: {"id": a.public_id, "kind": a.kind, "subject": a.subject, "message": a.message,
                          "opened_at": a.opened_at.isoformat()} for a in alerts}


def overview_state(range_key: str = DEFAULT_RANGE) -> dict[str, Any]:
    now = timezone.now()
    span, bucket = RANGES.get(range_key, RANGES[DEFAULT_RANGE])
    stops = stopstate.current()  # what is stopped: the one selector the banner and every page use
    glob = stops.everything
    depths = monitoring.queue_depths()
    worst, newest = _worst_drift(), _newest_alerts()
    recent = monitoring.series(now - timedelta(minutes=10))
    totals: dict[tuple[str, str], float] = {}
    for p in recent:
        key = (p["system"], p["name"].removeprefix("decisions."))
        totals[key] = totals.get(key, 0.0) + p["value"]
    systems = []
    for s in AISystem.objects.all():
        stop = stops.by_slug.get(s.slug)
        k = stop.killed if stop is not None else None
        depth, oldest = depths.get(s.id, (0, None))
        systems.append({
            "slug": s.slug,
            "name": s.name,
            "level": s.level,
            "threshold": s.confidence_threshold,
            "killed": k is not None,
            "kill_reason": k.reason if k else "",
            "kill_by": k.by if k else "",
            "models_killed": {m: f.reason for m, f in stop.models_killed.items()} if stop is not None else {},
            "breaker": stop.breaker if stop is not None else "closed",
            "breaker_reason": stop.breaker_reason if stop is not None else "",
            "queue_depth": depth,
            "oldest_age_s": oldest,
            "routes": {r: int(totals.get((s.slug, r), 0)) for r in monitoring.ROUTES},
            "worst_drift": worst.get(s.id),
            "alert": newest.get(s.id),
        })
    return {
        "global": {
            "engaged": glob is not None,
            "reason": glob.reason if glob else "",
            "by": glob.by if glob else "",
        },
        "systems": systems,
        "releases": [
            {"id": r.public_id, "scope": r.switch.scope, "system": r.switch.system.slug if r.switch.system else None,
             "model": r.switch.model, "reason": r.reason, "requested_by": r.requested_by.get_username(),
             "requested_at": r.requested_at.isoformat()}
            for r in actions.pending_releases()
        ],
        "routes": monitoring.ROUTES,
        "series": monitoring.series_by(now - span, bucket),
        "range": range_key if range_key in RANGES else DEFAULT_RANGE,
        "ranges": list(RANGES),
        "bucket": bucket,
        "now": now.isoformat(),
    }


@any_role
def overview(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {"state": overview_state(request.GET.get("range", ""))}
    if demo.is_demo() and access.ADMIN in access.roles_of(request.user):
        context["demo"] = {"scenarios": demo.SCENARIOS, "current": demo.scenario()}
    return render(request, "dashboards/overview.html", context)


@any_role
def overview_data(request: HttpRequest) -> HttpResponse:
    """What a (re)connecting overview page resynchronises from (``?range=15m|1h|24h|7d``)."""
    return JsonResponse(overview_state(request.GET.get("range", "")))


def _system_page(request: HttpRequest, system: AISystem, upload: ReferenceUploadForm | None = None,
                 window: FromDecisionsForm | None = None, status: int = 200,
                 card: dict[str, forms.Form] | None = None) -> HttpResponse:
    """The page; ``card``: a card's bound form by its name in the template, kept as it was typed."""
    ref = references.current(system.id)
    return render(request, "dashboards/system.html", {
        "system": system, "state": system_state(system),
        "reference": references.describe(ref) if ref is not None else None,
        "upload_form": upload or ReferenceUploadForm(prefix="ref"),
        "window_form": window or FromDecisionsForm(prefix="window"),
        "breaker_form": BreakerForm(prefix="breaker"),
        "drill_form": DrillForm(prefix="drill"),
        "mitigation_form": MitigationForm(prefix="mitigation"),
        "rollouts": _rollouts(system, card),
        "hosted_card": _hosted(system, card),
        **(card or {}),
        "max_upload": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    }, status=status)


def _hosted(system: AISystem, card: dict[str, forms.Form] | None) -> dict[str, Any]:
    """The Hosted models card (dashboards.hosted_card), its form as typed after a refusal."""
    return hosted_card.card(system, card or {})


def _rollouts(system: AISystem, card: dict[str, forms.Form] | None) -> dict[str, Any]:
    """The Rollouts and bandit card (dashboards.rollout_card), its forms as typed after a refusal."""
    return rollout_card.card(system, card or {})


@any_role
def system_page(request: HttpRequest, slug: str) -> HttpResponse:
    """One system's monitoring page: rate, confidence, drift heat map, performance, feedback loops,
    alerts, and its reference (admins replace it here)."""
    return _system_page(request, get_object_or_404(AISystem, slug=slug))


@role_required(access.ADMIN)
@require_POST
def system_reference(request: HttpRequest, slug: str) -> HttpResponse:
    """A new reference from an uploaded file (``op=upload``) or a past window of decisions
    (``op=decisions``). The page's script sends the upload with ``Accept: application/json`` to show
    its progress, and gets JSON back; without the script the form posts and the page answers."""
    system = get_object_or_404(AISystem, slug=slug)
    op = request.POST.get("op")
    if op not in ("upload", "decisions"):
        return HttpResponseBadRequest("op must be upload or decisions")
    upload = ReferenceUploadForm(request.POST, request.FILES, prefix="ref") if op == "upload" else None
    window = FromDecisionsForm(request.POST, prefix="window") if op == "decisions" else None
    form: forms.Form = upload or window  # type: ignore[assignment]
    if form.is_valid():
        try:
            if upload is not None:
                f = upload.cleaned_data["file"]
                fmt = upload.format_of(f.name)
                assert fmt is not None
                ref = references.store_upload(system, f.read(), fmt, request.user, categorical=upload.columns(),
                                              note=upload.cleaned_data["note"])
            else:
                assert window is not None
                data = window.cleaned_data
                ref = references.reference_from_decisions(system, data["since"], data["until"], request.user,
                                                          note=data["note"])
        except ActionError as exc:
            form.add_error("file" if upload is not None else None, sentence(exc.message))
        else:
            text = f"reference stored: {ref.rows:,} rows, {len(ref.columns)} columns"
            url = reverse("system-monitor", args=[system.slug]) + "#reference"
            if _wants_json(request):
                return JsonResponse({"ok": True, "message": text, "redirect": url}, status=201)
            messages.success(request, text)
            return redirect(url)
    if _wants_json(request):
        return JsonResponse({"ok": False, "errors": error_sentences(form)}, status=422)
    return _system_page(request, system, upload, window, status=422)


@role_required(access.ADMIN)
@require_POST
def alert_ack(request: HttpRequest, slug: str, alert_id: str) -> HttpResponse:
    """The system page's Acknowledge button (admins)."""
    system = get_object_or_404(AISystem, slug=slug)
    try:
        alert = alerts.acknowledge(request.user, alert_id)
    except ActionError as exc:
        messages.error(request, exc.message)
    else:
        who = alert.acked_by.get_username() if alert.acked_by else "someone"
        messages.success(request, f"alert {alert.public_id} acknowledged ({who})")
    return redirect(reverse("system-monitor", args=[system.slug]) + "#alerts")


def _card_form(request: HttpRequest, system: AISystem, form: forms.Form, anchor: str,
               act: Callable[[dict[str, Any]], str], page_form: str) -> HttpResponse:
    """A system-page card's form (admins): ``act`` does it with the cleaned data and says what was
    done; a refusal lands on its field (or the form) and the page comes back with what was typed."""
    if form.is_valid():
        try:
            done = act(form.cleaned_data)
        except ActionError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, sentence(exc.message))
        else:
            messages.success(request, done)
            return redirect(reverse("system-monitor", args=[system.slug]) + "#" + anchor)
    return _system_page(request, system, status=422, card={page_form: form})


@role_required(access.ADMIN)
@require_POST
def system_breaker(request: HttpRequest, slug: str) -> HttpResponse:
    """The system page's form: an admin opens or closes a breaker by hand, with a reason."""
    system = get_object_or_404(AISystem, slug=slug)

    def act(data: dict[str, Any]) -> str:
        b = breaker_actions.set_by_hand(request.user, system.slug, data["state"], data["reason"], data["model"])
        what = f"model {b.model}'s breaker" if b.model else "the breaker"
        return f"{what} is {b.get_state_display()} now"

    return _card_form(request, system, BreakerForm(request.POST, prefix="breaker"), "breaker", act, "breaker_form")


@role_required(access.ADMIN)
@require_POST
def system_drill(request: HttpRequest, slug: str) -> HttpResponse:
    """The chaos-drill card: an admin starts a drill (``op=start``) or stops the running one (``op=stop``)."""
    system = get_object_or_404(AISystem, slug=slug)
    if request.POST.get("op") == "stop":
        try:
            stopped = drills.stop(request.user, request.POST.get("drill", ""))
        except ActionError as exc:
            messages.error(request, sentence(exc.message))
        else:
            drill_report.write(stopped)  # the report at once: the page shows it on the redirect
            messages.success(request, "The drill is stopped: decisions go to the model again.")
        return redirect(reverse("system-monitor", args=[system.slug]) + "#drill")

    def act(data: dict[str, Any]) -> str:
        d = drills.start(request.user, system.slug, data["kind"], data["minutes"], data["share"], data["reason"])
        return sentence(f"Drill started: {drills.describe(d)} until {d.ends_at:%H:%M:%S} UTC")

    return _card_form(request, system, DrillForm(request.POST, prefix="drill"), "drill", act, "drill_form")


@role_required(access.ADMIN)
@require_POST
def system_mitigation(request: HttpRequest, slug: str) -> HttpResponse:
    """The Feedback loops card's form: an admin starts or ends the mitigation, with a reason."""
    system = get_object_or_404(AISystem, slug=slug)

    def act(data: dict[str, Any]) -> str:
        if data["active"] == "start":
            mitigation.start(request.user, system.slug, data["reason"])
            return "feedback-loop mitigation started"
        mitigation.stop(request.user, system.slug, data["reason"])
        return "feedback-loop mitigation ended"

    return _card_form(request, system, MitigationForm(request.POST, prefix="mitigation"), "loops-card", act,
                      "mitigation_form")


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@any_role
def system_data(request: HttpRequest, slug: str) -> HttpResponse:
    """What a system page re-reads when a push arrives or its socket reconnects."""
    return JsonResponse(system_state(get_object_or_404(AISystem, slug=slug)))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text() -> str:
    """Gauges for Prometheus: levels, kill switches, queue depth, decisions in the last 10 minutes."""
    state = overview_state()
    lines = [
        "# HELP oversight_control_level The system's control level (1 critical, 2 supervised, 3 autonomous).",
        "# TYPE oversight_control_level gauge",
    ]
    lines += [f'oversight_control_level{{system="{_label(s["slug"])}"}} {s["level"]}' for s in state["systems"]]
    lines += [
        "# HELP oversight_killswitch_engaged 1 when a kill switch stops the system (global or its own).",
        "# TYPE oversight_killswitch_engaged gauge",
        f'oversight_killswitch_engaged{{scope="global",system=""}} {int(state["global"]["engaged"])}',
    ]
    lines += [
        f'oversight_killswitch_engaged{{scope="system",system="{_label(s["slug"])}"}} {int(s["killed"])}'
        for s in state["systems"]
    ]
    lines += [
        "# HELP oversight_review_queue_depth Review items not resolved yet.",
        "# TYPE oversight_review_queue_depth gauge",
    ]
    lines += [
        f'oversight_review_queue_depth{{system="{_label(s["slug"])}"}} {s["queue_depth"]}' for s in state["systems"]
    ]
    lines += [
        "# HELP oversight_decisions_last_10m Decisions in the last 10 minutes by route (monitoring job).",
        "# TYPE oversight_decisions_last_10m gauge",
    ]
    for s in state["systems"]:
        for route, n in s["routes"].items():
            lines.append(f'oversight_decisions_last_10m{{system="{_label(s["slug"])}",route="{route}"}} {n}')
    return "\n".join(lines) + "\n"


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for a logged-in person or `Authorization: Token <personal token>`."""
    header = request.headers.get("Authorization", "")
    try:
        who = (access.person_by_token(header[6:].strip()) if header[:6].lower() == "token "
               else access.person(request.user))
    except ActionError as exc:
        return HttpResponse(exc.message + "\n", status=exc.status, content_type="text/plain")
    if who is None or not who.roles:
        return HttpResponse(
            "send 'Authorization: Token <personal token>' of a person with a role\n", status=401,
            content_type="text/plain",
        )
    return HttpResponse(prometheus_text(), content_type="text/plain; version=0.0.4")
