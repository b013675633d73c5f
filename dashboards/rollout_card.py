"""The system page's Rollouts and bandit card: what it shows and its forms (the page is
``dashboards.views``; where the forms post: ``dashboards.rollout_views``).

The card lists the system's newest rollouts (the running one with what the rules say now), draws the
candidate's share over time as a step chart, and charts each bandit arm's share of the traffic and
posterior mean with its 90 % interval from the ``bandit.*`` series (``dashboards.rollout_job``).
Admins start a rollout, or advance, roll back or cancel the running one, with a reason; the domain
rules are ``oversight.rollout_actions``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.utils import timezone

from dashboards import rollout_job
from dashboards.models import MetricPoint
from oversight import bandit_arms, rollout_actions, rollouts
from oversight.formfields import sentence
from oversight.models import AISystem, HostedModel

ANCHOR = "rollouts"
SERIES_HOURS = 6  # how far back the bandit charts go
SHOWN = 5  # rollouts listed


class RolloutStartForm(forms.Form):
    """An admin starts a rollout (``oversight.rollout_actions.start`` checks the same rules)."""

    candidate = forms.ChoiceField(label="Candidate (the new version)")
    baseline = forms.ChoiceField(label="Baseline (the version it replaces)")
    steps = forms.CharField(label="Steps (percent of traffic)", initial="1, 5, 20, 50, 100", max_length=200)
    step_minutes = forms.IntegerField(label="Minutes per step (at least)", initial=60, min_value=1,
                                      max_value=rollouts.MAX_STEP_SECONDS // 60)
    metric = forms.ChoiceField(label="Judge on", choices=[
        ("auto", "whatever outcomes arrive (labels: accuracy, rewards: mean reward)"),
        ("reward", "mean reward"), ("accuracy", "accuracy")])
    max_drop = forms.FloatField(label="Roll back when it falls this far below the baseline (0–1)", initial=0.05,
                                min_value=0.0, max_value=1.0, widget=forms.NumberInput(attrs={"step": "0.01"}))
    min_outcomes = forms.IntegerField(label="Outcomes per step before judging", initial=30, min_value=1,
                                      max_value=1_000_000)
    reason = forms.CharField(label="Reason", max_length=rollout_actions.REASON_MAX,
                             error_messages={"required": "Say why: a reason is required to start a rollout."})

    def __init__(self, *args: Any, models: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [(m, m) for m in models or []]
        for name in ("candidate", "baseline"):
            field = self.fields[name]
            assert isinstance(field, forms.ChoiceField)
            field.choices = choices
        if len(choices) > 1:
            self.fields["candidate"].initial = choices[-1][0]

    def clean_steps(self) -> list[int]:
        text = self.cleaned_data["steps"]
        try:
            parts = [int(p) for p in text.replace(",", " ").split()]
        except ValueError as exc:
            raise forms.ValidationError("Write whole percents separated by commas, such as 1, 5, 20, 50, 100.") from exc
        try:
            return list(rollouts.check_steps(parts))
        except ValueError as exc:
            raise forms.ValidationError(sentence(str(exc.args[0]))) from exc


class RolloutActForm(forms.Form):
    """An admin advances, rolls back or cancels the running rollout, with a reason."""

    op = forms.ChoiceField(choices=[("advance", "advance"), ("rollback", "roll back"), ("cancel", "cancel")],
                           widget=forms.HiddenInput)
    rollout_id = forms.CharField(max_length=40, widget=forms.HiddenInput)  # a refusal names "rollout": the form
    reason = forms.CharField(label="Reason", max_length=rollout_actions.REASON_MAX,
                             error_messages={"required": "Say why: a reason is required to change a rollout by hand."})


def enabled_models(system: AISystem) -> list[str]:
    return list(HostedModel.objects.filter(system=system, enabled=True).order_by("name")
                .values_list("name", flat=True))


def bandit_series(system: AISystem, now: datetime) -> dict[str, dict[str, list[list[Any]]]]:
    """Per arm, its stored ``bandit.*`` series of the last hours: {model: {share|mean|low|high: [[t, v]]}}."""
    out: dict[str, dict[str, list[list[Any]]]] = defaultdict(lambda: {k: [] for k in rollout_job.KINDS})
    points = (MetricPoint.objects.filter(system=system, name__startswith=rollout_job.PREFIX,
                                         t__gte=now - timedelta(hours=SERIES_HOURS))
              .order_by("t").values_list("name", "t", "value"))
    for name, t, value in points:
        model, _, kind = name.removeprefix(rollout_job.PREFIX).rpartition(".")
        if kind in rollout_job.KINDS:
            out[model][kind].append([t.isoformat(), value])
    return dict(out)


def state(system: AISystem) -> dict[str, Any]:
    """What the card shows and its script draws (JSON-ready: the page embeds it, ``rollouts.json``
    returns it anew after a push)."""
    now = timezone.now()
    shown = [rollout_actions.public(r, system.slug, now) for r in rollout_actions.of_system(system, SHOWN)]
    return {
        "now": now.isoformat(),
        "rollouts": shown,
        "running": next((r for r in shown if r["state"] == "running"), None),
        "bandit": bandit_arms.describe(system),
        "series": bandit_series(system, now),
    }


def card(system: AISystem, bound: dict[str, forms.Form]) -> dict[str, Any]:
    """The card's context: its state, and its forms (as typed, after a refusal)."""
    models = enabled_models(system)
    return {
        "state": state(system),
        "models": models,
        "start_form": bound.get("rollout_start_form") or RolloutStartForm(prefix="rollout", models=models),
        "act_form": bound.get("rollout_act_form") or RolloutActForm(prefix="rollact"),
    }
