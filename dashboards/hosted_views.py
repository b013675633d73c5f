"""Where the Hosted models card's forms post: admins register a model, switch one off or on, or
remove it (the card itself: ``dashboards.hosted_card``; the rules: ``oversight.hosted``)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_POST

from dashboards import views
from dashboards.hosted_card import ANCHOR, HostedModelForm, ModelActionForm
from oversight import access, hosted
from oversight.access import role_required
from oversight.models import AISystem


@role_required(access.ADMIN)
@require_POST
def system_models(request: HttpRequest, slug: str) -> HttpResponse:
    """An admin registers a model, or switches one off or on, or removes it."""
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

        return views._card_form(request, system, action, ANCHOR, act_on, "hosted_action_form")

    def act(data: dict[str, Any]) -> str:
        m = hosted.register(request.user, system.slug, data)
        return f"model {m.name} registered: it scores the next decision sent without a prediction"

    return views._card_form(request, system, HostedModelForm(request.POST, prefix="hosted"), ANCHOR, act, "hosted_form")
