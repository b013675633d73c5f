"""The reviewer-quality page (operators and admins): agreement between reviewers (Cohen's kappa),
people's agreement with each model, and each operator's throughput and handling time, for a
period and one system or all. The figures are ``reviewqueue.quality``'s."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils import timezone

from oversight.models import AISystem
from reviewqueue import quality as stats
from reviewqueue.views import reviewers_only

PERIODS = {"24h": ("last 24 hours", timedelta(hours=24)),
           "7d": ("last 7 days", timedelta(days=7)),
           "30d": ("last 30 days", timedelta(days=30))}
DEFAULT_PERIOD = "7d"


class QualityForm(forms.Form):
    """The page's GET form. A field with an error is shown with it, and its default is used (and
    selected) instead; with no period asked, the default period is the one selected."""

    period = forms.ChoiceField(
        label="Period", required=False, initial=DEFAULT_PERIOD,
        choices=[(key, label) for key, (label, _) in PERIODS.items()],
        error_messages={"invalid_choice": "Unknown period %(value)s: choose the last 24 hours, 7 days or 30 days."},
    )
    system = forms.ChoiceField(
        label="System", required=False,
        error_messages={"invalid_choice": "No system %(value)s: choose one from the list, or all systems."},
    )

    def __init__(self, data: QueryDict | None = None, **kwargs: Any) -> None:
        data = data.copy() if data is not None else QueryDict(mutable=True)
        if not data.get("period"):
            data["period"] = DEFAULT_PERIOD
        self.query = data  # self.data, mutable: asked() puts a default in place of a refused value
        super().__init__(data, **kwargs)
        slugs = AISystem.objects.order_by("slug").values_list("slug", flat=True)
        self.fields["system"].choices = [("", "all systems"), *((s, s) for s in slugs)]  # type: ignore[attr-defined]

    def asked(self) -> tuple[str, str]:
        """(period key, system slug or ""): what the valid fields ask for, defaults for the rest."""
        self.is_valid()
        for name, default in (("period", DEFAULT_PERIOD), ("system", "")):
            if name in self.errors:
                self.query[name] = default  # the select shows what is used; the error stays under it
        c = self.cleaned_data
        return c.get("period") or DEFAULT_PERIOD, c.get("system") or ""


@reviewers_only
def quality(request: HttpRequest) -> HttpResponse:
    form = QualityForm(request.GET)
    period, system = form.asked()
    label, span = PERIODS[period]
    until = timezone.now()
    return render(request, "reviewqueue/quality.html", {
        "form": form, "period_label": label, "system": system,
        "q": stats.quality(until - span, until, system), "cap": stats.PAIRS_CAP,
    })
