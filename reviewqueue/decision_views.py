"""Decisions for the people who review them: find one (by id or subject), read it whole, override
it within its system's override window (level 2; the rule is ``oversight.overrides``)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from oversight import access, overrides
from oversight.access import person_of
from oversight.errors import ActionError
from oversight.formfields import MISSING, add_action_error
from oversight.models import AISystem, Decision
from reviewqueue import triage
from reviewqueue.forms import OverrideForm
from reviewqueue.models import ReviewItem
from reviewqueue.views import _votes, reviewers_only, subject_recent

PER_PAGE = 50


class DecisionSearchForm(forms.Form):
    q = forms.CharField(label="Decision id or subject", required=False, max_length=200,
                        widget=forms.TextInput(attrs={"placeholder": "dec_… or a subject, e.g. listener-42",
                                                      "autofocus": True}))
    system = forms.ChoiceField(label="System", required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        slugs = AISystem.objects.values_list("slug", flat=True)
        self.fields["system"].choices = [("", "all systems"), *((s, s) for s in slugs)]  # type: ignore[attr-defined]


@reviewers_only
def search(request: HttpRequest) -> HttpResponse:
    """A decision id opens that decision; a subject lists its decisions, newest first; a system
    alone lists that system's newest decisions."""
    form = DecisionSearchForm(request.GET)
    form.is_valid()
    q = (form.cleaned_data.get("q") or "").strip()
    system = form.cleaned_data.get("system") or ""
    uid = triage.decision_id(q) if q else None
    if uid is not None:
        if Decision.objects.filter(id=uid).exists():
            return redirect("decision", f"dec_{uid.hex}")
        messages.error(request, f"no decision {q}: check the id (it looks like dec_ and 32 hex digits)")
    qs = Decision.objects.none()
    if q and uid is None:
        qs = Decision.objects.filter(subject=q)
    elif system and not q:
        qs = Decision.objects.all()
    if system:
        qs = qs.filter(system__slug=system)
    # No total: a system may hold millions of decisions. A page, and whether there is one more.
    number = _page_number(request)
    start = (number - 1) * PER_PAGE
    rows = list(qs.select_related("system").order_by("-created_at")[start:start + PER_PAGE + 1])
    keep = request.GET.copy()
    keep.pop("page", None)
    return render(request, "reviewqueue/decisions.html", {
        "form": form, "rows": rows[:PER_PAGE], "number": number, "has_next": len(rows) > PER_PAGE,
        "q": q, "system": system, "keep": keep.urlencode(), "searched": bool(q or system),
    })


def _page_number(request: HttpRequest) -> int:
    try:
        return min(10_000, max(1, int(request.GET.get("page", "1"))))
    except ValueError:
        return 1


def _decision_or_404(decision_id: str) -> Decision:
    uid = access.parse_decision_id(decision_id)
    d = Decision.objects.select_related("system").filter(id=uid).first() if uid else None
    if d is None:
        raise Http404("no such decision")
    return d


def _page(request: HttpRequest, d: Decision, form: OverrideForm, status: int = 200) -> HttpResponse:
    refusal = overrides.refusal(d)
    return render(request, "reviewqueue/decision.html", {
        "d": d,
        "form": form,
        "refusal": refusal,
        "closes_at": overrides.window_closes_at(d),
        "votes": _votes(d.prediction),
        "items": ReviewItem.objects.filter(decision=d).select_related("resolved_by", "claimed_by")
                 .order_by("created_at", "kind"),
        "deliveries": d.webhook_deliveries.order_by("created_at"),
        "subject_recent": subject_recent(d),
        "pretty": {name: json.dumps(getattr(d, name), indent=2, ensure_ascii=False)
                   for name in ("output", "context", "features", "prediction")},
    }, status=status)


@reviewers_only
def detail(request: HttpRequest, decision_id: str) -> HttpResponse:
    d = _decision_or_404(decision_id)
    return _page(request, d, OverrideForm(initial={"output": d.output}, auto_id="%s"))


@require_POST
@reviewers_only
def override(request: HttpRequest, decision_id: str) -> HttpResponse:
    """Override from the decision's page: what was typed stays when something is wrong."""
    d = _decision_or_404(decision_id)
    form = OverrideForm(request.POST, auto_id="%s")
    status = 422
    if form.is_valid():
        output = form.cleaned_data["output"]
        try:
            changed = overrides.override(person_of(request), d.id, None if output is MISSING else output,
                                         output_given=not form.cleaned_data["fallback"],
                                         note=form.cleaned_data["note"])
        except ActionError as exc:
            if exc.code == "not_found":
                raise Http404(exc.message) from None
            add_action_error(form, exc)
            status = exc.status
        else:
            told = " The client is told by webhook." if changed.system.callback_url else ""
            messages.success(request, f"{changed.public_id}: overridden at {timezone.localtime():%H:%M:%S}.{told}")
            return redirect(reverse("decision", args=[changed.public_id]))
    return _page(request, _decision_or_404(decision_id), form, status=status)
