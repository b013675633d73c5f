"""The system page's Hosted models card: the models that score the system's decisions on the
workers, and (admins) registering, switching off and on, and removing them. The rules are
``oversight.hosted``; the form posts to ``system_models``."""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_POST

from oversight import access, hosted
from oversight.access import role_required
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


@role_required(access.ADMIN)
@require_POST
def system_models(request: HttpRequest, slug: str) -> HttpResponse:
    """An admin registers a model, or switches one off or on, or removes it."""
    from dashboards.views import _card_form

    system = get_object_or_404(AISystem, slug=slug)
    if "op" in request.POST:
        action = ModelActionForm(request.POST)

        def act_on(data: dict[str, Any]) -> str:
            if data["op"] == "remove":
                hosted.remove(request.user, system.slug, data["name"], "removed on the system page")
                return f"model {data['name']} removed"
            on = data["op"] == "enable"
            hosted.update(request.user, system.slug, data["name"], {"enabled": on},
                          f"{'switched on' if on else 'switched off'} on the system page")
            return f"model {data['name']} {'answers again' if on else 'is switched off'}"

        return _card_form(request, system, action, ANCHOR, act_on, "hosted_action_form")

    def act(data: dict[str, Any]) -> str:
        m = hosted.register(request.user, system.slug, data)
        return f"model {m.name} registered: it scores the next decision sent without a prediction"

    return _card_form(request, system, HostedModelForm(request.POST, prefix="hosted"), ANCHOR, act, "hosted_form")
