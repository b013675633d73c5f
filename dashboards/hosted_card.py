"""The system page's Hosted models card: the models that score the system's decisions on the
workers, each with its kill switch, and the form to register one (the page is ``dashboards.views``;
where the forms post: ``dashboards.hosted_views``; the rules: ``oversight.hosted``)."""

from __future__ import annotations

from typing import Any

from django import forms

from oversight.models import AISystem, HostedModel, KillSwitch

ANCHOR = "hosted-models"


class HostedModelForm(forms.Form):
    """Register a model (``oversight.hosted.HostedModelIn`` checks the same rules, and that it works)."""

    name = forms.CharField(label="Name (as votes, kill switches and breakers call it)", max_length=200)
    kind = forms.ChoiceField(label="Kind", choices=HostedModel.Kind.choices)
    target = forms.CharField(label="Dotted path (package.module:function) or URL", max_length=500)
    protocol = forms.ChoiceField(label="Protocol (HTTP models)", choices=HostedModel.Protocol.choices,
                                 initial="json")
    role = forms.ChoiceField(label="Role", choices=HostedModel.Role.choices, initial="voter")
    weight = forms.FloatField(label="Weight", initial=1.0, min_value=0.0, max_value=1000.0,
                              widget=forms.NumberInput(attrs={"step": "0.1"}))
    timeout_ms = forms.IntegerField(label="Timeout (ms)", initial=500, min_value=1, max_value=30_000)


class ModelActionForm(forms.Form):
    name = forms.CharField(max_length=200)
    op = forms.ChoiceField(choices=[("enable", "enable"), ("disable", "disable"), ("remove", "remove")])


def card(system: AISystem, bound: dict[str, forms.Form]) -> dict[str, Any]:
    """The models, each with its kill switch's reason when one is engaged (``killed``)."""
    killed = dict(KillSwitch.objects.filter(scope=KillSwitch.Scope.MODEL, system=system, engaged=True)
                  .values_list("model", "reason"))
    models = list(HostedModel.objects.filter(system=system))
    for m in models:
        m.killed = killed.get(m.name)  # type: ignore[attr-defined]
    return {"models": models, "form": bound.get("hosted_form") or HostedModelForm(prefix="hosted")}
